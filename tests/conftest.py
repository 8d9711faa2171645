"""Suite-wide settings: asyncio debug mode on for every loop the tests create."""

from __future__ import annotations

import os

# Read by asyncio whenever a loop is created: slow callbacks are logged and
# non-thread-safe calls from foreign threads raise.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")

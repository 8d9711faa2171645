"""The result cache: task results stored under a key of name, code and arguments.

``cache=True`` on a task (or ``WorkflowEngine.create(cache=True)``, or
``resume="campaign-dir"``) stores each successful result in the campaign
directory's SQLite store and reuses it for an identical later call, in this
session or a later one. ``asyncflow cache ls|stats|clear DIR`` manages a store.
"""

from ._key import Uncacheable, code_digest, file_digest, task_key
from ._store import FILE_NAME, CacheEntry, Hit, ResultCache, store_path

__all__ = [
    "FILE_NAME",
    "CacheEntry",
    "Hit",
    "ResultCache",
    "Uncacheable",
    "code_digest",
    "file_digest",
    "store_path",
    "task_key",
]

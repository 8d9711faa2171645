"""``asyncflow demo``: the campaign example with telemetry, then the dashboard.

The campaign is ``examples/01-workflow_grouping.py`` itself, not a copy: an
installed package carries it as ``asyncflow/_examples/workflow_grouping.py``
(the wheel build puts it there); a source checkout loads it from
``examples/``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["campaign_module", "campaign_path"]

_PACKAGED = Path(__file__).resolve().parent / "_examples" / "workflow_grouping.py"
_CHECKOUT = Path(__file__).resolve().parent.parent / "examples" / "01-workflow_grouping.py"


def campaign_path() -> Path:
    """Where the campaign example is, installed or in a checkout.

    Raises:
        FileNotFoundError: neither copy exists (a broken installation).
    """
    for path in (_PACKAGED, _CHECKOUT):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the campaign example is missing (looked for {_PACKAGED} and {_CHECKOUT}); "
        "reinstall asyncflow-otel"
    )


def campaign_module() -> ModuleType:
    """The campaign example, imported as a module (its ``main(argv)`` runs it)."""
    path = campaign_path()
    spec = importlib.util.spec_from_file_location("asyncflow_campaign_example", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a file we just found
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module

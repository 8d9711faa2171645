"""Build hook: compiles the package's two C extensions.

- ``asyncflow/dashboard/_scan.c``: the dashboard's checkpoint scanner, which
  reads a finished checkpoint file several times faster.
- ``asyncflow/engine/_cgraph.c``: the engine's dependency graph; in Python
  it was about a fifth of a no-op task's time in the engine, compiled
  about a tenth.

Without them (no C compiler, no Python headers) the package builds and works
the same, in Python. ``ASYNCFLOW_NO_EXTENSION=1`` skips them on purpose. An
editable install (``pip install -e .``) builds them next to their sources; a
wheel carries them. Each module carries its source's hash: one built from
another source is not used.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# (source, the macro that carries its hash, what runs in Python without it)
EXTENSIONS = (
    (
        Path("asyncflow") / "dashboard" / "_scan.c",
        "SCAN_SOURCE",
        "the checkpoint scanner was not compiled; the dashboard reads checkpoint files "
        "with Python instead (slower)",
    ),
    (
        Path("asyncflow") / "engine" / "_cgraph.c",
        "GRAPH_SOURCE",
        "the dependency graph was not compiled; the engine uses its Python graph instead (slower)",
    ),
)
SOURCE = EXTENSIONS[0][0]


class ScannerBuildHook(BuildHookInterface):
    """Compiles the C extensions into the wheel, or leaves the wheel pure Python."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        for source, macro, fallback in EXTENSIONS:
            self._build(Path(self.root), source, macro, fallback, version, build_data)

    def _build(
        self,
        root: Path,
        source: Path,
        macro: str,
        fallback: str,
        version: str,
        build_data: dict[str, Any],
    ) -> None:
        name = source.stem + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        in_place = root / source.parent / name
        if version == "editable":
            # A module left from an earlier build would be used as it is.
            in_place.unlink(missing_ok=True)
        if os.environ.get("ASYNCFLOW_NO_EXTENSION") == "1" or not (root / source).exists():
            return
        built = Path(tempfile.mkdtemp(prefix="asyncflow-build-")) / name
        digest = hashlib.sha256((root / source).read_bytes()).hexdigest()
        compiler = shlex.split(os.environ.get("CC") or "cc")
        command = [
            *compiler,
            "-O2",
            "-shared",
            "-fPIC",
            f'-D{macro}="{digest}"',
            f"-I{sysconfig.get_paths()['include']}",
            str(root / source),
            "-o",
            str(built),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(f"asyncflow: {fallback}. {' '.join(command)}: {detail}")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version == "editable":
            shutil.move(built, in_place)
        else:
            build_data["force_include"][str(built)] = str(source.parent / name)

"""Build hook: compiles the dashboard's checkpoint scanner (``asyncflow/dashboard/_scan.c``).

The scanner makes the dashboard read a finished checkpoint file several
times faster; without it (no C compiler, no Python headers) the package
builds and works the same, reading with Python. ``ASYNCFLOW_NO_EXTENSION=1``
skips it on purpose. An editable install (``pip install -e .``) builds it
next to its source; a wheel carries it.
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

SOURCE = Path("asyncflow") / "dashboard" / "_scan.c"


class ScannerBuildHook(BuildHookInterface):
    """Compiles ``_scan.c`` into the wheel, or leaves the wheel pure Python."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        name = "_scan" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        in_place = root / SOURCE.parent / name
        if version == "editable":
            # A module left from an earlier build would be used as it is.
            in_place.unlink(missing_ok=True)
        if os.environ.get("ASYNCFLOW_NO_EXTENSION") == "1":
            return
        built = Path(tempfile.mkdtemp(prefix="asyncflow-build-")) / name
        # The module carries its source's hash: one built from another source is not used.
        digest = hashlib.sha256((root / SOURCE).read_bytes()).hexdigest()
        compiler = shlex.split(os.environ.get("CC") or "cc")
        command = [
            *compiler,
            "-O2",
            "-shared",
            "-fPIC",
            f'-DSCAN_SOURCE="{digest}"',
            f"-I{sysconfig.get_paths()['include']}",
            str(root / SOURCE),
            "-o",
            str(built),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(
                "asyncflow: the checkpoint scanner was not compiled; the dashboard reads "
                f"checkpoint files with Python instead (slower). {' '.join(command)}: {detail}"
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version == "editable":
            shutil.move(built, in_place)
        else:
            build_data["force_include"][str(built)] = str(SOURCE.parent / name)

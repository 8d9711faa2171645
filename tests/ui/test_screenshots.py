"""``scripts/screenshots.py`` makes the README's and the docs' pictures from the real app."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_readme_shows_pictures_the_script_makes() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import screenshots
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]*\]\(docs/img/([^)]+)\)", readme)
    assert shown == ["dashboard-campaign.png", "dashboard-workflow.png"]
    docs = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))
    for name in screenshots.SHOTS:
        assert (ROOT / "docs" / "img" / name).read_bytes().startswith(PNG)
        assert f"img/{name}" in docs or name in shown, name


def test_the_script_takes_every_view(browser: Any, tmp_path: Path) -> None:
    # ``browser``: the same needs (Chromium, its driver, selenium) as the script.
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "screenshots.py"),
            "--img",
            str(tmp_path),
            "--duration",
            "0.05",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in tmp_path.glob("*.png"))
    assert made == sorted(
        [
            "dashboard-campaign.png",
            "dashboard-workflow.png",
            "dashboard-slots.png",
            "dashboard-utilisation.png",
            "dashboard-summary.png",
        ]
    )
    for path in tmp_path.glob("*.png"):
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 20_000

"""The user documentation builds with ``mkdocs build --strict``.

Strict mode with the ``validation`` settings of ``mkdocs.yml`` turns every
broken link, missing anchor and page left out of the nav into a failure.
Without MkDocs installed the build is skipped locally, never in CI.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def needs_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("MkDocs is not installed: it belongs in the 'dev' extra")
    pytest.skip("MkDocs is not installed (pip install -e '.[dev]')")


def test_docs_build_strict(tmp_path: Path) -> None:
    needs_mkdocs()
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    for page in DOCS.glob("*.md"):  # strict mode already failed on a page left out of the nav
        html = site / "index.html" if page.stem == "index" else site / page.stem / "index.html"
        assert html.is_file(), f"{page.name} was not built"


def test_every_example_is_on_the_examples_page() -> None:
    page = (DOCS / "examples.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "examples").glob("[0-9][0-9]-*.py"))
    assert scripts, "no examples found"
    missing = [s for s in scripts if f"`{s}`" not in page]
    assert not missing, f"docs/examples.md does not list {missing}"
    sections = re.findall(r"^## (\d\d): ", page, flags=re.MULTILINE)
    assert sections == [s[:2] for s in scripts], "one section per example, in order"

"""The README's quick starts are the examples' code, which the test suite runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker}:[^>]*-->\s*```python\n(.*?)```", README, re.S)
    assert match is not None, f"README has no code block after the {marker} marker"
    return match.group(1)


@pytest.mark.parametrize(
    ("marker", "example"),
    [
        ("quickstart-bottle", "quickstart_bottle.py"),
        ("quickstart-wsgi", "quickstart_wsgi.py"),
    ],
)
def test_quick_start_is_the_example_code(marker: str, example: str) -> None:
    block = _block_after(marker)
    source = (ROOT / "examples" / example).read_text(encoding="utf-8")
    assert len(block.splitlines()) >= 10
    assert block in source


def test_readme_has_exactly_the_two_setup_commands() -> None:
    section = README.split("## Set-up commands", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", section, re.M)
    assert commands == ["make demo", "make test"]

"""Every measured table in README.md is the markdown of the JSON its benchmark wrote."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_tables  # noqa: E402


def test_readme_tables_match_their_json() -> None:
    text = (ROOT / "README.md").read_text()
    names = re.findall(r"<!-- table:(\w+) -->", text)
    assert set(names) == set(readme_tables.TABLES), names  # every generated table is in the README, once
    assert len(names) == len(set(names))
    new, changed = readme_tables.update(text)
    assert changed == [], f"run python benchmarks/readme_tables.py; stale: {changed}"
    assert new == text


def test_an_edited_number_is_caught() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- table:demo_gain -->")
    gain = re.compile(r"\*\*[+-][\d.]+\*\*").search(text, start)  # the first gain in the demo table
    assert gain is not None
    edited = text[:gain.start()] + "**+99.9**" + text[gain.end():]
    _, changed = readme_tables.update(edited)
    assert changed == ["demo_gain"]


def test_unknown_table_is_an_error() -> None:
    with pytest.raises(SystemExit, match="unknown table 'nope'"):
        readme_tables.update("<!-- table:nope -->\nx\n<!-- /table:nope -->")

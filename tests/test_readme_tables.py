"""Every measured table in README.md is the markdown of the JSON its benchmark wrote."""

from __future__ import annotations

import json
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


def test_the_zoo_table_shows_every_published_entry_with_its_knn_gain() -> None:
    import zoo_table

    weights = json.loads(zoo_table.ZOO_WEIGHTS.read_text())
    table = zoo_table.markdown(weights)
    rows = table.splitlines()[2:]
    assert len(rows) == sum(len(e["entries"]) for e in weights.values())
    for builder, entry in weights.items():
        for name, w in entry["entries"].items():
            meta = w["meta"]
            knn = next(m for m in meta["metrics"] if (m["task"], m["metric"], m["dataset"], m["split"])
                       == ("knn", "top1", meta["dataset"]["id"], "test"))
            row = next(r for r in rows if r.startswith(f"| `{builder}`, `{name}` |"))
            assert f"**{knn['value']:.1f}%** ({knn['random_init']:.1f}%, **{knn['value'] - knn['random_init']:+.1f}**)" in row

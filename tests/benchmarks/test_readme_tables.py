"""Every measured table in README.md and docs/benchmarks.md is the markdown of the JSON its benchmark wrote."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_tables  # noqa: E402


def test_readme_tables_match_their_json() -> None:
    names = []
    for doc in readme_tables.DOCS:
        text = doc.read_text()
        names += re.findall(r"<!-- table:(\w+) -->", text)
        new, changed = readme_tables.update(text)
        assert changed == [], f"{doc.name}: run python benchmarks/readme_tables.py; stale: {changed}"
        assert new == text
    assert sorted(names) == sorted(readme_tables.TABLES), names  # every generated table is on one page, once
    head = (ROOT / "README.md").read_text()[:3000]  # the first screen: what, how good (generated), how to install
    assert "<!-- table:headline -->" in head and "pip install -e ." in head and "get_model(" in head


def test_an_edited_number_is_caught() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
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


def test_the_zoo_table_states_the_runs_own_cost_when_the_entry_records_it() -> None:
    import zoo_table

    meta = {"recipe": {"batch_size": 128, "time_budget": 440.0, "max_steps": None, "clock": "wall"}, "num_views": 8,
            "training": {"steps": 17550, "wall_clock_s": 407.5, "epochs": 45.0,
                         "hardware": "1 process(es) on NVIDIA H200, torch 2.11.0+cu130"}}
    assert zoo_table._training(meta) == "408 wall-seconds on NVIDIA H200, 17,550 steps × 128 images × 8 views (45 epochs)"
    meta["recipe"]["clock"] = "process"  # the recipe's training clock counted CPU-seconds
    meta["training"].update(hardware="1 process(es) on AMD EPYC [AVX2] (2 threads per process), torch 2.14.1", epochs=9.9282)
    assert zoo_table._training(meta) == ("408 CPU-seconds on AMD EPYC [AVX2], 17,550 steps × 128 images × 8 views "
                                         "(9.93 epochs)")
    del meta["training"]  # an entry published before entries kept it: the recipe's budget and step cap
    meta["recipe"].update(max_steps=1936, time_budget=3600.0, clock="process")
    assert zoo_table._training(meta) == "60 CPU-minutes, 1,936 steps × 128 images × 8 views"


def test_the_recipe_race_table_reads_its_rows_and_curves() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "studies"))
    import recipe_race

    result = {"curves": {recipe_race.RECOMMENDED: [[0.0, 30.0], [60.0, 40.0]],
                         recipe_race.CLASSIC: [[0.0, 31.0], [60.0, 35.0], [120.0, 45.0]]},
              "rows": [{"classic_seconds": 60.0, "classic_knn": 35.0, "recommended_seconds_to_reach": 30.0,
                        "ratio": 0.5},
                       {"classic_seconds": 120.0, "classic_knn": 45.0, "recommended_seconds_to_reach": None,
                        "ratio": None}]}
    rows = recipe_race.markdown(result).splitlines()[2:]
    assert rows == ["| 0 s (random init) | 31.0% | 30.0% | — | — |",
                    "| 60 s | 35.0% | 40.0% | 30 s | 0.50 |",
                    "| 120 s | 45.0% | — | not reached | — |"]


def test_the_headline_and_the_recipe_race_claim_say_what_their_json_holds() -> None:
    import zoo_table

    sys.path.insert(0, str(ROOT / "benchmarks" / "studies"))
    import recipe_race

    weights = json.loads(zoo_table.ZOO_WEIGHTS.read_text())
    flagship = weights[zoo_table.FLAGSHIP]["entries"][weights[zoo_table.FLAGSHIP]["default"]]["meta"]
    knn = next(m for m in flagship["metrics"] if (m["task"], m["metric"], m["split"]) == ("knn", "top1", "test")
               and m["dataset"] == flagship["dataset"]["id"])
    line = zoo_table.headline(weights)
    assert f"kNN top-1 **{knn['value']:.1f}%**" in line and f"against {knn['random_init']:.1f}%" in line
    assert "NVIDIA H200" in line and knn["date"] in line
    result = {"curves": {recipe_race.RECOMMENDED: [[0.0, 30.0], [60.0, 40.0]],
                         recipe_race.CLASSIC: [[0.0, 30.0], [60.0, 35.0]]},
              "rows": [{"classic_seconds": 60.0, "classic_knn": 35.0, "recommended_seconds_to_reach": 30.0,
                        "ratio": 0.5}], "ratios": [0.5], "median_ratio": 0.5, "classic_points_below_random_init": 0}
    said = recipe_race.claim(result)
    assert "stood at 35.0%, none of them below" in said and "40.0% at 60 s" in said and "Median ratio 0.50" in said
    result["rows"][0].update(classic_knn=20.0, ratio=0.0)
    result.update(ratios=[0.0], median_ratio=0.0, classic_points_below_random_init=1)
    assert "all of them below its own random-init features (30.0%)" in recipe_race.claim(result)
    assert "not that the recommended recipe is infinitely faster" in recipe_race.claim(result)

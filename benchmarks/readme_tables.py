"""Regenerate the measured tables of README.md and docs/benchmarks.md from the JSON files in benchmarks/results/
(or check them).

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in one of the two pages and is the
``markdown()`` (or the named function) of the benchmark that wrote the JSON, so a number there is always a number
a run measured. ``--check`` exits 1 when a table differs from its JSON (the test suite runs it).

    python benchmarks/readme_tables.py            # rewrite the tables in README.md and docs/benchmarks.md
    python benchmarks/readme_tables.py --check
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS, ROOT, setup_paths

DOCS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md")  # the pages whose tables are generated
# table name: (benchmark module in benchmarks/ or benchmarks/studies/, its JSON in benchmarks/results/ or a path[,
# the module's function that renders it; default markdown])
TABLES: dict[str, tuple[str, str | Path] | tuple[str, str | Path, str]] = {
    "headline": ("zoo_table", ROOT / "mvssl_hub" / "zoo_weights.json", "headline"),
    "demo_gain": ("demo_gain", "demo_gain.json"),
    "cpu_isa": ("cpu_isa", "cpu_isa.json"),
    "beta_study": ("beta_study", "beta_study.json"),
    "beta_study_vicreg": ("beta_study", "beta_study_vicreg.json"),
    "views_fraction": ("views_fraction", "views_fraction.json"),
    "pareto": ("pareto", "pareto.json"),
    "network_race_amx": ("network_race", "network_race_amx.json"),
    "network_race_avx2": ("network_race", "network_race_avx2.json"),
    "zoo": ("zoo_table", ROOT / "mvssl_hub" / "zoo_weights.json"),
    "recipe_race_h200": ("recipe_race", "recipe_race_h200.json"),
    "recipe_race_h200_claim": ("recipe_race", "recipe_race_h200.json", "claim"),
    "learn_check": ("learn_check", "learn_check.json"),
}


def render(name: str) -> str:
    module_name, _, *function = TABLES[name]
    setup_paths()
    module = importlib.import_module(module_name)
    return getattr(module, function[0] if function else "markdown")(json.loads(source(name).read_text()))


def source(name: str) -> Path:
    """The JSON file a table is made from."""
    return RESULTS / TABLES[name][1]


def update(text: str) -> tuple[str, list[str]]:
    """README text with every marked table regenerated; and the names of the tables that changed."""
    changed = []

    def fill(match: re.Match) -> str:
        name = match[1]
        if name not in TABLES:
            raise SystemExit(f"README.md: unknown table {name!r} (known: {', '.join(TABLES)})")
        if not source(name).exists():
            changed.append(name)  # no measurement yet: the table cannot be right
            return match[0]
        new = f"<!-- table:{name} -->\n{render(name)}\n<!-- /table:{name} -->"
        if new != match[0]:
            changed.append(name)
        return new

    return re.sub(r"<!-- table:(\w+) -->\n.*?<!-- /table:\1 -->", fill, text, flags=re.S), changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--doc", type=Path, action="append", help=f"a page to update (default: {', '.join(map(str, DOCS))})")
    args = ap.parse_args()
    stale = []
    for doc in args.doc or DOCS:
        new, changed = update(doc.read_text())
        if args.check:
            stale += [f"{doc.name}: {name}" for name in changed]
            continue
        doc.write_text(new)
        print(f"{doc}: updated {', '.join(changed) or 'nothing'}")
    if args.check:
        if stale:
            sys.exit(f"tables differ from their JSON: {', '.join(stale)} (run python benchmarks/readme_tables.py)")
        print("every generated table matches its JSON")


if __name__ == "__main__":
    main()

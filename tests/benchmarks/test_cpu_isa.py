"""benchmarks/cpu_isa.py: levels follow the CPU flags, and a capped worker really runs at the capped level."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvssl_hub.device import cpu_flags

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import cpu_isa  # noqa: E402

from harness import check_envelope  # noqa: E402


def test_levels_stop_at_the_first_missing_instruction_set() -> None:
    avx2 = frozenset({"avx2", "fma"})
    avx512 = avx2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
    assert cpu_isa.available_levels(frozenset()) == []
    assert cpu_isa.available_levels(avx2) == ["avx2"]
    assert cpu_isa.available_levels(avx512) == ["avx2", "avx512"]
    assert cpu_isa.available_levels(avx512 | {"avx512_bf16"}) == ["avx2", "avx512", "avx512_bf16"]
    # AMX flags without AVX512-BF16 do not skip a level
    assert cpu_isa.available_levels(avx512 | {"amx_tile", "amx_bf16"}) == ["avx2", "avx512"]
    assert cpu_isa.level_env("avx2") == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.mark.skipif("avx2" not in cpu_isa.available_levels(cpu_flags()), reason="needs an x86 CPU with AVX2")
def test_smoke_run_at_avx2_is_capped_and_writes_tables(tmp_path: Path) -> None:
    out = tmp_path / "cpu_isa.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_isa.py"), "--smoke", "--levels", "avx2",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    check_envelope(result, "cpu_isa")
    assert result["smoke"] and list(result["levels"]) == ["avx2"]
    level = result["levels"]["avx2"]
    assert level["aten_capability"] == "AVX2"  # the cap took effect in the worker
    assert level["bf16_default"] is False  # no native bf16 at AVX2: the recipe's default is fp32
    assert list(level["train"]) == ["width 8", "width 16"] and "compile" not in level  # smoke: tiny, no compile
    for width in ("width 8", "width 16"):
        steps = level["train"][width]["steps"]
        assert {"default M=2", "default M=4", "1 thread", "channels_last off", "bf16 on"} <= steps.keys()
        assert all(s["images_per_s"] > 0 and s["views_per_s"] == pytest.approx(s["images_per_s"] * s["num_views"])
                   for s in steps.values())
    assert level["pipeline"]["ratio_data_over_premade"] > 0
    table = cpu_isa.markdown(result)
    assert "| avx2 (fp32) |" in table and "| avx2 | width 8 |" in table and "| avx2 | width 16 |" in table
    assert table in run.stdout

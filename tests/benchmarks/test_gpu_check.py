"""benchmarks/gpu_check.sh --dry-run: the GPU check's code path, tiny, on the CPU (< 60 s on 2 cores); its two
benchmarks run their --smoke and write under the harness's envelope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from harness import check_envelope  # noqa: E402


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done (dry run, CPU)" in proc.stdout
    sync_result = json.loads((tmp_path / "gpu_sync_count.json").read_text())
    check_envelope(sync_result, "gpu_sync_count")
    assert sync_result["settings"]["smoke"] and sync_result["device"] == "cpu"
    syncs = sync_result["variants"]
    assert syncs["new"]["max"] == 1 and syncs["new_fused"]["max"] == 0 and syncs["legacy"]["max"] >= 2
    speed = json.loads((tmp_path / "gpu_speedrun.json").read_text())
    check_envelope(speed, "gpu_speedrun")
    assert len(speed["points"]) >= 2 and speed["points"][-1]["steps"] > 0 and speed["views_per_s"] > 0
    assert all(0 <= p["knn_top1"] <= 100 for p in speed["points"]) and speed["settings"]["smoke"]
    recipe = json.loads((tmp_path / "gpu_recipe.json").read_text())
    assert recipe["step"] == 1 and recipe["views_per_s_last_window"] > 0 and recipe["peak_memory_mb"] > 0

"""The paper's wall-clock claim, small: at the same training time, do more views per image help?

Trains the demo network (ResNet-18 width 16, small-image stem, Barlow Twins) on the embedded
5,000-image CIFAR-10 cut for the same wall-clock budget in several settings, then reports kNN top-1
on the 1,000 held-out images beside the same network at random initialisation:

- ``m2_d256``: 2 views, 256-d projector, beta = recommended_beta (0.02)
- ``m4_d256``: 4 views, 256-d projector, beta = recommended_beta (0.01) — the recommended recipe
- ``m2_d8192_classic``: 2 views, 8192-d projector, the classic beta 0.0051

Agrawal et al. (NeurIPS 2024) report ~2x faster convergence with 4-8 views (ResNet-50, CIFAR-10 /
STL-10, 100 epochs, GPUs); this is a minutes-long CPU run of a narrow network, so it shows the
direction on this machine, not the paper's numbers. Settings run one after the other in one process.

    python benchmarks/views_at_equal_time.py --seconds 150
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes import load_recipe  # noqa: E402

from harness import EMBEDDED_DATA, default_out, write_result  # noqa: E402

pretrain = load_recipe("pretrain")

SETTINGS = {
    "m2_d256": ["--num_views", "2", "--proj_dim", "256", "--beta", "auto"],
    "m4_d256": ["--num_views", "4", "--proj_dim", "256", "--beta", "auto"],
    "m2_d8192_classic": ["--num_views", "2", "--proj_dim", "8192", "--beta", "0.0051"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150.0, help="training budget per setting")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default=None, help="default: benchmarks/results/views_at_equal_time.json")
    parser.add_argument("--smoke", action="store_true", help="seconds: width 4, 2 steps each, temporary folder")
    args = parser.parse_args()
    out = default_out("views_at_equal_time", args.smoke, args.out)
    smoke = ["--width", "4", "--limit", "64", "--eval_limit", "64", "--batch_size", "16", "--knn_k", "10",
             "--max_steps", "2", "--knn_every_seconds", "0", "--proj_dim", "16", "--monitors", "false",
             ] if args.smoke else []

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings:
            summary = pretrain.main([
                "--config", str(ROOT / "recipes" / "configs" / "demo.yaml"),
                "--data", str(EMBEDDED_DATA),
                "--time_budget", str(args.seconds), "--output_dir", str(Path(tmp) / name),
                "--progress", "false", "--run_state_every", "0", "--export", "false", *SETTINGS[name], *smoke,
            ])
            state = summary["state"]
            rows.append({
                "setting": name, "num_views": summary["config"]["num_views"], "proj_dim": summary["config"]["proj_dim"],
                "beta": summary["config"]["resolved_beta"], "steps": state["global_step"],
                "images_seen": state["images_seen"], "images_per_s": round(summary["images_per_s"], 1),
                "knn_top1": state["knn"], "knn_top1_random_init": state["knn_random_init"],
                "gain": round(state["knn"] - state["knn_random_init"], 2),
            })
    print(f"\nkNN top-1 after {args.seconds:g} s of training each (ResNet-18 width 16, 5,000 CIFAR-10 images, "
          f"1,000 held out)")
    print(f"{'setting':<18} {'views':>5} {'d':>5} {'beta':>7} {'steps':>6} {'img/s':>7} {'kNN %':>7} {'random %':>9} {'gain':>6}")
    for r in rows:
        print(f"{r['setting']:<18} {r['num_views']:>5} {r['proj_dim']:>5} {r['beta']:>7.4f} {r['steps']:>6} "
              f"{r['images_per_s']:>7.1f} {r['knn_top1']:>7.2f} {r['knn_top1_random_init']:>9.2f} {r['gain']:>+6.2f}")
    write_result(out, "views_at_equal_time", {"seconds_per_setting": args.seconds,
                                              "machine": platform.processor() or platform.machine(), "results": rows})


if __name__ == "__main__":
    main()

"""Does the training step keep the network busy? The recipe's step against the same step on pre-made views and
against the backbone alone.

For each number of views M, three variants are timed, interleaved (A, B, C, C, B, A, ...) in one process so that
machine noise hits them alike:

- ``recipe``: ``recipes/pretrain.py``'s own ``train_step`` (the batch of step s, M views made on the fly,
  backbone + projector forward, loss, backward, the guarded Adam update, the schedule) on a run built by the
  recipe's own ``setup`` from the same command line a user types;
- ``premade``: the same ``train_step`` with the batch and its views made once before timing (what the data
  path costs is the difference);
- ``backbone``: the backbone alone, forward + backward of its features on the same pre-made views, under the
  same autocast (no projector, loss or optimiser): the floor a training step can approach.

Reported per M: median seconds per step of each variant, views/s, and two throughput ratios:
``ratio_data_over_premade`` (recipe views/s over premade views/s = premade s / recipe s) and
``ratio_recipe_over_backbone`` (recipe views/s over backbone views/s: 1.0 would mean the step costs no more
than the network's own forward+backward).

    python benchmarks/pipeline.py                                  # ResNet-18 w64, batch 256, M = 2, 4, 8
    python benchmarks/pipeline.py --views 8 --out benchmarks/results/pipeline_race_w32.json \\
        -- --config recipes/configs/zoo/cifar10_race.yaml --width 32 --data ../shared/data/cifar10
    python benchmarks/pipeline.py --smoke                          # seconds: M=2, width 4, batch 16
    python benchmarks/pipeline.py --device cuda                    # on a GPU

Everything after ``--`` is passed to the recipe (its flags and ``--config`` presets); the defaults before it
are ResNet-18 full width, small-image stem, 32 px, d = 256 (Barlow Twins, recommended beta), batch 256 images,
the embedded 5k cut, precision and memory format as the recipe chooses them on this machine, 2 threads; with a
``--config`` preset, the preset's own settings (threads included) instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # harness; checkout

from mvssl_hub.data.sampling import make_generator  # noqa: E402
from recipes import load_recipe  # noqa: E402

from harness import EMBEDDED_DATA, RESULTS, ROOT, default_out, interleaved_seconds, write_result  # noqa: E402

pretrain = load_recipe("pretrain")
VARIANTS = ("recipe", "premade", "backbone")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else list(argv)
    recipe_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat and variant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant and M first")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--smoke", action="store_true", help="seconds: M=2, width 4, batch 16, 1 step x 2 repeats")
    p.add_argument("--quick", action="store_true", help="under a minute: M=4, width 16, batch 64, 1 step x 2 repeats")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/pipeline[_cuda].json)")
    args = p.parse_args(own)
    sizes: list[str] = []
    if args.smoke:
        args.views, args.steps, args.repeats, args.warmup = [2], 1, 2, 1
        sizes = ["--width", "4", "--batch_size", "16", "--threads", "1"]
    elif args.quick:
        args.views, args.steps, args.repeats, args.warmup = [4], 1, 2, 1
        sizes = ["--width", "16", "--batch_size", "64"]
    if args.out is None and not args.smoke and not args.quick:
        suffix = "" if args.device == "cpu" else f"_{torch.device(args.device).type}"
        args.out = str(RESULTS / f"pipeline{suffix}.json")
    # a --config preset after -- is the network and batch to time; without one, ResNet-18 w64 at batch 256
    base = [] if "--config" in recipe_args else [
        "--arch", "resnet18", "--small_images", "true", "--width", "64", "--proj_dim", "256", "--method",
        "barlowtwins", "--beta", "auto", "--batch_size", "256", "--threads", "2", "--view_preset", "cifar10"]
    data = [] if "--data" in recipe_args else ["--data", str(EMBEDDED_DATA)]
    schedule = ["--schedule", "constant", "--clock", "wall", "--time_budget", "none"]  # every step alike
    return args, [*base, *data, *schedule, *sizes, *recipe_args]  # later flags win; a preset loads first


def build(recipe_args: list[str], num_views: int, device: str, run_dir: str):
    """The recipe's run for M views, with nothing that is not a training step: no kNN, saves, export or logs."""
    cpu = ["--cpu", "true"] if device == "cpu" else []
    return pretrain.setup([*recipe_args, "--num_views", str(num_views), *cpu, "--output_dir", run_dir,
                           "--eval_split", "", "--knn_random_init", "false", "--export", "false",
                           "--progress", "false", "--log_level", "warning"])


def measure(args: argparse.Namespace, recipe_args: list[str], m: int, run_dir: str) -> tuple[dict, dict]:
    cfg, run, data, trainer = build(recipe_args, m, args.device, run_dir)
    if cfg.compile:  # the backbone variant runs eager: the two would not be comparable
        raise SystemExit("pipeline.py: --compile true is not supported (the backbone-only variant runs eager)")
    steps = iter(range(1, 10**9))  # the recipe variant's own steps, consecutive: a streamed source never restarts
    _, _, images, labels = trainer.batches(0)  # one batch and its views, made once for the pre-made variants
    fixed = trainer.augment(images, m, generator=make_generator(cfg.seed + 1, 0, 0, 0))
    premade = dataclasses.replace(trainer, batches=lambda step: (0, 0, images, labels),
                                  augment=lambda imgs, views, generator=None: fixed)
    backbone = trainer.backbone(run.accelerator)

    def backbone_step() -> None:
        with run.accelerator.autocast():
            features = backbone(fixed.flatten(0, 1))  # views are (M, N, 3, s, s); the model flattens them too
        features.float().sum().backward()  # the gradient's values do not change its cost
        backbone.zero_grad(set_to_none=True)

    variants = {"recipe": lambda: pretrain.train_step(cfg, run, trainer, next(steps)),
                "premade": lambda: pretrain.train_step(cfg, run, premade, 0),  # its batch and views are fixed
                "backbone": backbone_step}
    times = interleaved_seconds(variants, args.repeats, args.warmup, args.steps, run.device)
    trainer.batches.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"num_views": m, "seconds_per_step": times, "median_seconds_per_step": med,
           "views_per_s": {k: m * cfg.batch_size / v for k, v in med.items()},
           "images_per_s": {k: cfg.batch_size / v for k, v in med.items()},
           "ratio_data_over_premade": med["premade"] / med["recipe"],
           "ratio_recipe_over_backbone": med["backbone"] / med["recipe"]}
    settings = {"arch": cfg.arch, "width": cfg.width, "small_images": cfg.small_images, "proj_dim": cfg.proj_dim,
                "method": cfg.method, "beta": cfg.resolved_beta(), "batch_images": cfg.batch_size,
                "data": "embedded 5k cut" if cfg.data == str(EMBEDDED_DATA) else Path(cfg.data).name,
                "steps_per_repeat": args.steps, "repeats": args.repeats, "warmup": args.warmup,
                "threads": torch.get_num_threads(), "precision": run.precision,
                "channels_last": trainer.augment.channels_last, "device": str(run.device),
                "recipe_args": [a.replace(str(ROOT) + "/", "") for a in recipe_args]}  # no local paths
    return row, settings


def main(argv: list[str] | None = None) -> dict:
    args, recipe_args = parse_args(argv)
    results, settings = [], {}
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        for m in args.views:
            row, settings = measure(args, recipe_args, m, str(Path(tmp) / f"m{m}"))
            results.append(row)
            v = row["views_per_s"]
            print(f"M={m}: recipe {v['recipe']:.1f} views/s, premade {v['premade']:.1f}, backbone alone "
                  f"{v['backbone']:.1f}; throughput ratios: recipe / premade {row['ratio_data_over_premade']:.3f}, "
                  f"recipe / backbone {row['ratio_recipe_over_backbone']:.3f}", flush=True)
    values = {"what": "recipes/pretrain.py's train_step (batch + views on the fly + fwd + loss + bwd + guarded Adam) "
                      "vs the same step on pre-made views vs the backbone alone (fwd + bwd on the pre-made views); "
                      "interleaved repeats, medians",
              "settings": settings, "results": results}
    out = default_out("pipeline", args.smoke or args.quick, args.out)
    return write_result(out, "pipeline", values)


if __name__ == "__main__":
    main()

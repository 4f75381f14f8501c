"""Evaluate a pretrained backbone on frozen features: weighted kNN and/or the paper's linear probe.

    python recipes/evaluate.py runs/demo --data recipes/data/cifar10-5k --protocol both
    accelerate launch recipes/evaluate.py org/barlowtwins-resnet18-cifar10 --protocol knn

MODEL is a run folder of recipes/pretrain.py (its exported checkpoint, e.g. ``<run>/export``, is used),
a checkpoint folder (config.json + model.safetensors) or a Hub repo id. The same architecture at random
initialisation (same seed) is always evaluated too and printed beside the trained score with the gain:
random ResNet features are far from chance (~30% kNN top-1 on CIFAR-10), so a score alone says little.

Results are printed as a table, saved as JSON (``--output``, default ``<checkpoint>/eval_results.json``)
and, for a local checkpoint, merged into its config.json and model card (``--no-write`` to skip).
Under several processes, feature extraction is sharded and gathered; the probes run on the main process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python recipes/evaluate.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mvssl_hub.backbones import build_backbone
from mvssl_hub.checkpoint import find_checkpoint
from mvssl_hub.device import bf16_is_fast
from mvssl_hub.probes import extract_features, extract_multiview_features, knn_accuracy, linear_probe
from mvssl_hub.views import EvalTransform, MultiViewAugment, get_view_preset


def load_model(source: str) -> tuple[torch.nn.Module, Path | None]:
    """(backbone in eval mode, local checkpoint folder or None for a Hub repo)."""
    from mvssl_hub.loading import from_pretrained

    path = Path(source).expanduser()
    if path.exists():
        ckpt = find_checkpoint(path)
        return from_pretrained(str(ckpt)), ckpt
    return from_pretrained(source), None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="run folder, checkpoint folder or Hub repo id")
    p.add_argument("--data", default="uoft-cs/cifar10", help="Hub dataset id, parquet file/folder or imagefolder")
    p.add_argument("--dataset-name", default=None, help="name recorded in the metrics (default: --data as given)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--fraction", type=float, default=1.0, help="class-balanced share of the training split")
    p.add_argument("--limit", type=int, default=None, help="keep only the first rows of each split (quick runs)")
    p.add_argument("--image-size", type=int, default=None, help="resize+centre-crop while decoding (mixed sizes)")
    p.add_argument("--protocol", choices=("knn", "linear", "both"), default="both")
    p.add_argument("--preset", default=None, help="view preset (default: the checkpoint's, else cifar10)")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=200, help="linear probe epochs")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--probe-batch-size", type=int, default=512)
    p.add_argument("--standardize", action="store_true", help="standardise features before the linear probe")
    p.add_argument("--views", type=int, default=1,
                   help="linear probe on features averaged over 1 clean + (views-1) augmented views (paper: 16)")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass during extraction")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--seed", type=int, default=None, help="random-init / probe seed (default: the run's seed, else 0)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--output", default=None, help="results JSON (default <checkpoint>/eval_results.json)")
    p.add_argument("--no-write", action="store_true", help="do not update the checkpoint's config.json and card")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for key in ("k", "epochs", "views", "batch_size", "probe_batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from accelerate import PartialState

    from mvssl_hub.data import load_split
    from mvssl_hub.distributed import check_distributed_launch

    # Initialises torch.distributed under `accelerate launch` (gloo on CPU-only machines).
    state = PartialState(cpu=not torch.cuda.is_available())
    check_distributed_launch(state.num_processes)
    device, main_proc = state.device, state.is_main_process
    say = print if main_proc else (lambda *a, **k: None)
    progress = main_proc and not args.no_progress

    # ---- model: the trained backbone and the same architecture at random init (same seed)
    trained, ckpt_dir = load_model(args.model)
    cfg = trained.mvssl_config
    seed = args.seed if args.seed is not None else int((cfg.get("train_config") or {}).get("seed", 0))
    torch.manual_seed(seed)  # the pretraining recipe seeds the same way before building its model
    random_init = build_backbone(**cfg["backbone"])
    preset_name = args.preset or (cfg.get("transforms") or {}).get("preset") or "cifar10"
    preset = get_view_preset(preset_name)
    bf16 = {"auto": bf16_is_fast(device), "on": True, "off": False}[args.bf16]
    say(f"# model: {args.model} ({ckpt_dir or 'Hub'}); backbone {cfg['backbone']}, {cfg['feature_dim']}-d features")
    say(f"# device {device}, processes {state.num_processes}, bf16 {bf16}, preset {preset_name}, seed {seed}")

    # ---- data, decoded once
    t0 = time.time()
    train = load_split(args.data, args.train_split, fraction=args.fraction, seed=seed, size=args.image_size,
                       limit=args.limit)
    test = load_split(args.data, args.test_split, size=args.image_size, limit=args.limit)
    if train.labels is None or test.labels is None:
        raise ValueError(f"{args.data}: the {args.train_split}/{args.test_split} splits need labels for evaluation")
    num_classes = max(int(train.labels.max()), int(test.labels.max())) + 1
    if train.num_classes is not None:
        num_classes = max(num_classes, train.num_classes)
    say(f"# data {args.data}: {len(train)} train / {len(test)} test images {tuple(train.images.shape[1:])}, "
        f"{num_classes} classes, loaded in {time.time() - t0:.1f}s")

    eval_tf = EvalTransform(preset)
    augment = MultiViewAugment(replace(preset, crop_size=preset.eval_size))  # views at the evaluation size
    extract_kw = {"batch_size": args.batch_size, "device": device, "bf16": bf16, "progress": progress}
    want_knn = args.protocol in ("knn", "both")
    want_linear = args.protocol in ("linear", "both")
    k = min(args.k, len(train))
    if want_knn and k < args.k:
        say(f"# note: k={args.k} exceeds the {len(train)} training images; using k={k}")
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    for name, model in (("trained", trained), ("random_init", random_init)):
        say(f"# {name}: extracting features")
        out: dict[str, Any] = {}
        if want_knn or args.views == 1:  # clean single-view features (kNN, and the 1-view linear probe)
            t0 = time.time()
            train_f = extract_features(model, train.images, eval_tf, **extract_kw)
            test_f = extract_features(model, test.images, eval_tf, **extract_kw)
            timings[f"{name}_extract_s"] = time.time() - t0
        if want_knn and main_proc:
            t0 = time.time()
            out["knn"] = knn_accuracy(train_f, train.labels, test_f, test.labels, k=k,
                                      temperature=args.temperature, num_classes=num_classes, device=device,
                                      progress=progress)
            timings[f"{name}_knn_s"] = time.time() - t0
        if want_linear:
            if args.views > 1:  # paper: average each image's features over 1 clean + 15 augmented views
                t0 = time.time()
                gen = torch.Generator().manual_seed(seed)
                train_f = extract_multiview_features(model, train.images, augment, eval_tf, args.views, gen,
                                                     **extract_kw)
                test_f = extract_multiview_features(model, test.images, augment, eval_tf, args.views, gen,
                                                    **extract_kw)
                timings[f"{name}_extract_views_s"] = time.time() - t0
            if main_proc:
                t0 = time.time()
                probe = linear_probe(train_f, train.labels, test_f, test.labels, epochs=args.epochs, lr=args.lr,
                                     weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                                     batch_size=args.probe_batch_size, standardize=args.standardize,
                                     num_classes=num_classes, device=device, seed=seed, progress=progress)
                out["linear_probe"] = {key: probe[key] for key in ("top1", "top5", "train_top1", "train_top5",
                                                                   "final_loss")}
                timings[f"{name}_linear_s"] = time.time() - t0
        results[name] = out
    state.wait_for_everyone()
    if not main_proc:
        return {}

    # ---- report: table, JSON, config.json + card
    dataset = args.dataset_name or args.data
    protocols = {
        "knn": f"weighted kNN, k={k}, T={args.temperature}, cosine on L2-normalised features, 1 centre view; "
               f"bank: {args.train_split} ({len(train)} images), queries: {len(test)} images",
        "linear_probe": f"linear probe on frozen features: Adam lr={args.lr:g}, wd={args.weight_decay:g}, "
                        f"{args.epochs} epochs, batch {args.probe_batch_size}, label smoothing "
                        f"{args.label_smoothing:g}, {'standardised' if args.standardize else 'raw'} features, "
                        f"{args.views} view{'s' if args.views > 1 else ''}; train: {args.train_split} "
                        f"({len(train)} images), test: {len(test)} images",
    }
    today = dt.date.today().isoformat()
    records = []
    rows = []
    for task in ("knn", "linear_probe"):
        if task not in results["trained"]:
            continue
        for metric in ("top1", "top5"):
            value, base = results["trained"][task][metric], results["random_init"][task][metric]
            records.append({"task": task, "metric": metric, "value": round(value, 4), "random_init": round(base, 4),
                            "dataset": dataset, "split": args.test_split, "protocol": protocols[task],
                            "date": today})
            rows.append((task, metric, value, base, value - base))
    say(f"\n{'protocol':<14}{'metric':<8}{'trained':>10}{'random init':>14}{'gain':>10}")
    for task, metric, value, base, gain in rows:
        say(f"{task:<14}{metric:<8}{value:>9.2f}%{base:>13.2f}%{gain:>+10.2f}")
    summary = {
        "model": args.model, "checkpoint": str(ckpt_dir) if ckpt_dir else None, "backbone": cfg["backbone"],
        "dataset": dataset, "data_source": args.data, "train_split": args.train_split, "test_split": args.test_split,
        "num_train": len(train), "num_test": len(test), "num_classes": num_classes, "preset": preset_name,
        "seed": seed, "bf16": bf16, "device": str(device), "num_processes": state.num_processes,
        "hardware": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "results": results, "records": records, "timings_s": {key: round(v, 2) for key, v in timings.items()},
        "date": today, "argv": sys.argv[1:] if argv is None else list(argv),
    }
    if ckpt_dir is not None and not args.no_write:
        from mvssl_hub.checkpoint import update_metrics

        update_metrics(ckpt_dir, records)
        say(f"# metrics written into {ckpt_dir / 'config.json'} and its README.md")
    output = Path(args.output) if args.output else (ckpt_dir / "eval_results.json" if ckpt_dir else
                                                   Path("eval_results.json"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n")
    say(f"# results saved to {output}")
    return summary


if __name__ == "__main__":
    main()

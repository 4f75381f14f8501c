"""Evaluate a pretrained backbone on frozen features: weighted kNN and/or the paper's linear probe.

    python recipes/evaluate.py runs/demo --data recipes/data/cifar10-5k --protocol both --record
    accelerate launch recipes/evaluate.py org/barlowtwins-resnet18-cifar10 --protocol knn
    python recipes/evaluate.py --help

MODEL is a run folder of recipes/pretrain.py, a checkpoint folder or a Hub repo id. The same architecture
at random initialisation (same seed) is evaluated too and printed beside the trained score with the gain
(random ResNet features reach ~30% kNN top-1 on CIFAR-10: a score alone says little); ``--no-baseline``
skips it. Results are printed, saved as JSON (``--output``, default ``<checkpoint>/eval_results.json``) and,
with ``--record``, merged into a local checkpoint's config.json and card. A run on part of the data
(``--limit``, ``--fraction``) is recorded under its own split name, so it never replaces a full-data result.
Under several processes, feature extraction is sharded and gathered; once every feature is gathered, the other
processes end and the probes run on the main process, so a long probe never holds a collective open.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

if __package__ in (None, ""):  # `python recipes/evaluate.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.backbones import backbone_from_config
from mvssl_hub.data.splits import load_split
from mvssl_hub.device import bf16_is_fast
from mvssl_hub.distributed import check_distributed_launch
from mvssl_hub.errors import ConfigError
from mvssl_hub.eval.monitor import monitor_model
from mvssl_hub.eval.probes import extract_features, extract_multiview_features, knn_accuracy, linear_probe
from mvssl_hub.hub.format import find_checkpoint, update_metrics
from mvssl_hub.hub.loading import from_pretrained  # a zoo entry's repo id resolves offline too
from mvssl_hub.hub.records import dataset_name, knn_protocol, linear_probe_protocol, metric_record
from mvssl_hub.hub.schema import MAX_IMAGE_SIZE
from mvssl_hub.train.collectives import arm, startup_timeout, tighten
from mvssl_hub.train.config import (
    FRACTION,
    Check,
    above,
    as_config_error,
    at_least,
    at_most,
    check_ranges,
    parse_config,
    run_cli,
)
from mvssl_hub.views import EvalTransform, MultiViewAugment, get_view_preset
from recipes.data import load_or_embedded


@dataclass
class EvaluateConfig:
    """Every setting of an evaluation."""

    POSITIONAL = ("model",)

    model: Annotated[str, Check(bool, "give the run folder, checkpoint folder or Hub repo id to evaluate")] = ""  # run folder, checkpoint folder or Hub repo id
    # data
    data: str | None = None  # default: the dataset the checkpoint was trained on, when that is a Hub id
    data_name: str | None = None  # the dataset's name in the records (default: `data` if a Hub id)
    train_split: str = "train"
    test_split: str = "test"
    fraction: Annotated[float, FRACTION] = 1.0  # class-balanced share of the training split (the kNN bank / probe training set)
    limit: Annotated[int | None, at_least(1)] = None  # keep only the first rows of each split (quick runs)
    image_size: Annotated[int | None, at_least(8), at_most(MAX_IMAGE_SIZE)] = None  # resize + centre-crop while decoding (mixed sizes)
    # protocol
    protocol: Literal["knn", "linear", "both"] = "both"
    preset: str | None = None  # view preset (default: the checkpoint's, else cifar10)
    baseline: bool = True  # also evaluate the same architecture at random init (same seed)
    k: Annotated[int, at_least(1)] = 200  # kNN neighbours
    temperature: Annotated[float, above(0)] = 0.1  # kNN temperature
    epochs: Annotated[int, at_least(1)] = 200  # linear probe epochs
    lr: Annotated[float, above(0)] = 1e-3  # linear probe: Adam learning rate
    weight_decay: Annotated[float, at_least(0)] = 1e-6
    label_smoothing: Annotated[float, Check(lambda v: 0 <= v < 1, "must be in [0, 1)")] = 0.1
    probe_batch_size: Annotated[int, at_least(1)] = 512
    standardize: bool = False  # standardise features before the linear probe
    views: Annotated[int, at_least(1)] = 1  # linear probe on features averaged over 1 clean + (views-1) augmented views (paper: 16)
    monitors: bool = True  # RankMe, alpha-ReQ and LiDAR (no labels) on backbone and projector outputs
    monitor_images: Annotated[int, at_least(8)] = 1000  # first test images the label-free measures use (4 views each)
    # speed
    batch_size: Annotated[int, at_least(1)] = 512  # images per forward pass during extraction
    bf16: Literal["auto", "on", "off"] = "auto"
    threads: Annotated[int, at_least(0)] = 0  # torch intra-op threads when > 0
    dist_timeout_minutes: Annotated[float, above(0)] = 10.0  # a collective waits this long for a machine gone silent, then the evaluation stops naming it (start-up: >= 60)
    seed: int | None = None  # random-init / probe seed (default: the run's seed, else 0)
    # output
    output: str | None = None  # results JSON (default <checkpoint>/eval_results.json)
    record: bool = False  # merge the results into the local checkpoint's config.json and card
    progress: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # verbosity of the recipe's log

    def __post_init__(self) -> None:
        check_ranges(self)  # every range declared beside its field


def load_model(source: str) -> tuple[torch.nn.Module, Path | None]:
    """(backbone in eval mode, local checkpoint folder or None for a Hub repo)."""
    path = Path(source).expanduser()
    if path.exists():
        ckpt = find_checkpoint(path)
        return from_pretrained(str(ckpt)), ckpt
    return from_pretrained(source), None


def resolve_data(cfg: EvaluateConfig, trained_on: dict[str, Any]) -> str:
    """``--data``, else the Hub dataset the checkpoint was trained on."""
    if cfg.data:
        return cfg.data
    ds = trained_on.get("id")
    if ds and "/" in ds and not Path(ds).exists():
        return ds
    raise ConfigError(f"config key 'data': the checkpoint was trained on {ds!r}, which is not a Hub id; give --data")


def extract_all(cfg: EvaluateConfig, model: torch.nn.Module, train: Any, test: Any, tf: EvalTransform,
                augment: MultiViewAugment, seed: int, state: Any, bf16: bool) -> dict[str, Any]:
    """Every feature the probes of one backbone need, {"knn": (train, test), "linear": (train, test)}: sharded and
    gathered under several processes, so every process calls it, and all collectives are over when it returns."""
    extract = {"batch_size": cfg.batch_size, "device": state.device, "bf16": bf16,
               "progress": state.is_main_process and cfg.progress}
    features: dict[str, Any] = {}
    if cfg.protocol in ("knn", "both") or cfg.views == 1:  # clean single-view features
        features["knn"] = features["linear"] = tuple(extract_features(model, s.images, tf, **extract)
                                                     for s in (train, test))
    if cfg.protocol in ("linear", "both") and cfg.views > 1:  # paper: 1 clean + 15 augmented views, averaged
        gen = torch.Generator().manual_seed(seed)
        features["linear"] = tuple(extract_multiview_features(model, s.images, augment, tf, cfg.views, gen, **extract)
                                   for s in (train, test))
    return features


def run_probes(cfg: EvaluateConfig, features: dict[str, Any], train: Any, test: Any, seed: int,
               device: torch.device) -> dict[str, Any]:
    """{"knn": {top1, top5}, "linear_probe": {...}} of one backbone's features (the main process only)."""
    classes = max(int(train.labels.max()), int(test.labels.max()), (train.num_classes or 0) - 1) + 1
    out: dict[str, Any] = {}
    if cfg.protocol in ("knn", "both"):
        train_f, test_f = features["knn"]
        out["knn"] = knn_accuracy(train_f, train.labels, test_f, test.labels, k=min(cfg.k, len(train)),
                                  temperature=cfg.temperature, num_classes=classes, device=device,
                                  progress=cfg.progress)
    if cfg.protocol in ("linear", "both"):
        train_f, test_f = features["linear"]
        probe = linear_probe(train_f, train.labels, test_f, test.labels, epochs=cfg.epochs, lr=cfg.lr,
                             weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing,
                             batch_size=cfg.probe_batch_size, standardize=cfg.standardize, num_classes=classes,
                             device=device, seed=seed, progress=cfg.progress)
        out["linear_probe"] = {k: probe[k] for k in ("top1", "top5", "train_top1", "train_top5", "final_loss")}
    return out


def probe_all(cfg: EvaluateConfig, features: dict[str, Any], train: Any, test: Any, seed: int, device: torch.device,
              say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, float]]:
    """:func:`run_probes` of every backbone's features, and the seconds each took."""
    results, seconds = {}, {}
    for name in list(features):
        t0 = time.time()
        results[name] = run_probes(cfg, features.pop(name), train, test, seed, device)  # freed once probed
        seconds[name] = round(time.time() - t0, 2)
        say(f"# probes of the {name.replace('_', ' ')} backbone: {seconds[name]:.1f}s")
    return results, seconds


def build_records(cfg: EvaluateConfig, results: dict[str, Any], data: str, train: Any, test: Any) -> list[dict]:
    """One record per (protocol, metric); a partial-data run gets a split name of its own."""
    split = cfg.test_split + (f"[:{cfg.limit}]" if cfg.limit else "") + (
        f" (train fraction {cfg.fraction:g})" if cfg.fraction < 1 else "")
    protocols = {
        "knn": knn_protocol(k=min(cfg.k, len(train)), temperature=cfg.temperature, bank_split=cfg.train_split,
                            bank_size=len(train), query_size=len(test)),
        "linear_probe": linear_probe_protocol(lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                                              batch_size=cfg.probe_batch_size, label_smoothing=cfg.label_smoothing,
                                              standardize=cfg.standardize, views=cfg.views,
                                              train_split=cfg.train_split, train_size=len(train), test_size=len(test)),
    }
    baseline = results.get("random_init", {})
    return [metric_record(task, metric, results["trained"][task][metric],
                          baseline[task][metric] if task in baseline else None,
                          dataset=dataset_name(data, cfg.data_name), split=split, protocol=protocols[task])
            for task in ("knn", "linear_probe") if task in results["trained"] for metric in ("top1", "top5")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(EvaluateConfig, argv, prog="recipes/evaluate.py", summary=__doc__.split("\n\n")[0])
    from accelerate import PartialState  # initialises torch.distributed under `accelerate launch`
    from accelerate.logging import get_logger

    logging.basicConfig(level=cfg.log_level.upper(), format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("accelerate").setLevel(max(logging.getLevelName(cfg.log_level.upper()), logging.WARNING))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    arm(cfg.dist_timeout_minutes)
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=startup_timeout(cfg.dist_timeout_minutes))
    check_distributed_launch(state.num_processes)
    log = get_logger("mvssl_hub.evaluate", log_level=cfg.log_level.upper())

    def say(message: str) -> None:
        log.info(message, main_process_only=True)

    # ---- the trained backbone, and the same architecture at random init (same seed)
    with as_config_error("model", cfg.model):  # a mistyped folder, or a repo the offline cache lacks: one line
        trained, ckpt_dir = load_model(cfg.model)
    ckpt_cfg = trained.mvssl_config
    seed = cfg.seed if cfg.seed is not None else int((ckpt_cfg.get("train_config") or {}).get("seed", 0))
    data = resolve_data(cfg, ckpt_cfg.get("dataset") or {})
    preset_name = cfg.preset or (ckpt_cfg.get("transforms") or {}).get("preset") or "cifar10"
    preset = get_view_preset(preset_name)
    bf16 = {"auto": bf16_is_fast(state.device), "on": True, "off": False}[cfg.bf16]
    models = {"trained": trained}
    if cfg.baseline:
        torch.manual_seed(seed)  # the pretraining recipe seeds the same way before building its model
        models["random_init"] = backbone_from_config(ckpt_cfg["backbone"])
    say(f"# model: {cfg.model} ({ckpt_dir or 'Hub'}); backbone {ckpt_cfg['backbone']}; device {state.device}, "
        f"processes {state.num_processes}, bf16 {bf16}, preset {preset_name}, seed {seed}")

    # ---- data, decoded once
    t0 = time.time()
    def load(source: str) -> tuple[Any, Any]:
        return (load_split(source, cfg.train_split, fraction=cfg.fraction, seed=seed, size=cfg.image_size,
                           limit=cfg.limit),
                load_split(source, cfg.test_split, size=cfg.image_size, limit=cfg.limit))

    with as_config_error("data", data):  # offline, the default CIFAR-10 falls back to the embedded cut
        (train, test), data = load_or_embedded(load, data, default=not cfg.data, say=say)
    if train.labels is None or test.labels is None:
        raise ConfigError(f"config key 'data' = {data!r}: splits {cfg.train_split}/{cfg.test_split} need labels")
    say(f"# data {data}: {len(train)} train / {len(test)} test images, loaded in {time.time() - t0:.1f}s")
    tf, augment = EvalTransform(preset), MultiViewAugment(replace(preset, crop_size=preset.eval_size))
    tighten()  # the data is in: from here a collective waits at most dist_timeout_minutes
    features = {}
    for name, model in models.items():  # every process extracts; only the main one keeps what it gathered
        gathered = extract_all(cfg, model, train, test, tf, augment, seed, state, bf16)
        features[name] = gathered if state.is_main_process else None
    if not state.is_main_process:  # the last collective is behind: the probes need no other process
        return {}
    results, probe_seconds = probe_all(cfg, features, train, test, seed, state.device, say)

    monitors = None
    if cfg.monitors and "projector.safetensors" in ckpt_cfg["files"]:  # label-free: backbone and projector
        ssl = from_pretrained(str(ckpt_dir) if ckpt_dir else cfg.model, with_projector=True)
        report = monitor_model(ssl, test.images[: cfg.monitor_images], augment, num_views=4, seed=seed, bf16=bf16)
        monitors = report.to_record()
        say("# label-free: " + ", ".join(f"{k} {v:.3g}" for k, v in report.values().items()))

    # ---- report: table, JSON, and (with --record) config.json + card
    records = build_records(cfg, results, data, train, test)
    say(f"\n{'protocol':<14}{'metric':<8}{'trained':>10}{'random init':>14}{'gain':>10}")
    for r in records:
        base, gain = ("—", "—") if r["random_init"] is None else (f"{r['random_init']:.2f}%",
                                                                   f"{r['value'] - r['random_init']:+.2f}")
        say(f"{r['task']:<14}{r['metric']:<8}{r['value']:>9.2f}%{base:>14}{gain:>10}")
    summary = {"model": cfg.model, "checkpoint": str(ckpt_dir) if ckpt_dir else None, "backbone": ckpt_cfg["backbone"],
               "dataset": dataset_name(data, cfg.data_name), "num_train": len(train), "num_test": len(test),
               "preset": preset_name, "seed": seed, "bf16": bf16, "device": str(state.device),
               "num_processes": state.num_processes, "torch": torch.__version__, "results": results,
               "probe_seconds": probe_seconds, "records": records, "monitors": monitors, "argv": sys.argv[1:] if argv is None else list(argv)}
    if cfg.record and ckpt_dir is not None:
        update_metrics(ckpt_dir, records, monitors=monitors)
        say(f"# metrics recorded in {ckpt_dir / 'config.json'} and its README.md")
    output = Path(cfg.output) if cfg.output else (ckpt_dir or Path(".")) / "eval_results.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n")
    say(f"# results saved to {output}")
    return summary


if __name__ == "__main__":
    run_cli(main)

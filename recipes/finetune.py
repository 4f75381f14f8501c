"""Full fine-tuning of a pretrained backbone with a fresh linear classifier, one process or many.

    python recipes/finetune.py --model runs/demo --data recipes/data/cifar10-5k --epochs 10
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_cifar10.yaml --model org/name

Reads top to bottom: config -> accelerator -> pretrained backbone + new head -> data (decoded once) ->
AdamW with separate backbone / head learning rates, linear warm-up then cosine -> resume -> loop (seeded
batches, light augmentation made on the device, forward, cross-entropy, step) -> per-epoch test top-1/top-5
-> atomic checkpoints -> results JSON, the fine-tuned backbone exported, and the final metrics (task
"finetune") merged into the source checkpoint's config.json and card when it is a local folder.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__ in (None, ""):  # `python recipes/finetune.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.checkpoint import find_checkpoint
from mvssl_hub.config import ConfigError, config_to_dict, dump_yaml, parse_config, run_cli
from mvssl_hub.device import hardware_string, make_accelerator, place_images
from mvssl_hub.distributed import convert_batchnorm
from mvssl_hub.run_checkpoints import CheckpointManager
from mvssl_hub.trackers import JSONLTracker
from mvssl_hub.training import StepBatches, lr_factor, make_generator


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run. ``batch_size`` is the global number of images per step."""

    model: str = ""  # run folder of pretrain.py, checkpoint folder, or Hub repo id
    # data
    data: str = "uoft-cs/cifar10"
    dataset_name: str | None = None  # name recorded in the metrics (default: `data` as given)
    train_split: str = "train"
    test_split: str = "test"
    revision: str | None = None
    fraction: float = 1.0
    limit: int | None = None  # first training images only (tests, smoke runs)
    eval_limit: int | None = None  # first test images only
    image_size: int | None = None
    view_preset: str | None = None  # default: the checkpoint's preset, else cifar10
    augment: Literal["light", "none"] = "light"  # light: random resized crop (scale 0.35-1) + flip, no colour
    # optimisation
    epochs: int = 10
    max_steps: int | None = None  # stop early after this many steps (the schedule still spans `epochs`)
    batch_size: int = 256
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    # speed
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool = True
    cpu: bool | None = None
    threads: int = 0
    eval_batch_size: int = 512
    # run
    output_dir: str = "runs/finetune"
    save_every: int = 0  # steps between extra checkpoints (one is always written at the end of each epoch)
    keep_checkpoints: int = 2
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    export: bool = True
    write_metrics: bool = True  # merge the final metrics into a local source checkpoint's config.json + card

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, what: str) -> None:
            if not cond:
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r}: {what}")

        need(bool(self.model), "model", "give the run folder, checkpoint folder or Hub repo id to fine-tune")
        need(0.0 < self.fraction <= 1.0, "fraction", "must be in (0, 1]")
        need(self.limit is None or self.limit >= 1, "limit", "must be >= 1")
        need(self.eval_limit is None or self.eval_limit >= 1, "eval_limit", "must be >= 1")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        need(self.batch_size >= 2, "batch_size", "BatchNorm needs at least 2 images")
        for key in ("lr_backbone", "lr_head"):
            need(getattr(self, key) >= 0 and math.isfinite(getattr(self, key)), key, "must be a number >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        need(self.threads >= 0, "threads", "must be >= 0")
        need(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        need(self.save_every >= 0, "save_every", "must be >= 0")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")


# Keys that may differ between a run and its resumption without changing the trajectory.
RESUMABLE_CHANGES = {"resume", "max_steps", "save_every", "keep_checkpoints", "progress", "export", "threads",
                     "overwrite", "write_metrics", "eval_batch_size"}


class Classifier(nn.Module):
    """Backbone + linear head: images (N, 3, H, W) -> logits (N, num_classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def main(argv: list[str] | None = None) -> dict:
    """Run the recipe; returns a summary dict (used by the tests)."""
    cfg = parse_config(FinetuneConfig, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    from tqdm.auto import tqdm

    from mvssl_hub.data import load_split
    from mvssl_hub.loading import from_pretrained
    from mvssl_hub.probes import extract_features, topk_accuracy
    from mvssl_hub.views import EvalTransform, MultiViewAugment, get_view_preset

    run_dir = Path(cfg.output_dir)
    accelerator, precision = make_accelerator(
        cpu=cfg.cpu, precision=cfg.precision, run_dir=run_dir, log_with=[JSONLTracker("finetune", run_dir / "logs")]
    )
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    main_proc = accelerator.is_main_process
    say = accelerator.print
    if cfg.batch_size % world:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size}: not divisible by the {world} processes")

    # ---- pretrained backbone (a run folder, a checkpoint folder or a Hub repo)
    source = Path(cfg.model).expanduser()
    ckpt_dir = find_checkpoint(source) if source.exists() else None
    backbone = from_pretrained(str(ckpt_dir) if ckpt_dir else cfg.model)
    src_cfg = backbone.mvssl_config
    preset_name = cfg.view_preset or (src_cfg.get("transforms") or {}).get("preset") or "cifar10"
    preset = get_view_preset(preset_name)
    config_dict = {**config_to_dict(cfg), "precision_used": precision, "num_processes": world,
                   "checkpoint": str(ckpt_dir) if ckpt_dir else cfg.model, "view_preset_used": preset_name}
    say(f"# mvssl-hub finetune: resolved config\n{dump_yaml(cfg)}# backbone {src_cfg['backbone']} from "
        f"{ckpt_dir or cfg.model}; precision {precision}; processes {world}; device {device}")

    # ---- data, decoded once
    t0 = time.time()
    with accelerator.main_process_first():  # one process downloads and caches a Hub dataset, the others reuse it
        train = load_split(cfg.data, cfg.train_split, fraction=cfg.fraction, seed=cfg.seed, size=cfg.image_size,
                           revision=cfg.revision, limit=cfg.limit)
        test = load_split(cfg.data, cfg.test_split, size=cfg.image_size, revision=cfg.revision, limit=cfg.eval_limit)
    if train.labels is None or test.labels is None:
        raise ValueError(f"{cfg.data}: fine-tuning needs labels in splits {cfg.train_split!r} and {cfg.test_split!r}")
    num_classes = max(int(train.labels.max()), int(test.labels.max()), (train.num_classes or 0) - 1) + 1
    n_train = len(train)
    if n_train < cfg.batch_size:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size} exceeds the {n_train} training images")
    steps_per_epoch = n_train // cfg.batch_size
    schedule_steps = cfg.epochs * steps_per_epoch
    total_steps = min(schedule_steps, cfg.max_steps or schedule_steps)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    say(f"# data {cfg.data}: {n_train} train / {len(test)} test images, {num_classes} classes, "
        f"{steps_per_epoch} steps/epoch; loaded in {time.time() - t0:.1f}s")
    # Light augmentation at the evaluation size: random resized crop + flip, no colour changes.
    light = replace(preset, crop_size=preset.eval_size, scale=(0.35, 1.0), jitter_p=0.0, grayscale_p=0.0,
                    solarize_p=0.0)
    view_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    augment = MultiViewAugment(light, output_dtype=view_dtype, channels_last=cfg.channels_last)
    eval_transform = EvalTransform(preset)

    # ---- model, optimiser (backbone and head learning rates), warm-up + cosine
    torch.manual_seed(cfg.seed)
    model = Classifier(backbone, num_classes)
    if world > 1:
        model = convert_batchnorm(model, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        [{"params": model.backbone.parameters(), "lr": cfg.lr_backbone},
         {"params": model.head.parameters(), "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, schedule_steps, warmup_steps=warmup_steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    train_images = place_images(train.images, device)

    def evaluate() -> dict[str, float]:
        # Sharded over the processes and gathered (mvssl_hub.probes), eval mode, same precision choice.
        logits = extract_features(accelerator.unwrap_model(model), test.images, eval_transform,
                                  batch_size=cfg.eval_batch_size, device=device, bf16=precision == "bf16",
                                  channels_last=cfg.channels_last, progress=main_proc and cfg.progress)
        return topk_accuracy(logits, test.labels)

    # ---- resume
    ckpts = CheckpointManager(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    state = {"global_step": 0, "epoch": 0, "train_seconds": 0.0, "history": []}
    saved, latest = ckpts.start_or_resume(accelerator, config_dict, resume=cfg.resume, overwrite=cfg.overwrite,
                                          resumable=RESUMABLE_CHANGES, log_dir=run_dir / "logs")
    state.update(saved)
    if latest is not None:
        say(f"# resumed from {latest} at step {state['global_step']}")
    elif cfg.resume:
        say(f"# --resume: no complete checkpoint in {ckpts.root}; starting from scratch")
    accelerator.init_trackers("finetune", config=config_dict)

    def save() -> Path:
        return ckpts.save(accelerator, state["global_step"], state, config_dict)

    # ---- train
    bar = tqdm(total=total_steps, initial=state["global_step"], disable=not (main_proc and cfg.progress),
               dynamic_ncols=True, unit="step")
    start = time.time()
    model.train()
    running_loss, running_correct, running_seen = 0.0, 0, 0
    batches = StepBatches(n_train, cfg.batch_size, cfg.seed, rank, world)
    while state["global_step"] < total_steps:
        step = state["global_step"]
        epoch, in_epoch, idx = batches(step)
        images = train_images[idx.to(train_images.device)].to(device, non_blocking=True)
        labels = train.labels[idx].to(device)
        if cfg.augment == "light":  # per-sample random crops/flips, seeded by (seed, epoch, step, process)
            x = augment(images, 1, generator=make_generator(cfg.seed, epoch, in_epoch, rank))[0]
        else:
            x = eval_transform(images).to(view_dtype)
        with accelerator.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        state["global_step"] = step + 1
        running_loss += float(loss.detach()) * labels.numel()
        running_correct += int((logits.detach().argmax(dim=1) == labels).sum())
        running_seen += labels.numel()
        bar.update(1)
        bar.set_postfix(loss=f"{running_loss / running_seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2g}")

        epoch_done = (step + 1) % steps_per_epoch == 0
        if epoch_done or step + 1 == total_steps:
            acc = evaluate()
            model.train()
            totals = torch.tensor([running_loss, running_correct, running_seen], dtype=torch.float64, device=device)
            if world > 1:  # training loss / accuracy over every process's augmented batches
                totals = accelerator.reduce(totals, reduction="sum")
            loss_sum, correct, seen = totals.tolist()
            record = {"epoch": round((step + 1) / steps_per_epoch, 4), "step": step + 1,
                      "train_loss": loss_sum / seen, "train_top1": 100.0 * correct / seen,
                      "test_top1": acc["top1"], "test_top5": acc["top5"]}
            state["history"].append(record)
            state["epoch"] = (step + 1) // steps_per_epoch
            accelerator.log(record, step=step + 1)
            if main_proc:
                bar.write(f"# epoch {record['epoch']:g}: loss {record['train_loss']:.4f}, train top-1 "
                          f"{record['train_top1']:.2f}%, test top-1 {acc['top1']:.2f}%, top-5 {acc['top5']:.2f}%")
            running_loss, running_correct, running_seen = 0.0, 0, 0
        if epoch_done or step + 1 == total_steps or (cfg.save_every and (step + 1) % cfg.save_every == 0):
            state["train_seconds"] += time.time() - start
            start = time.time()
            save()
    bar.close()
    state["train_seconds"] += time.time() - start

    # ---- results: JSON, exported backbone, metrics in the source checkpoint
    final = state["history"][-1] if state["history"] else {}
    dataset = cfg.dataset_name or cfg.data
    protocol = (f"full fine-tuning, new linear head: AdamW lr backbone {cfg.lr_backbone:g} / head {cfg.lr_head:g}, "
                f"wd {cfg.weight_decay:g}, {cfg.warmup_epochs:g} warm-up epoch(s) then cosine, "
                f"{state['global_step'] / steps_per_epoch:g} of {cfg.epochs} epochs, batch {cfg.batch_size}, "
                f"label smoothing {cfg.label_smoothing:g}, augmentation {cfg.augment}; train: {cfg.train_split} "
                f"({n_train} images), test: {len(test)} images")
    today = dt.date.today().isoformat()
    records = [{"task": "finetune", "metric": m, "value": round(final[f"test_{m}"], 4), "random_init": None,
                "dataset": dataset, "split": cfg.test_split, "protocol": protocol, "date": today}
               for m in ("top1", "top5") if final]
    summary = {"config": config_dict, "history": state["history"], "records": records,
               "train_seconds": round(state["train_seconds"], 2), "steps": state["global_step"],
               "hardware": hardware_string(device, world), "date": today}
    if main_proc:
        from mvssl_hub.checkpoint import save_pretrained, update_metrics

        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.export and state["global_step"] == schedule_steps:
            from safetensors.torch import save_file

            trained = accelerator.unwrap_model(model)
            clean = from_pretrained(str(ckpt_dir) if ckpt_dir else cfg.model)  # plain BatchNorm, fp32
            clean.load_state_dict({k: v.detach().float().cpu() for k, v in trained.backbone.state_dict().items()})
            export = save_pretrained(clean, run_dir / "export", transforms=src_cfg.get("transforms"),
                                     dataset={"id": cfg.data, "revision": cfg.revision, "split": cfg.train_split,
                                              "fraction": cfg.fraction},
                                     train_config=config_dict, metrics=records)
            save_file({k: v.detach().float().cpu().contiguous() for k, v in trained.head.state_dict().items()},
                      str(run_dir / "head.safetensors"))
            summary["export"] = str(export)
            say(f"# fine-tuned backbone exported to {export}; classifier head in {run_dir / 'head.safetensors'}")
        if ckpt_dir is not None and cfg.write_metrics and records and state["global_step"] == schedule_steps:
            update_metrics(ckpt_dir, records)
            say(f"# finetune metrics written into {ckpt_dir / 'config.json'} and its README.md")
        (run_dir / "finetune_results.json").write_text(json.dumps(summary, indent=2) + "\n")
        say(f"# results saved to {run_dir / 'finetune_results.json'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    run_cli(main)

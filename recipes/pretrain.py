"""Multi-view Barlow Twins / VICReg pretraining (Agrawal et al., NeurIPS 2024), one process or many.

    accelerate launch --num_processes 1 recipes/pretrain.py --config recipes/configs/demo.yaml
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 recipes/pretrain.py --config ... # 2 procs
    python recipes/pretrain.py --config recipes/configs/cifar10_bt_d256_m4.yaml --epochs 20 --data path/

Reads top to bottom: config -> accelerator -> data (decoded once, uint8 in memory) -> model, loss,
optimiser -> resume -> loop (index sampling, views made on the device, forward, loss, backward, step)
-> checkpoints, kNN monitor -> export (safetensors + config.json + card) with metrics and training cost.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

if __package__ in (None, ""):  # `python recipes/pretrain.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.config import ConfigError, config_to_dict, dump_yaml, parse_config, run_cli
from mvssl_hub.device import hardware_string, make_accelerator, peak_memory_mb, place_images
from mvssl_hub.distributed import convert_batchnorm
from mvssl_hub.run_checkpoints import CheckpointManager
from mvssl_hub.trackers import JSONLTracker
from mvssl_hub.training import StepBatches, TrainingClock, lr_factor, make_generator

METHODS = ("barlowtwins", "vicreg")


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. ``batch_size`` is the global number of unique images per step."""

    # data
    data: str = "uoft-cs/cifar10"  # Hub id, .parquet file, parquet folder, imagefolder or save_to_disk folder
    data_name: str | None = None  # the dataset's name in the card and config.json (default: `data`, a Hub id)
    split: str = "train"
    revision: str | None = None
    fraction: float = 1.0  # share of the training images (class-balanced when there are labels)
    limit: int | None = None  # keep only the first `limit` training images (tests, smoke runs)
    image_size: int | None = None  # resize + centre-crop at decode time (needed when sizes differ)
    view_preset: Literal["cifar10", "stl10", "imagenet100"] = "cifar10"
    data_cache: bool = False  # keep resized splits in a memory-mapped file (HF datasets cache or cache_dir)
    cache_dir: str | None = None  # folder of the resized-image cache; setting it turns the cache on
    decode_workers: int = 1  # threads decoding + resizing images while a split is loaded
    streaming: bool = False  # read the training split's parquet lazily (larger than RAM); kNN splits stay in memory
    stream_window: int = 2048  # rows shuffled together when streaming (rounded down to whole global batches)
    stream_workers: int = 2  # DataLoader worker processes decoding the stream
    # kNN monitor: bank = eval_train_split, queries = eval_split (of eval_data, default `data`)
    eval_data: str | None = None
    eval_train_split: str = "train"
    eval_split: str = "test"
    eval_limit: int | None = None  # first images of each kNN split
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every: int = 0  # steps between kNN evaluations during training (0: only before and after)
    knn_every_seconds: float = 0.0  # or: seconds of training time between kNN evaluations (0: off)
    knn_random_init: bool = True  # also evaluate the untrained network (same seed) as the baseline
    # model
    arch: str = "resnet18"
    width: int = 64  # first-stage channels; 64 = torchvision's ResNet
    small_images: bool = True  # 3x3 stride-1 stem, no max-pool
    proj_dim: int = 256
    proj_hidden: int | None = None  # default: proj_dim (the paper's projector)
    proj_layers: int = 2
    # method
    method: Literal["barlowtwins", "vicreg"] = "barlowtwins"
    beta: float | str = "auto"  # a number, or "auto" = recommended_beta(method, proj_dim, num_views)
    loss_form: str = "auto"
    num_views: int = 4
    # optimisation (method.md: Adam 1e-3, wd 1e-6, constant)
    epochs: int = 100
    max_steps: int | None = None  # stop early after this many steps (the schedule still spans `epochs`)
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    seed: int = 0
    # speed
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast where the device is fast at it
    channels_last: bool = True
    compile: bool = False
    cpu: bool | None = None  # None: CPU when no GPU is available
    threads: int = 0  # torch.set_num_threads when > 0
    # run, checkpoints, logging
    output_dir: str = "runs/pretrain"
    save_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    resume: bool = False
    overwrite: bool = False  # without --resume: delete this run's old checkpoints instead of refusing
    max_nan_steps: int = 10  # consecutive non-finite losses before the run stops
    time_budget: float | None = None  # seconds of training before stopping (then save + export)
    clock: Literal["wall", "process"] = "wall"  # process: this process's CPU seconds (fair on a shared machine)
    log_every: int = 10
    tracker: Literal["jsonl", "tensorboard"] = "jsonl"
    progress: bool = True
    export: bool = True
    recipe_version: str = "v1"  # the Hub tag recipes/publish.py gives this run's checkpoint

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, what: str) -> None:
            if not cond:
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r}: {what}")

        need(self.num_views >= 2, "num_views", "multi-view pretraining needs at least 2 views")
        need(0.0 < self.fraction <= 1.0, "fraction", "must be in (0, 1]")
        need(self.limit is None or self.limit >= 1, "limit", "must be >= 1")
        need(self.eval_limit is None or self.eval_limit >= 1, "eval_limit", "must be >= 1")
        need(self.image_size is None or self.image_size >= 8, "image_size", "must be >= 8")
        need(self.width >= 1, "width", "must be >= 1")
        need(self.proj_dim >= 1, "proj_dim", "must be >= 1")
        need(self.proj_layers >= 1, "proj_layers", "must be >= 1")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        need(self.batch_size >= 2, "batch_size", "batch statistics need at least 2 images")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "must be a positive number")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(self.save_every >= 0, "save_every", "must be >= 0")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        need(self.max_nan_steps >= 1, "max_nan_steps", "must be >= 1")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.knn_every >= 0, "knn_every", "must be >= 0")
        need(self.knn_every_seconds >= 0, "knn_every_seconds", "must be >= 0")
        need(self.knn_k >= 1, "knn_k", "must be >= 1")
        need(self.knn_temperature > 0, "knn_temperature", "must be > 0")
        need(self.threads >= 0, "threads", "must be >= 0")
        need(self.decode_workers >= 1, "decode_workers", "must be >= 1")
        need(self.stream_window >= 1, "stream_window", "must be >= 1")
        need(self.stream_workers >= 0, "stream_workers", "must be >= 0")
        need(self.time_budget is None or self.time_budget > 0, "time_budget", "must be > 0 seconds")
        if isinstance(self.beta, str):
            need(self.beta == "auto", "beta", "must be a number >= 0 or 'auto'")
        else:
            need(self.beta >= 0 and math.isfinite(self.beta), "beta", "must be a finite number >= 0 or 'auto'")
        from mvssl_hub.backbones import _RESNET_LAYOUTS

        need(self.arch in _RESNET_LAYOUTS, "arch", f"unknown architecture; known: {sorted(_RESNET_LAYOUTS)}")

    def resolved_beta(self) -> float:
        from mvssl_hub.losses import recommended_beta

        if self.beta == "auto":
            return recommended_beta(self.method, self.proj_dim, self.num_views)
        return float(self.beta)


# Keys that may differ between a run and its resumption without changing the trajectory.
RESUMABLE_CHANGES = {
    "resume", "recipe_version", "max_steps", "time_budget", "save_every", "keep_checkpoints", "log_every",
    "progress", "export", "data_name",
    "knn_every", "knn_every_seconds", "tracker", "threads", "eval_limit", "knn_random_init", "max_nan_steps", "overwrite",
    "data_cache", "cache_dir", "decode_workers", "stream_workers",
}


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses."""


def knn_top1(backbone, bank, queries, cfg: PretrainConfig, transform, batch_size: int, channels_last: bool) -> float:
    """kNN top-1 (percent) of ``backbone`` features: bank/queries are ImageSplits with labels."""
    from mvssl_hub.probes import extract_features, knn_accuracy

    kw = dict(batch_size=batch_size, channels_last=channels_last)
    train_f = extract_features(backbone, bank.images, transform, **kw)
    test_f = extract_features(backbone, queries.images, transform, **kw)
    k = min(cfg.knn_k, len(bank))
    acc = knn_accuracy(train_f, bank.labels, test_f, queries.labels, k=k, temperature=cfg.knn_temperature,
                       num_classes=bank.num_classes, device=next(backbone.parameters()).device)
    return float(acc["top1"])


def main(argv: list[str] | None = None) -> dict:
    """Run the recipe; returns a summary dict (used by the tests)."""
    cfg = parse_config(PretrainConfig, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    from mvssl_hub.data import load_split
    from mvssl_hub.losses import build_loss
    from mvssl_hub.models import build_ssl_model
    from mvssl_hub.views import EvalTransform, MultiViewAugment, get_view_preset

    run_dir = Path(cfg.output_dir)
    log_with = []
    if cfg.tracker == "tensorboard":
        try:
            import tensorboard  # noqa: F401

            log_with.append("tensorboard")
        except ImportError:
            print("tensorboard is not installed: logging to JSONL instead", file=sys.stderr)
    if not log_with:
        log_with.append(JSONLTracker("metrics", run_dir / "logs"))
    accelerator, precision = make_accelerator(cpu=cfg.cpu, precision=cfg.precision, run_dir=run_dir, log_with=log_with)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    main_proc = accelerator.is_main_process
    say = accelerator.print
    if cfg.batch_size % world:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size}: not divisible by the {world} processes")
    per_proc = cfg.batch_size // world
    beta = cfg.resolved_beta()
    config_dict = {**config_to_dict(cfg), "resolved_beta": beta, "precision_used": precision,
                   "num_processes": world, "per_process_batch": per_proc, "global_batch": cfg.batch_size,
                   # what was typed, for the model card; every resolved key is stored beside it
                   "command": shlex.join(["accelerate", "launch", "recipes/pretrain.py",
                                          *(sys.argv[1:] if argv is None else argv)])}
    say(f"# mvssl-hub pretrain: resolved config\n{dump_yaml(cfg)}"
        f"# beta used: {beta:g}; precision: {precision}; processes: {world}; device: {device}; "
        f"global batch {cfg.batch_size} = {world} x {per_proc} per process; threads/process: {torch.get_num_threads()}")
    if device.type == "cpu" and torch.get_num_threads() == 1 and (os.cpu_count() or 1) > world:
        say("# note: torch uses 1 thread per process; `accelerate launch --cpu` or `--threads N` uses more cores")

    # ---- data: decoded once into a uint8 tensor; views are made on the device per step
    t0 = time.time()
    cache = {"cache": cfg.data_cache, "cache_dir": cfg.cache_dir, "decode_workers": cfg.decode_workers}
    with accelerator.main_process_first():  # one process downloads and caches a Hub dataset, the others reuse it
        if cfg.streaming:
            from mvssl_hub.data_stream import StreamingSplit

            train = StreamingSplit(cfg.data, cfg.split, size=cfg.image_size, fraction=cfg.fraction, seed=cfg.seed,
                                   limit=cfg.limit, revision=cfg.revision)
        else:
            train = load_split(cfg.data, cfg.split, fraction=cfg.fraction, seed=cfg.seed, size=cfg.image_size,
                               revision=cfg.revision, limit=cfg.limit, **cache)
        eval_source = cfg.eval_data or cfg.data
        bank = queries = None
        if cfg.eval_split:
            bank = load_split(eval_source, cfg.eval_train_split, size=cfg.image_size, revision=cfg.revision,
                              limit=cfg.eval_limit, **cache)
            queries = load_split(eval_source, cfg.eval_split, size=cfg.image_size, revision=cfg.revision,
                                 limit=cfg.eval_limit, **cache)
    if bank is not None and (bank.labels is None or queries.labels is None):
        say(f"# kNN monitor off: {eval_source} has no labels")
        bank = queries = None
    n_train = len(train)
    if n_train < cfg.batch_size:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size} exceeds the {n_train} training images "
                          f"of {cfg.data} (split {cfg.split}, fraction {cfg.fraction}, limit {cfg.limit})")
    steps_per_epoch = n_train // cfg.batch_size
    schedule_steps = cfg.epochs * steps_per_epoch
    total_steps = min(schedule_steps, cfg.max_steps or schedule_steps)
    stream = train.batches(cfg.batch_size, cfg.seed, rank, world, window=cfg.stream_window,
                           workers=cfg.stream_workers) if cfg.streaming else None
    say(f"# data: {n_train} training images {stream.image_shape if stream else tuple(train.images.shape[1:])} from {cfg.data} [{cfg.split}], "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps planned"
        f"{f' or {cfg.time_budget:g} s of training, whichever comes first' if cfg.time_budget else ''}; kNN: "
        f"{'off' if bank is None else f'{len(bank)} bank / {len(queries)} queries'}; loaded in {time.time() - t0:.1f}s")
    preset = get_view_preset(cfg.view_preset)
    view_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    augment = MultiViewAugment(preset, output_dtype=view_dtype, channels_last=cfg.channels_last)
    eval_transform = EvalTransform(preset)

    # ---- model, loss, optimiser, schedule
    torch.manual_seed(cfg.seed)
    model = build_ssl_model(cfg.arch, small_images=cfg.small_images, width=cfg.width, proj_dim=cfg.proj_dim,
                            proj_hidden=cfg.proj_hidden, proj_layers=cfg.proj_layers)
    if world > 1:  # BatchNorm statistics over the global batch, like the loss
        model = convert_batchnorm(model, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.method, beta, cfg.loss_form, distributed=world > 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, schedule_steps, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    train_model = torch.compile(model) if cfg.compile else model
    bn_buffers = [b for name, b in accelerator.unwrap_model(model).named_buffers() if "running" in name
                  or "num_batches" in name]
    train_images = None if stream else place_images(train.images, device)

    def backbone():
        return accelerator.unwrap_model(model).backbone

    def evaluate() -> float | None:
        if bank is None:
            return None
        return knn_top1(backbone(), bank, queries, cfg, eval_transform, 512, cfg.channels_last)

    # ---- resume
    ckpts = CheckpointManager(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    state = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "images_seen": 0, "nan_skipped": 0,
             "nan_streak": 0, "train_seconds": 0.0, "knn_random_init": None, "knn": None}
    saved, latest = ckpts.start_or_resume(accelerator, config_to_dict(cfg), resume=cfg.resume,
                                          overwrite=cfg.overwrite, resumable=RESUMABLE_CHANGES, log_dir=run_dir / "logs")
    state.update(saved)
    if latest is not None:
        say(f"# resumed from {latest} at step {state['global_step']} (epoch {state['epoch']}, "
            f"step {state['step_in_epoch']} of {steps_per_epoch})")
    elif cfg.resume:
        say(f"# --resume: no complete checkpoint in {ckpts.root}; starting from scratch")

    accelerator.init_trackers("pretrain", config={k: v for k, v in config_dict.items()})
    if state["global_step"] == 0 and cfg.knn_random_init and bank is not None:
        state["knn_random_init"] = evaluate()
        say(f"# kNN top-1 at random init (same seed): {state['knn_random_init']:.2f}%")

    def save() -> Path:
        path = ckpts.save(accelerator, state["global_step"], state, config_dict)
        say(f"# checkpoint: {path}")
        return path

    # ---- train
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=state["global_step"], disable=not (main_proc and cfg.progress),
               dynamic_ncols=True, unit="step")
    clock = TrainingClock(cfg.clock, state["train_seconds"])  # kNN and checkpoint time are not training time
    next_knn = (clock.elapsed() // cfg.knn_every_seconds + 1) * cfg.knn_every_seconds if cfg.knn_every_seconds else None
    window_t, window_imgs = time.time(), 0
    last_ips = 0.0
    stopped_by = "completed"
    batches = StepBatches(n_train, cfg.batch_size, cfg.seed, rank, world)
    train_model.train()
    while state["global_step"] < total_steps:
        step = state["global_step"]
        if stream is not None:  # decoded by DataLoader workers, in an order fixed by (seed, epoch, step)
            epoch, in_epoch, images, _ = stream(step)
            images = images.to(device, non_blocking=True)
        else:
            epoch, in_epoch, idx = batches(step)
            images = train_images[idx.to(train_images.device)].to(device, non_blocking=True)
        # Views: per-sample random parameters from a generator seeded by (seed, epoch, step, process),
        # so a resumed run draws exactly the views the uninterrupted one would have.
        views = augment(images, cfg.num_views, generator=make_generator(cfg.seed, epoch, in_epoch, rank))

        saved_buffers = [b.clone() for b in bn_buffers]
        z = train_model(views)
        ok = torch.isfinite(z).all()
        if world > 1:
            ok = accelerator.reduce(ok.float().reshape(1), reduction="sum") == world
        loss = None
        if bool(ok):
            loss = loss_fn(z.float())
            ok = torch.isfinite(loss)
        if bool(ok):
            accelerator.backward(loss)
            optimizer.step()
            state["nan_streak"] = 0
        else:
            if world > 1:  # DDP expects a backward after each forward: a zero one keeps the processes in step
                accelerator.backward(torch.nan_to_num(z).mul(0).sum())
            with torch.no_grad():  # the skipped forward must not leave its statistics behind
                for b, saved in zip(bn_buffers, saved_buffers):
                    b.copy_(saved)
            state["nan_skipped"] += 1
            state["nan_streak"] += 1
            say(f"# step {step}: non-finite loss, step skipped ({state['nan_streak']} in a row)")
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        state["global_step"] = step + 1
        state["epoch"], state["step_in_epoch"] = divmod(step + 1, steps_per_epoch)
        state["images_seen"] += cfg.batch_size
        window_imgs += cfg.batch_size
        bar.update(1)
        if state["nan_streak"] >= cfg.max_nan_steps:
            bar.close()
            last = ckpts.latest()
            raise NonFiniteLossError(
                f"{state['nan_streak']} consecutive non-finite losses (max_nan_steps={cfg.max_nan_steps}) at step "
                f"{step}: stopping. The last good checkpoint is {last} (not overwritten); lower lr or check the data."
            )

        if (step + 1) % cfg.log_every == 0 or step + 1 == total_steps:
            now = time.time()
            last_ips = window_imgs / max(now - window_t, 1e-9)
            window_t, window_imgs = now, 0
            loss_value = float(loss.detach()) if loss is not None else float("nan")
            values = {"loss": loss_value, "images_per_s": last_ips, "views_per_s": last_ips * cfg.num_views,
                      "lr": scheduler.get_last_lr()[0], "peak_memory_mb": peak_memory_mb(device),
                      "epoch": (step + 1) / steps_per_epoch, "nan_skipped": state["nan_skipped"]}
            accelerator.log(values, step=step + 1)
            bar.set_postfix(loss=f"{loss_value:.4g}", img_s=f"{last_ips:.0f}", lr=f"{values['lr']:.2g}")
        knn_due = bool(cfg.knn_every) and (step + 1) % cfg.knn_every == 0
        if next_knn is not None and clock.elapsed() >= next_knn:
            knn_due, next_knn = True, next_knn + cfg.knn_every_seconds
        if knn_due and step + 1 < total_steps and bank is not None:
            with clock.paused():  # time budgets and time-to-accuracy count training only
                acc = evaluate()
            state["train_seconds"] = clock.elapsed()
            accelerator.log({"knn_top1": acc, "train_seconds": state["train_seconds"]}, step=step + 1)
            say(f"\n# step {step + 1}: kNN top-1 {acc:.2f}% after {state['train_seconds']:.0f}s of training")
            train_model.train()
        out_of_time = cfg.time_budget is not None and clock.elapsed() >= cfg.time_budget
        if world > 1:  # every process must stop at the same step
            out_of_time = bool(accelerator.reduce(torch.tensor([float(out_of_time)], device=device), "sum") > 0)
        if out_of_time and state["global_step"] < total_steps:
            stopped_by = "time_budget"
            break
        if cfg.save_every and state["global_step"] % cfg.save_every == 0 and state["global_step"] < total_steps:
            state["train_seconds"] = clock.elapsed()
            with clock.paused():
                save()
    bar.close()
    if stream is not None:
        stream.close()
    state["train_seconds"] = train_seconds = clock.elapsed()
    images_per_s = (state["images_seen"] / train_seconds) if train_seconds > 0 else 0.0
    say(f"# stopped: {stopped_by} after {state['global_step']} steps ({state['global_step'] / steps_per_epoch:.2f} "
        f"epochs) in {train_seconds:.0f}s of training; {images_per_s:.1f} images/s "
        f"({images_per_s * cfg.num_views:.1f} views/s); non-finite steps skipped: {state['nan_skipped']}")

    # ---- evaluate, checkpoint, export
    if bank is not None:
        state["knn"] = evaluate()
        line = f"# kNN top-1 (k={min(cfg.knn_k, len(bank))}, T={cfg.knn_temperature}): {state['knn']:.2f}%"
        if state["knn_random_init"] is not None:
            line += (f" | random init (same architecture, same seed): {state['knn_random_init']:.2f}% | "
                     f"gain: {state['knn'] - state['knn_random_init']:+.2f} points")
        say(line)
        accelerator.log({"knn_top1": state["knn"], "train_seconds": train_seconds}, step=state["global_step"])
    checkpoint = save()
    export_dir = None
    if cfg.export and main_proc:
        from mvssl_hub.checkpoint import save_pretrained
        from mvssl_hub.models import build_ssl_model as rebuild

        clean = rebuild(cfg.arch, small_images=cfg.small_images, width=cfg.width, proj_dim=cfg.proj_dim,
                        proj_hidden=cfg.proj_hidden, proj_layers=cfg.proj_layers)
        trained = accelerator.unwrap_model(model)
        clean.load_state_dict({k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                               for k, v in trained.state_dict().items()})
        metrics = []
        if state["knn"] is not None:
            metrics.append({
                "task": "knn", "metric": "top1", "value": round(state["knn"], 4),
                "random_init": None if state["knn_random_init"] is None else round(state["knn_random_init"], 4),
                "dataset": cfg.data_name if cfg.eval_data is None and cfg.data_name else eval_source,
                "split": cfg.eval_split,
                "protocol": f"k={min(cfg.knn_k, len(bank))}, T={cfg.knn_temperature}, cosine, 1 centre view; "
                            f"bank: {cfg.eval_train_split} ({len(bank)} images), queries: {len(queries)} images",
            })
        transforms = {"preset": cfg.view_preset, "eval_size": preset.eval_size, "mean": list(preset.mean),
                      "std": list(preset.std)}
        if preset.eval_resize is not None:
            transforms["eval_resize"] = preset.eval_resize
        export_dir = save_pretrained(
            clean, run_dir / "export", method=cfg.method, beta=beta, num_views=cfg.num_views,
            train_config=config_dict,
            dataset={"id": cfg.data_name or cfg.data, "revision": cfg.revision, "split": cfg.split, "fraction": cfg.fraction},
            transforms=transforms, metrics=metrics, include_projector=True,
            training={"hardware": hardware_string(device, world), "wall_clock_s": round(train_seconds, 1),
                      "images_per_s": round(images_per_s, 2), "steps": state["global_step"],
                      "epochs": round(state["global_step"] / steps_per_epoch, 4)},
        )
        say(f"# exported backbone + projector to {export_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"state": state, "checkpoint": checkpoint, "export": export_dir, "stopped_by": stopped_by,
            "images_per_s": images_per_s, "config": config_dict, "num_processes": world}


if __name__ == "__main__":
    run_cli(main)

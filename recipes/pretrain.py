"""Multi-view Barlow Twins / VICReg pretraining (Agrawal et al., NeurIPS 2024), one process or many.

    accelerate launch --num_processes 1 recipes/pretrain.py --config recipes/configs/demo.yaml
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 recipes/pretrain.py --config ... # 2 procs
    python recipes/pretrain.py --config recipes/configs/cifar10_bt_d256_m4.yaml --epochs 20 --data path/
    python recipes/pretrain.py --help

Reads top to bottom: config -> accelerator -> data (decoded once, uint8 in memory, or streamed) -> model,
loss, optimiser -> resume -> loop (index sampling, views made on the device, forward, loss, backward, one
finiteness decision, ``guard.step(optimizer, loss)``) -> run states, kNN monitor -> export.

The run folder (``--output_dir``) holds the run states (``run_states/step-*``: what ``--resume`` continues from)
and the checkpoint (``export/``: safetensors + config.json + card + curves, what ``from_pretrained`` loads and
``recipes/publish.py`` pushes).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

if __package__ in (None, ""):  # `python recipes/pretrain.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub import losses
from mvssl_hub.backbones import ARCHITECTURES, build_backbone
from mvssl_hub.data.batches import MemoryStepSource, StreamStepSource
from mvssl_hub.data.sampling import make_generator
from mvssl_hub.data.splits import load_split
from mvssl_hub.device import available_memory_bytes, hardware_string, peak_memory_mb
from mvssl_hub.distributed import convert_batchnorm
from mvssl_hub.errors import ConfigError, UnknownModelError
from mvssl_hub.eval.monitor import monitor_model
from mvssl_hub.eval.probes import knn_evaluate
from mvssl_hub.hub.format import save_pretrained, tidy_interrupted_save
from mvssl_hub.hub.records import (
    dataset_name,
    dataset_record,
    knn_protocol,
    metric_record,
    portable_config,
    training_record,
    transforms_record,
)
from mvssl_hub.hub.schema import MAX_IMAGE_SIZE, MAX_PROJECTOR_DIM, MAX_PROJECTOR_LAYERS, MAX_WIDTH
from mvssl_hub.models import build_ssl_model
from mvssl_hub.timm_backbone import is_timm_arch, parse_timm_kwargs
from mvssl_hub.train.backends import apply_memory_format, export_copy, make_adam, make_lars
from mvssl_hub.train.config import (
    FRACTION,
    above,
    as_config_error,
    at_least,
    at_most,
    between,
    check_ranges,
    config_defaults,
    config_to_dict,
    dump_yaml,
    finite,
    parse_config,
    run_cli,
)
from mvssl_hub.train.loop import LoopFrame, NonFiniteLossError, save_run_state  # noqa: F401 (the error the loop raises)
from mvssl_hub.train.plots import plot_training_curves
from mvssl_hub.train.run_state import RunStateManager
from mvssl_hub.train.schedule import Cadence, TrainingClock, lr_factor, schedule_position
from mvssl_hub.train.startup import Run, open_run_state, start_run
from mvssl_hub.train.step_guard import StepGuard
from mvssl_hub.views import EvalTransform, MultiViewAugment, get_view_preset
from mvssl_hub.vocabulary import LOSS_FORMS

MAX_TRAIN_VIEWS = 256  # views per image in one step (the paper uses up to 8); memory is checked apart


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. ``batch_size`` is the global number of unique images per step."""

    # data
    data: str = "uoft-cs/cifar10"  # Hub id, .parquet file, parquet folder, imagefolder or save_to_disk folder
    data_name: str | None = None  # the dataset's name in the card and config.json (default: `data`, a Hub id)
    split: str = "train"
    revision: str | None = None
    fraction: Annotated[float, FRACTION] = 1.0  # share of the training images (class-balanced when there are labels)
    limit: Annotated[int | None, at_least(1)] = None  # keep only the first `limit` training images (tests, smoke runs)
    image_size: Annotated[int | None, at_least(8), at_most(MAX_IMAGE_SIZE)] = None  # resize + centre-crop at decode time (needed when sizes differ)
    view_preset: Literal["cifar10", "stl10", "imagenet100"] = "cifar10"
    data_cache: bool = False  # keep resized splits in a memory-mapped file (HF datasets cache or cache_dir)
    cache_dir: str | None = None  # folder of the resized-image cache; setting it turns the cache on
    decode_workers: Annotated[int, at_least(1)] = 1  # threads decoding + resizing images while a split is loaded
    streaming: bool = False  # read the training split's parquet lazily (larger than RAM); kNN splits stay in memory
    stream_window: Annotated[int, at_least(1)] = 2048  # rows shuffled together when streaming (rounded down to whole global batches)
    stream_workers: Annotated[int, at_least(0)] = 2  # DataLoader worker processes decoding the stream
    # kNN monitor: bank = eval_train_split, queries = eval_split (of eval_data, default `data`)
    eval_data: str | None = None
    eval_train_split: str = "train"
    eval_split: str = "test"
    eval_limit: Annotated[int | None, at_least(1)] = None  # first images of each kNN split
    knn_k: Annotated[int, at_least(1)] = 200
    knn_temperature: Annotated[float, above(0)] = 0.1
    knn_every: Annotated[int, at_least(0)] = 0  # steps between kNN evaluations during training (0: only before and after)
    knn_every_seconds: Annotated[float, at_least(0)] = 0.0  # or: seconds of training time between kNN evaluations (0: off)
    knn_random_init: bool = True  # also evaluate the untrained network (same seed) as the baseline
    monitors: bool = True  # with each kNN: RankMe, alpha-ReQ, LiDAR (no labels) on 1,000 held-out images
    monitors_max_share: Annotated[float, FRACTION] = 0.05  # between the first and last kNN they skip points to cost at most this share
    # model
    arch: str = "resnet18"  # resnet10/18/34/50, or timm:<name> (any timm model; pip install "mvssl-hub[timm]")
    arch_kwargs: str = ""  # timm:<name> only: its keyword arguments as JSON, e.g. '{"img_size": 32, "patch_size": 4}'
    width: Annotated[int, between(1, MAX_WIDTH, "(64 is torchvision's network)")] = 64  # ResNets: first-stage channels; 64 = torchvision's ResNet
    small_images: bool = True  # ResNets: 3x3 stride-1 stem, no max-pool
    proj_dim: Annotated[int, between(1, MAX_PROJECTOR_DIM)] = 256
    proj_hidden: Annotated[int | None, between(1, MAX_PROJECTOR_DIM)] = None  # default: proj_dim (the paper's projector)
    proj_layers: Annotated[int, between(1, MAX_PROJECTOR_LAYERS)] = 2
    # method
    method: Literal["barlowtwins", "vicreg"] = "barlowtwins"
    beta: float | str = "auto"  # a number, or "auto" = recommended_beta(method, proj_dim, num_views)
    loss_form: str = "auto"  # barlowtwins: auto, classic, mean, all_pairs; vicreg: auto, classic, leave_one_out, all_pairs
    num_views: Annotated[int, at_least(2, "multi-view pretraining needs at least 2 views"), at_most(MAX_TRAIN_VIEWS)] = 4
    # optimisation (Agrawal et al. 2024: Adam 1e-3, wd 1e-6, constant; Zbontar et al. 2021: LARS)
    optimizer: Literal["adam", "lars"] = "adam"  # lars: timm's Lars; biases and BN parameters keep lr_bias, no decay, no adaptation
    lr_bias: Annotated[float | None, finite(lambda v: v > 0, "must be a positive number")] = None  # lars: learning rate of biases and BN parameters (default: lr)
    momentum: Annotated[float, between(0, 0.999)] = 0.9  # lars: SGD momentum
    epochs: Annotated[int, at_least(1)] = 100
    max_steps: Annotated[int | None, at_least(1)] = None  # stop early after this many steps (the schedule still spans `epochs`)
    batch_size: Annotated[int, at_least(2, "batch statistics need at least 2 images")] = 256
    lr: Annotated[float, finite(lambda v: v > 0, "must be a positive number")] = 1e-3
    weight_decay: Annotated[float, at_least(0)] = 1e-6
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: Annotated[int, at_least(0)] = 0
    schedule_time: bool = False  # with time_budget: warm-up and decay span the budget too (by the clock), whichever ends first
    seed: int = 0
    # speed
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: accelerate's --mixed_precision, else bf16 where native
    channels_last: bool = True
    compile: bool = False
    cpu: bool | None = None  # None: CPU when no GPU is available
    threads: Annotated[int, at_least(0)] = 0  # torch.set_num_threads when > 0
    deterministic: bool = False  # deterministic cuDNN/cuBLAS kernels (bitwise resume on a GPU), no autotuning
    dist_timeout_minutes: Annotated[float, above(0)] = 10.0  # a collective waits this long for a machine gone silent, then the run stops naming it (start-up: >= 60)
    # run folder, run states, logging
    output_dir: str = "runs/pretrain"  # the run folder: run states in run_states/, the checkpoint in export/
    run_state_every: Annotated[int, at_least(0)] = 500  # steps between run states (0: only at the end)
    run_state_every_seconds: Annotated[float, finite(lambda v: v >= 0, "must be a finite number >= 0")] = 0.0  # or: seconds of training time between run states (0: off); bounds a kill's loss
    keep_run_states: Annotated[int, at_least(1)] = 2  # the newest run states kept; older ones are deleted
    resume: bool = False  # continue from the newest complete run state in run_states/
    overwrite: bool = False  # without --resume: delete this run's old run states instead of refusing
    max_nan_steps: Annotated[int, at_least(1)] = 10  # consecutive non-finite losses before the run stops
    time_budget: Annotated[float | None, above(0, "must be > 0 seconds")] = None  # seconds of training before stopping (then save + export)
    clock: Literal["wall", "process"] = "wall"  # process: this process's CPU seconds (fair on a shared machine)
    log_every: Annotated[int, at_least(1)] = 10
    tracker: Literal["jsonl", "tensorboard"] = "jsonl"
    progress: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # verbosity of the recipe's log
    export: bool = True  # write the checkpoint (backbone + projector) to export/ at the end
    recipe_version: str = "v1"  # the Hub tag recipes/publish.py gives this run's checkpoint

    # the flags' names before mvssl-hub 0.2.0, still accepted until then (mvssl_hub.train.config)
    OLD_NAMES = {"save_every": "run_state_every", "save_every_seconds": "run_state_every_seconds",
                 "keep_checkpoints": "keep_run_states"}

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, what: str) -> None:
            if not cond:
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r}: {what}")

        check_ranges(self)  # every range declared beside its field; below, the checks that span several keys
        if isinstance(self.beta, str):
            need(self.beta == "auto", "beta", "must be a number >= 0 or 'auto'")
        else:
            need(self.beta >= 0 and math.isfinite(self.beta), "beta", "must be a finite number >= 0 or 'auto'")
        need(self.arch in ARCHITECTURES or is_timm_arch(self.arch), "arch",
             f"unknown architecture; known: {list(ARCHITECTURES)} or timm:<name>")
        need(is_timm_arch(self.arch) or not self.arch_kwargs.strip(), "arch_kwargs",
             f"only timm:<name> architectures take arch_kwargs (arch is {self.arch!r})")
        if is_timm_arch(self.arch):  # the name and kwargs, checked before any data is read (timm on the meta device)
            try:
                kwargs = parse_timm_kwargs(self.arch_kwargs)
                with torch.device("meta"):
                    build_backbone(self.arch, arch_kwargs=kwargs)
            except (ImportError, UnknownModelError, ValueError) as e:
                key = "arch_kwargs" if isinstance(e, ConfigError) and self.arch_kwargs.strip() else "arch"
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r}: {e}") from None
        need(self.loss_form in LOSS_FORMS[self.method], "loss_form", f"not a {self.method} form; known: "
             f"{', '.join(LOSS_FORMS[self.method])}")
        need(not self.schedule_time or self.time_budget is not None, "schedule_time",
             "needs a time_budget for the schedule to span")
        need(self.optimizer == "lars" or self.lr_bias is None, "lr_bias", "only optimizer 'lars' takes lr_bias")
        if self.optimizer == "lars" and importlib.util.find_spec("timm") is None:
            raise ConfigError("config key 'optimizer' = 'lars': uses timm's Lars; pip install 'mvssl-hub[timm]'")

    def resolved_beta(self) -> float:
        if self.beta == "auto":
            return losses.recommended_beta(self.method, self.proj_dim, self.num_views)
        return float(self.beta)


# Keys that may differ between a run and its resumption without changing the trajectory.
RESUMABLE_CHANGES = {
    "resume", "recipe_version", "max_steps", "time_budget", "run_state_every", "run_state_every_seconds",
    "keep_run_states", "log_every",
    "output_dir",  # a run folder may move between its run states
    "progress", "export", "data_name", "log_level",
    "knn_every", "knn_every_seconds", "tracker", "threads", "eval_limit", "knn_random_init", "max_nan_steps",
    "overwrite", "data_cache", "cache_dir", "decode_workers", "stream_workers", "monitors",
    "monitors_max_share", "dist_timeout_minutes",
}


@dataclass
class Data:
    """The training split (in memory or streamed), the kNN bank and queries, and the step plan."""

    train: Any
    bank: Any
    queries: Any
    steps_per_epoch: int
    schedule_steps: int
    total_steps: int
    stream: Any = None


@dataclass
class Trainer:
    """Model, optimiser, schedule, loss, views and the per-step finiteness guard."""

    model: Any
    train_model: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    augment: MultiViewAugment
    eval_transform: EvalTransform
    guard: StepGuard
    clock: TrainingClock  # seconds of training (kNN and saves paused out); with schedule_time the schedule reads it
    batches: Any = None  # step -> StepBatch (mvssl_hub.data.batches): in memory or streamed, one interface
    state: dict[str, Any] = field(default_factory=dict)

    def backbone(self, accelerator: Any) -> torch.nn.Module:
        return accelerator.unwrap_model(self.model).backbone


def fresh_state() -> dict[str, Any]:
    """A run's counters before its first step (a resumed run's saved state replaces them)."""
    return {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "images_seen": 0, "nan_skipped": 0,
            "nan_streak": 0, "train_seconds": 0.0, "knn_random_init": None, "knn": None}


def check_fits(cfg: PretrainConfig, device: torch.device) -> None:
    """ConfigError before anything large is allocated when the model and one step's views cannot fit in the
    device's free memory: the network is built on the meta device (shapes only) to count its parameters."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in new_model(cfg).parameters())
    side = cfg.image_size or 32
    need = (16 * n_params  # fp32 weights, gradients and Adam's two moments
            + 8 * cfg.proj_dim ** 2  # the d x d cross-correlation and its gradient
            + 4 * cfg.num_views * cfg.batch_size * 3 * side * side)  # one step's views
    free = available_memory_bytes(device)
    if free is not None and need > free:
        arch = cfg.arch if is_timm_arch(cfg.arch) else f"{cfg.arch} width {cfg.width}"
        raise ConfigError(f"{arch}, proj_dim {cfg.proj_dim}, {cfg.num_views} views x batch {cfg.batch_size}: {n_params / 1e6:,.0f} M parameters need at least {need / 2**30:.1f} GiB "
                          f"before activations; {device} has {free / 2**30:.1f} GiB free")


def start(cfg: PretrainConfig, argv: list[str] | None) -> Run:
    """The accelerator and the log; the resolved config printed and kept with every run state."""
    run = start_run(
        name="pretrain", output_dir=cfg.output_dir, log_file="metrics", log_level=cfg.log_level, threads=cfg.threads,
        cpu=cfg.cpu, precision=cfg.precision, dist_timeout_minutes=cfg.dist_timeout_minutes,
        batch_size=cfg.batch_size, deterministic=cfg.deterministic,
        extra_trackers=("tensorboard",) if cfg.tracker == "tensorboard" else ())
    world, typed = run.world, sys.argv[1:] if argv is None else argv
    run.config = {**config_to_dict(cfg), "resolved_beta": cfg.resolved_beta(), "precision_used": run.precision,
                  "num_processes": world, "per_process_batch": cfg.batch_size // world, "global_batch": cfg.batch_size,
                  "command": shlex.join(["accelerate", "launch", "recipes/pretrain.py", *typed])}  # as typed
    run.say(f"# mvssl-hub pretrain: resolved config\n{dump_yaml(cfg)}"
            f"# beta used: {cfg.resolved_beta():g}; precision: {run.precision}; processes: {world}; device: "
            f"{run.device}; global batch {cfg.batch_size} = {world} x {cfg.batch_size // world} per process; "
            f"threads/process: {torch.get_num_threads()}")
    if run.device.type == "cpu" and torch.get_num_threads() == 1 and (os.cpu_count() or 1) > world:
        run.say("# note: torch uses 1 thread per process; `accelerate launch --cpu` or `--threads N` uses more cores")
    return run


def load_data(cfg: PretrainConfig, run: Run) -> Data:
    """Decode once (or stream) the training split; the kNN bank and queries stay in memory."""
    t0 = time.time()
    kw = {"size": cfg.image_size, "revision": cfg.revision, "cache": cfg.data_cache, "cache_dir": cfg.cache_dir,
          "decode_workers": cfg.decode_workers, "progress": cfg.progress and run.accelerator.is_main_process}
    with run.accelerator.main_process_first(), as_config_error("data", cfg.data):  # one process downloads
        if cfg.streaming:
            from mvssl_hub.data.stream import StreamingSplit  # parquet readers only when streaming

            train = StreamingSplit(cfg.data, cfg.split, size=cfg.image_size, fraction=cfg.fraction, seed=cfg.seed,
                                   limit=cfg.limit, revision=cfg.revision)
        else:
            train = load_split(cfg.data, cfg.split, fraction=cfg.fraction, seed=cfg.seed, limit=cfg.limit, **kw)
        bank = queries = None
        if cfg.eval_split:  # the kNN monitor's labelled splits; --eval_split '' turns it off
            source = cfg.eval_data or cfg.data
            with as_config_error("eval_split", cfg.eval_split):
                bank = load_split(source, cfg.eval_train_split, limit=cfg.eval_limit, **kw)
                queries = load_split(source, cfg.eval_split, limit=cfg.eval_limit, **kw)
    if bank is not None and (bank.labels is None or queries.labels is None):
        run.say(f"# kNN monitor off: {cfg.eval_data or cfg.data} has no labels")
        bank = queries = None
    if len(train) < cfg.batch_size:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size} exceeds the {len(train)} training images "
                          f"of {cfg.data} (split {cfg.split}, fraction {cfg.fraction}, limit {cfg.limit})")
    steps_per_epoch = len(train) // cfg.batch_size
    schedule_steps = cfg.epochs * steps_per_epoch
    stream = None
    if cfg.streaming:
        stream = train.batches(cfg.batch_size, cfg.seed, run.accelerator.process_index, run.world,
                               window=cfg.stream_window, workers=cfg.stream_workers)
    data = Data(train, bank, queries, steps_per_epoch, schedule_steps,
                min(schedule_steps, cfg.max_steps or schedule_steps), stream)
    shape = stream.image_shape if stream else tuple(train.images.shape[1:])
    budget = f" or {cfg.time_budget:g} s of training ({cfg.clock} clock), whichever comes first" if cfg.time_budget else ""
    knn = "off" if bank is None else f"{len(bank)} bank / {len(queries)} queries"
    run.say(f"# data: {len(train)} training images {shape} from {cfg.data} [{cfg.split}], {steps_per_epoch} "
            f"steps/epoch, {data.total_steps} steps planned{budget}; kNN: {knn}; loaded in {time.time() - t0:.1f}s")
    return data


def new_model(cfg: PretrainConfig) -> torch.nn.Module:
    """The untrained SSL model (backbone + projector) the config describes."""
    backbone = ({"arch_kwargs": parse_timm_kwargs(cfg.arch_kwargs)} if is_timm_arch(cfg.arch)
                else {"small_images": cfg.small_images, "width": cfg.width})
    return build_ssl_model(cfg.arch, proj_dim=cfg.proj_dim, proj_hidden=cfg.proj_hidden,
                           proj_layers=cfg.proj_layers, **backbone)


def model_from_config(config: dict[str, Any]) -> torch.nn.Module:
    """The untrained model of a saved run config (a run state's ``run_config.json``): for
    ``mvssl_hub.train.run_state.load_run_state_model`` and the studies that evaluate run states."""
    names = {f.name for f in fields(PretrainConfig)}
    return new_model(PretrainConfig(**{k: v for k, v in config.items() if k in names}))


def build(cfg: PretrainConfig, run: Run, data: Data) -> Trainer:
    """Model (global-batch BN across processes), loss, Adam or LARS, schedule, views; wrapped by accelerate."""
    torch.manual_seed(cfg.seed)
    model = new_model(cfg)
    if run.world > 1:  # BatchNorm statistics over the global batch, like the loss
        model = convert_batchnorm(model, run.device)
    # channels_last is faster on every CPU kind measured, except where a oneDNN kernel fault meets the network
    # (narrow strided 1x1 convolutions: wrong gradients or a hang); there the run goes contiguous.
    channels_last = apply_memory_format(model, run.device, cfg.channels_last)
    if cfg.optimizer == "lars":  # Barlow Twins as published: biases and BN apart (lr_bias, no decay)
        optimizer = make_lars(model, cfg.lr, cfg.weight_decay, lr_bias=cfg.lr_bias, momentum=cfg.momentum)
    else:
        optimizer = make_adam(model.parameters(), cfg.lr, cfg.weight_decay, run.device)
    clock = TrainingClock(cfg.clock)  # train() restarts it at the run's training seconds so far
    budget = cfg.time_budget if cfg.schedule_time else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        schedule_position(s, data.schedule_steps, clock.elapsed(), budget), data.schedule_steps,
        warmup_steps=cfg.warmup_steps, schedule=cfg.schedule))
    model, optimizer, scheduler = run.accelerator.prepare(model, optimizer, scheduler)
    bn_buffers = [b for name, b in run.accelerator.unwrap_model(model).named_buffers()
                  if "running" in name or "num_batches" in name]
    preset = get_view_preset(cfg.view_preset)
    if data.stream is None:  # rows on the device when they fit, else gathered into pinned buffers
        batches = MemoryStepSource(data.train.images, None, cfg.batch_size, cfg.seed, run.device,
                                   run.accelerator.process_index, run.world)
    else:  # decoded by DataLoader workers, in an order fixed by (seed, epoch, step)
        batches = StreamStepSource(data.stream, run.device)
    return Trainer(
        model=model, train_model=torch.compile(model) if cfg.compile else model, optimizer=optimizer,
        scheduler=scheduler, loss_fn=losses.build_loss(cfg.method, cfg.resolved_beta(), cfg.loss_form,
                                                       distributed=run.world > 1),
        augment=MultiViewAugment(preset, output_dtype=run.view_dtype, channels_last=channels_last),
        eval_transform=EvalTransform(preset), guard=StepGuard(optimizer, bn_buffers, distributed=run.world > 1),
        clock=clock, batches=batches, state=fresh_state(),
    )


def monitors_affordable(spent: float, last_cost: float, train_seconds: float, max_share: float) -> bool:
    """Whether the label-free monitors may run at this kNN point: yes while their total cost, this run
    included (estimated by the last run's cost), stays within ``max_share`` of the training time so far."""
    return spent + last_cost <= max_share * train_seconds


def knn(cfg: PretrainConfig, run: Run, data: Data, trainer: Trainer, always_monitor: bool = True) -> float | None:
    """kNN top-1 (%) of the backbone's features on the held-out bank / queries (None without labels); with
    ``monitors``, the label-free measures of the same moment go to the log and ``trainer.state``. Between the
    first and the last point (``always_monitor=False``) the monitors run only while they stay affordable."""
    if data.bank is None:
        return None
    result = knn_evaluate(trainer.backbone(run.accelerator), data.bank, data.queries, trainer.eval_transform,
                          k=min(cfg.knn_k, len(data.bank)), temperature=cfg.knn_temperature,
                          channels_last=cfg.channels_last, progress=cfg.progress and run.accelerator.is_main_process)
    state = trainer.state
    affordable = always_monitor or monitors_affordable(state.get("monitor_seconds", 0.0),
                                                       state.get("monitor_last_seconds", 0.0),
                                                       state["train_seconds"], cfg.monitors_max_share)
    if cfg.monitors and not affordable:
        state["monitors_skipped"] = state.get("monitors_skipped", 0) + 1
    if cfg.monitors and affordable and run.accelerator.is_main_process:  # a fixed sample (first queries, 4 views)
        t0 = time.perf_counter()
        report = monitor_model(run.accelerator.unwrap_model(trainer.model), data.queries.images[:1000],
                               trainer.augment, num_views=4, seed=cfg.seed, channels_last=cfg.channels_last)
        seconds = time.perf_counter() - t0  # its cost against training time: the overhead a user pays
        state["monitor_seconds"] = state.get("monitor_seconds", 0.0) + seconds
        state["monitor_last_seconds"] = seconds
        state["monitors"] = report.to_record()
        run.accelerator.log({**report.values(), "monitor_seconds": seconds}, step=trainer.state["global_step"])
    trainer.train_model.train()
    return result


def resume(cfg: PretrainConfig, run: Run, data: Data, trainer: Trainer) -> RunStateManager:
    """Restore the newest complete run state (--resume), or start clean; the log keeps no step twice."""
    trainer.state = fresh_state()
    run_states, saved, latest = open_run_state(
        run.accelerator, name="pretrain", output_dir=cfg.output_dir, log_file="metrics", config=config_to_dict(cfg),
        keep=cfg.keep_run_states, resume=cfg.resume, overwrite=cfg.overwrite, resumable=RESUMABLE_CHANGES,
        defaults=config_defaults(PretrainConfig), max_step=data.schedule_steps, tidy=tidy_interrupted_save,
        tracker_config=run.config)
    trainer.state.update(saved)
    trainer.guard.load_counts(trainer.state["nan_skipped"], trainer.state["nan_streak"])
    if latest is not None:
        run.say(f"# resumed from {latest} at step {trainer.state['global_step']} (epoch {trainer.state['epoch']}, "
                f"step {trainer.state['step_in_epoch']} of {data.steps_per_epoch})")
    elif cfg.resume:
        run.say(f"# --resume: no complete run state in {run_states.root}; starting from scratch")
    return run_states


def train_step(cfg: PretrainConfig, run: Run, trainer: Trainer, step: int) -> torch.Tensor:
    """One optimisation step on the batch of step ``step``: M views of each image, forward, loss, backward, the
    guarded update and the schedule. Returns the loss (a 0-d tensor, not synchronised). The benchmarks time
    this very function, so that what they measure is what the recipe runs."""
    optimizer = trainer.optimizer
    epoch, in_epoch, images, _ = trainer.batches(step)
    # Views: per-sample random parameters from a generator seeded by (seed, epoch, step, process),
    # so a resumed run draws exactly the views the uninterrupted one would have.
    views = trainer.augment(images, cfg.num_views, generator=make_generator(cfg.seed, epoch, in_epoch,
                                                                             run.accelerator.process_index))
    trainer.guard.before_forward()
    loss = trainer.loss_fn(trainer.train_model(views).float())
    run.accelerator.backward(loss)  # every step, finite or not: all processes issue the same collectives
    trainer.guard.step(optimizer, loss)  # optimizer.step() unless the loss is non-finite: one decision, no change
    optimizer.zero_grad(set_to_none=True)
    trainer.scheduler.step()
    return loss


def train(cfg: PretrainConfig, run: Run, data: Data, trainer: Trainer, run_states: RunStateManager) -> str:
    """The loop; returns why it stopped ("completed" or "time_budget"). State lives in ``trainer.state``; the
    frame (mvssl_hub.train.loop) keeps the bar, the clock, the time budget and the run states' cadence."""
    state, guard = trainer.state, trainer.guard
    with LoopFrame(run, state, run_states, total_steps=data.total_steps, clock=trainer.clock,
                   time_budget=cfg.time_budget, run_state_every=cfg.run_state_every,
                   run_state_every_seconds=cfg.run_state_every_seconds, progress=cfg.progress) as frame:
        log_cadence = Cadence(steps=cfg.log_every)
        knn_cadence = Cadence(steps=cfg.knn_every, seconds=cfg.knn_every_seconds, clock=trainer.clock, aligned=True)
        window = Throughput()
        trainer.train_model.train()
        while frame.running():
            loss = train_step(cfg, run, trainer, state["global_step"])
            done = frame.advance()
            state["epoch"], state["step_in_epoch"] = divmod(done, data.steps_per_epoch)
            state["images_seen"] += cfg.batch_size
            window.images += cfg.batch_size
            log_now = log_cadence.due(done) or done == data.total_steps
            if log_now or not guard.device_skip:  # free on the host path; one read on the device path
                frame.count_skipped(guard, cfg.max_nan_steps)
            if log_now:
                log_step(cfg, run, data, trainer, frame, loss, window.per_second())
            if knn_cadence.due(done) and frame.running() and data.bank is not None:
                knn_cadence.done()
                with frame.paused():  # time budgets and time-to-accuracy count training only
                    top1 = knn(cfg, run, data, trainer, always_monitor=False)
                run.accelerator.log({"knn_top1": top1, "train_seconds": state["train_seconds"]}, step=done)
                run.say(f"\n# step {done}: kNN top-1 {top1:.2f}% after {state['train_seconds']:.0f}s of training")
            if frame.out_of_time() and frame.running():  # every process stops at the same step
                return "time_budget"
            if frame.save_due():
                frame.save()
    return "completed"


class Throughput:
    """Images per second of wall time since the last reading."""

    def __init__(self) -> None:
        self.since, self.images = time.time(), 0

    def per_second(self) -> float:
        now = time.time()
        rate = self.images / max(now - self.since, 1e-9)
        self.since, self.images = now, 0
        return rate


def log_step(cfg: PretrainConfig, run: Run, data: Data, trainer: Trainer, frame: LoopFrame, loss: torch.Tensor,
             images_per_s: float) -> None:
    """The metrics of the step just taken, to the trackers and the progress bar (reads the loss: one sync)."""
    done = trainer.state["global_step"]
    values = {"loss": float(loss.detach()), "images_per_s": images_per_s, "views_per_s": images_per_s * cfg.num_views,
              "lr": trainer.scheduler.get_last_lr()[0], "peak_memory_mb": peak_memory_mb(run.device),
              "epoch": done / data.steps_per_epoch, "nan_skipped": trainer.state["nan_skipped"],
              "train_seconds": trainer.clock.elapsed()}
    run.accelerator.log(values, step=done)
    frame.bar.set_postfix(loss=f"{values['loss']:.4g}", img_s=f"{images_per_s:.0f}", lr=f"{values['lr']:.2g}")


def export(cfg: PretrainConfig, run: Run, data: Data, trainer: Trainer) -> Path:
    """The checkpoint: backbone + projector in ``<output_dir>/export`` (safetensors, config.json with metrics, card,
    curves)."""
    state, seconds = trainer.state, trainer.state["train_seconds"]
    clean = export_copy(run.accelerator.unwrap_model(trainer.model), new_model(cfg))  # plain BatchNorm, fp32
    metrics = []
    if state["knn"] is not None:
        name = dataset_name(cfg.eval_data or cfg.data, None if cfg.eval_data else cfg.data_name)
        protocol = knn_protocol(k=min(cfg.knn_k, len(data.bank)), temperature=cfg.knn_temperature,
                                bank_split=cfg.eval_train_split, bank_size=len(data.bank), query_size=len(data.queries))
        metrics.append(metric_record("knn", "top1", state["knn"], state["knn_random_init"], dataset=name,
                                     split=cfg.eval_split, protocol=protocol))
    run_dir = Path(cfg.output_dir)
    curves = plot_training_curves(run_dir / "logs" / "metrics.jsonl", run_dir / "logs" / "training_curves.png",
                                  title=f"{cfg.method}, {cfg.arch}" + ("" if is_timm_arch(cfg.arch) else f" width {cfg.width}")
                                  + f", {cfg.num_views} views, d={cfg.proj_dim}",
                                  random_init_knn=state["knn_random_init"])
    return save_pretrained(
        clean, run_dir / "export", method=cfg.method, beta=cfg.resolved_beta(), num_views=cfg.num_views,
        train_config=portable_config(run.config, data_name=cfg.data_name), include_projector=True, metrics=metrics,
        monitors=state.get("monitors"),
        dataset=dataset_record(cfg.data, name=cfg.data_name, revision=cfg.revision, split=cfg.split,
                               fraction=cfg.fraction),
        transforms=transforms_record(cfg.view_preset, get_view_preset(cfg.view_preset)),
        training=training_record(hardware=hardware_string(run.device, run.world), seconds=seconds,
                                 images_per_s=state["images_seen"] / seconds if seconds > 0 else 0.0,
                                 steps=state["global_step"], epochs=state["global_step"] / data.steps_per_epoch),
        figures={"training_curves.png": curves} if curves is not None else None,
    )


def setup(argv: list[str] | None = None) -> tuple[PretrainConfig, Run, Data, Trainer]:
    """Everything before the first step, from a command line: config, accelerator, data, model and optimiser.
    ``main`` starts here, and so do the benchmarks that time the recipe's own step (``train_step``)."""
    cfg = parse_config(PretrainConfig, argv, prog="recipes/pretrain.py", summary=__doc__.split("\n\n")[0])
    if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
        raise ConfigError(f"config key 'output_dir' = {cfg.output_dir!r}: is a file, not a folder")
    if cfg.cpu or not torch.cuda.is_available():  # every process sees the same host memory; a GPU is checked by
        check_fits(cfg, torch.device("cpu"))       # its own process once placed (no context on GPU 0 from all)
    run = start(cfg, argv)
    data = load_data(cfg, run)
    return cfg, run, data, build(cfg, run, data)


def main(argv: list[str] | None = None) -> dict:
    """Run the recipe; returns a summary dict (used by the tests)."""
    cfg, run, data, trainer = setup(argv)
    run_states = resume(cfg, run, data, trainer)
    state = trainer.state
    if state["global_step"] == 0 and cfg.knn_random_init and data.bank is not None:
        state["knn_random_init"] = knn(cfg, run, data, trainer)  # the same network untrained: the baseline
        run.say(f"# kNN top-1 at random init (same seed): {state['knn_random_init']:.2f}%")
        run.accelerator.log({"knn_random_init": state["knn_random_init"], "train_seconds": 0.0}, step=0)

    stopped_by = train(cfg, run, data, trainer, run_states)
    trainer.batches.close()
    seconds = state["train_seconds"]
    images_per_s = state["images_seen"] / seconds if seconds > 0 else 0.0
    run.say(f"# stopped: {stopped_by} after {state['global_step']} steps "
            f"({state['global_step'] / data.steps_per_epoch:.2f} epochs) in {seconds:.0f}s of training; "
            f"{images_per_s:.1f} images/s ({images_per_s * cfg.num_views:.1f} views/s); non-finite steps "
            f"skipped: {state['nan_skipped']}")

    if data.bank is not None:  # the final score, beside the same network at random init
        state["knn"] = knn(cfg, run, data, trainer)
        line = f"# kNN top-1 (k={min(cfg.knn_k, len(data.bank))}, T={cfg.knn_temperature}): {state['knn']:.2f}%"
        if state["knn_random_init"] is not None:
            line += (f" | random init (same architecture, same seed): {state['knn_random_init']:.2f}% | "
                     f"gain: {state['knn'] - state['knn_random_init']:+.2f} points")
        run.say(line)
        run.accelerator.log({"knn_top1": state["knn"], "train_seconds": seconds}, step=state["global_step"])
    if state.get("monitor_seconds") and seconds > 0:
        skipped = (f"; skipped at {state['monitors_skipped']} kNN point(s) to stay within "
                   f"{100 * cfg.monitors_max_share:g}%") if state.get("monitors_skipped") else ""
        run.say(f"# label-free monitors took {state['monitor_seconds']:.1f}s in all: "
                f"{100 * state['monitor_seconds'] / seconds:.1f}% of the training time{skipped}")
    run_state = save_run_state(run, run_states, state)
    export_dir = export(cfg, run, data, trainer) if cfg.export and run.accelerator.is_main_process else None
    if export_dir is not None:
        run.say(f"# checkpoint (backbone + projector): {export_dir}")
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return {"state": state, "run_state": run_state, "export": export_dir, "stopped_by": stopped_by,
            "images_per_s": images_per_s, "config": run.config, "num_processes": run.world}


if __name__ == "__main__":
    run_cli(main)

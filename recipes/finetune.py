"""Fine-tune a pretrained backbone with a new linear head; export the classifier as a checkpoint.

    python recipes/finetune.py runs/demo --config recipes/configs/finetune_demo.yaml
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_cifar10.yaml --model org/name
    python recipes/finetune.py --help

MODEL is a run folder of recipes/pretrain.py, a checkpoint folder or a Hub repo id. The export
(``<output_dir>/export``) holds backbone + head (``head.safetensors``), a config.json whose ``base_model``
names the pretrained checkpoint, and a card; ``mvssl_hub.from_pretrained(export)`` returns the classifier
(images (N, 3, H, W) -> logits (N, classes)). The source checkpoint is never modified.

Reads top to bottom: config -> accelerator -> backbone -> data -> classifier, AdamW, warm-up + cosine ->
resume -> loop (light augmentation on the device, cross-entropy, step; test accuracy each epoch) -> export.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # `python recipes/finetune.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.backbones import backbone_from_config
from mvssl_hub.data.batches import MemoryStepSource
from mvssl_hub.data.sampling import make_generator
from mvssl_hub.data.splits import load_split
from mvssl_hub.device import hardware_string
from mvssl_hub.distributed import any_process, convert_batchnorm
from mvssl_hub.errors import ConfigError
from mvssl_hub.eval.probes import extract_features, linear_probe, topk_accuracy
from mvssl_hub.hub.format import find_checkpoint, save_pretrained, tidy_interrupted_save
from mvssl_hub.hub.loading import from_pretrained  # a zoo entry's repo id resolves offline too
from mvssl_hub.hub.records import dataset_name, dataset_record, metric_record, portable_config, portable_value
from mvssl_hub.hub.schema import MAX_IMAGE_SIZE
from mvssl_hub.models import Classifier
from mvssl_hub.train.backends import apply_memory_format
from mvssl_hub.train.config import (
    FRACTION,
    Check,
    above,
    as_config_error,
    at_least,
    at_most,
    check_ranges,
    config_defaults,
    config_to_dict,
    dump_yaml,
    finite,
    parse_config,
    run_cli,
)
from mvssl_hub.train.launch import open_run_state, start_run
from mvssl_hub.train.run_state import RunStateManager
from mvssl_hub.train.schedule import Cadence, TrainingClock, expected_total_steps, lr_factor, schedule_position
from mvssl_hub.views import EvalTransform, MultiViewAugment, get_view_preset
from recipes.data import load_or_embedded


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run. ``batch_size`` is the global number of images per step."""

    POSITIONAL = ("model",)

    model: Annotated[str, Check(bool, "give the run folder, checkpoint folder or Hub repo id to fine-tune")] = ""  # run folder of pretrain.py, checkpoint folder, or Hub repo id
    # data
    data: str = "uoft-cs/cifar10"
    data_name: str | None = None  # the dataset's name in the metrics and card (default: `data` if a Hub id)
    train_split: str = "train"
    test_split: str = "test"
    revision: str | None = None
    fraction: Annotated[float, FRACTION] = 1.0
    limit: Annotated[int | None, at_least(1)] = None  # first training images only (tests, smoke runs)
    eval_limit: Annotated[int | None, at_least(1)] = None  # first test images only
    image_size: Annotated[int | None, at_least(8), at_most(MAX_IMAGE_SIZE)] = None  # resize + centre-crop while decoding (mixed sizes)
    view_preset: str | None = None  # default: the checkpoint's preset, else cifar10
    augment: Literal["light", "none"] = "light"  # light: random resized crop (scale 0.35-1) + flip, no colour
    # optimisation (AdamW; warm-up then cosine)
    epochs: Annotated[int, at_least(1)] = 10
    max_steps: Annotated[int | None, at_least(1)] = None  # a shorter run: the schedule (warm-up, cosine decay) spans these steps
    time_budget: Annotated[float | None, finite(lambda v: v > 0, "must be a finite number of seconds > 0")] = None  # seconds of training (wall clock, evaluation excluded): the schedule spans
    #                                   them too, and the run ends with a test and an export when they run out
    batch_size: Annotated[int, at_least(2, "BatchNorm needs at least 2 images")] = 256
    lr_backbone: Annotated[float, finite(lambda v: v >= 0, "must be a number >= 0")] = 1e-4
    lr_head: Annotated[float, finite(lambda v: v >= 0, "must be a number >= 0")] = 1e-3
    weight_decay: Annotated[float, at_least(0)] = 1e-4
    warmup_epochs: Annotated[float, at_least(0)] = 1.0
    label_smoothing: Annotated[float, Check(lambda v: 0 <= v < 1, "must be in [0, 1)")] = 0.1
    # probe: the head starts as a linear probe on the frozen features (LP-FT), so that even a short fine-tune
    # starts from the probe's accuracy instead of a random head pulling the features apart; random: nn.Linear's
    head_init: Literal["probe", "random"] = "probe"
    head_probe_epochs: Annotated[int, at_least(1)] = 100  # Adam, lr 1e-3, batch 512 on the cached features of the training split
    seed: int = 0
    # speed
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: accelerate's --mixed_precision, else bf16 where native
    channels_last: bool = True
    cpu: bool | None = None
    threads: Annotated[int, at_least(0)] = 0
    dist_timeout_minutes: Annotated[float, above(0)] = 10.0  # a collective waits this long for a machine gone silent, then the run stops naming it (start-up: >= 60)
    eval_batch_size: Annotated[int, at_least(1)] = 512
    # run, checkpoints, logging
    output_dir: str = "runs/finetune"
    save_every: Annotated[int, at_least(0)] = 0  # steps between extra checkpoints (one is always written at the end of each epoch)
    keep_checkpoints: Annotated[int, at_least(1)] = 2
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # verbosity of the recipe's log
    export: bool = True  # the classifier (backbone + head) as a checkpoint folder, also after --max_steps

    def __post_init__(self) -> None:
        check_ranges(self)  # every range declared beside its field


# Keys that may differ between a run and its resumption without changing the trajectory.
RESUMABLE_CHANGES = {"resume", "save_every", "keep_checkpoints", "progress", "export", "threads",
                     "overwrite", "eval_batch_size", "log_level", "data_name", "dist_timeout_minutes"}


@dataclass
class Setup:
    """Everything the loop needs: accelerator, data, model, optimiser, schedule, transforms, plan."""

    accelerator: Any
    precision: str
    log: Any
    source: str  # the pretrained checkpoint, as named in the export's base_model
    config: dict[str, Any]
    train: Any
    test: Any
    num_classes: int
    steps_per_epoch: int
    total_steps: int  # the run's length, which its learning-rate schedule spans
    clock: TrainingClock  # seconds of training so far; with a time budget, the schedule follows it too
    model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    augment: Any = None
    eval_transform: Any = None
    transforms: dict[str, Any] | None = None

    def say(self, message: str) -> None:
        self.log.info(message, main_process_only=True)


def setup(cfg: FinetuneConfig, argv: list[str] | None) -> Setup:
    """Accelerator, the pretrained backbone, the labelled splits, the classifier and its optimiser."""
    accelerator, precision, log = start_run(  # not deterministic: cuDNN autotuning, TF32 on CUDA
        name="finetune", output_dir=cfg.output_dir, log_file="finetune", log_level=cfg.log_level, threads=cfg.threads,
        cpu=cfg.cpu, precision=cfg.precision, dist_timeout_minutes=cfg.dist_timeout_minutes,
        batch_size=cfg.batch_size)
    world, device = accelerator.num_processes, accelerator.device
    local = Path(cfg.model).expanduser()
    with as_config_error("model", cfg.model):  # a mistyped folder, or a repo the offline cache lacks: one line
        ckpt_dir = find_checkpoint(local) if local.exists() else None
        backbone = from_pretrained(str(ckpt_dir) if ckpt_dir else cfg.model)
    src_cfg = backbone.mvssl_config
    preset_name = cfg.view_preset or (src_cfg.get("transforms") or {}).get("preset") or "cifar10"
    def load(source: str) -> tuple[Any, Any]:
        return (load_split(source, cfg.train_split, fraction=cfg.fraction, seed=cfg.seed, size=cfg.image_size,
                           revision=cfg.revision, limit=cfg.limit),
                load_split(source, cfg.test_split, size=cfg.image_size, revision=cfg.revision, limit=cfg.eval_limit))

    # One process downloads a Hub dataset; offline, the default CIFAR-10 falls back to the embedded cut.
    with accelerator.main_process_first(), as_config_error("data", cfg.data):
        (train, test), cfg.data = load_or_embedded(load, cfg.data, default=cfg.data == FinetuneConfig.data,
                                                   say=logging.getLogger("mvssl_hub.finetune").warning)
    if train.labels is None or test.labels is None:
        raise ValueError(f"{cfg.data}: fine-tuning needs labels in splits {cfg.train_split!r} and {cfg.test_split!r}")
    if len(train) < cfg.batch_size:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size} exceeds the {len(train)} training images")
    num_classes = max(int(train.labels.max()), int(test.labels.max()), (train.num_classes or 0) - 1) + 1
    steps_per_epoch = len(train) // cfg.batch_size
    # The schedule spans the run as planned: --max_steps shortens it (warm-up and decay scale with it), so a
    # short fine-tune ends at a low learning rate instead of stopping inside the warm-up of a long one.
    planned = cfg.epochs * steps_per_epoch
    total_steps = min(planned, cfg.max_steps or planned)
    s = Setup(accelerator, precision, log,
              source=str(portable_value(cfg.model)),
              config={**config_to_dict(cfg), "precision_used": precision, "num_processes": world,
                      "checkpoint": str(ckpt_dir) if ckpt_dir else cfg.model, "view_preset_used": preset_name},
              train=train, test=test, num_classes=num_classes, steps_per_epoch=steps_per_epoch,
              total_steps=total_steps, clock=TrainingClock("wall"),
              transforms=src_cfg.get("transforms"))
    s.say(f"# mvssl-hub finetune: resolved config\n{dump_yaml(cfg)}# backbone {src_cfg['backbone']} from "
          f"{ckpt_dir or cfg.model}; precision {precision}; processes {world}; device {device}\n# data {cfg.data}: "
          f"{len(train)} train / {len(test)} test images, {num_classes} classes, {steps_per_epoch} steps/epoch")

    preset = get_view_preset(preset_name)
    # Light augmentation at the evaluation size: random resized crop + flip, no colour changes.
    light = replace(preset, crop_size=preset.eval_size, scale=(0.35, 1.0), jitter_p=0.0, grayscale_p=0.0,
                    solarize_p=0.0)
    view_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    s.eval_transform = EvalTransform(preset)
    torch.manual_seed(cfg.seed)
    names = train.class_names if train.class_names and len(train.class_names) == num_classes else None
    model = Classifier(backbone, num_classes, class_names=names)  # the export carries the names
    if world > 1:
        model = convert_batchnorm(model, device)
    channels_last = apply_memory_format(model, device, cfg.channels_last)  # off where a CPU kernel fault meets it
    s.augment = MultiViewAugment(light, output_dtype=view_dtype, channels_last=channels_last)
    optimizer = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": cfg.lr_backbone},
                                   {"params": model.head.parameters(), "lr": cfg.lr_head}],
                                  weight_decay=cfg.weight_decay)
    warmup = round(cfg.warmup_epochs / cfg.epochs * total_steps)  # the same share of the schedule, however long
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(schedule_position(k, total_steps, s.clock.elapsed(), cfg.time_budget),
                                       total_steps, warmup_steps=warmup))
    s.model, s.optimizer, s.scheduler = accelerator.prepare(model, optimizer, scheduler)
    return s


def test_accuracy(cfg: FinetuneConfig, s: Setup) -> dict[str, float]:
    """Top-1 / top-5 (%) on the test split: sharded over the processes and gathered, eval mode."""
    logits = extract_features(s.accelerator.unwrap_model(s.model), s.test.images, s.eval_transform,
                              batch_size=cfg.eval_batch_size, device=s.accelerator.device,
                              bf16=s.precision == "bf16", channels_last=cfg.channels_last,
                              progress=s.accelerator.is_main_process and cfg.progress)
    s.model.train()
    return topk_accuracy(logits, s.test.labels)


def probe_head(cfg: FinetuneConfig, s: Setup) -> float:
    """Fit the classifier's head as a linear probe on the frozen backbone's features (evaluation transform,
    eval-mode BatchNorm); returns the probe's test top-1 (%), the baseline the fine-tune should beat. Every
    process fits the same head on the gathered features; the main process's is broadcast to be sure."""
    from accelerate.utils import broadcast

    model = s.accelerator.unwrap_model(s.model)
    feats = [extract_features(model.backbone, split.images, s.eval_transform, batch_size=cfg.eval_batch_size,
                              device=s.accelerator.device, bf16=s.precision == "bf16",
                              channels_last=cfg.channels_last, progress=False) for split in (s.train, s.test)]
    probe = linear_probe(feats[0], s.train.labels, feats[1], s.test.labels, epochs=cfg.head_probe_epochs,
                         label_smoothing=cfg.label_smoothing, num_classes=s.num_classes, device="cpu",
                         seed=cfg.seed, return_head=True)
    with torch.no_grad():
        for mine, fitted in ((model.head.weight, probe["head"].weight), (model.head.bias, probe["head"].bias)):
            mine.copy_(broadcast(fitted.to(mine.device, mine.dtype).contiguous()) if s.accelerator.num_processes > 1
                       else fitted)
    model.train()
    return probe["top1"]


def train(cfg: FinetuneConfig, s: Setup, run_states: RunStateManager, state: dict[str, Any]) -> None:
    """The loop: light views, cross-entropy, step; test accuracy and a run state at the end of each epoch."""
    from tqdm.auto import tqdm

    acc, device = s.accelerator, s.accelerator.device
    bar = tqdm(total=s.total_steps, initial=state["global_step"], unit="step", dynamic_ncols=True,
               disable=not (acc.is_main_process and cfg.progress))
    clock = s.clock = TrainingClock("wall", state["train_seconds"])  # the schedule reads it (time budget)
    start_step, start_seconds = state["global_step"], state["train_seconds"]
    batches = MemoryStepSource(s.train.images, s.train.labels, cfg.batch_size, cfg.seed, device, acc.process_index,
                               acc.num_processes, with_labels=True)
    save_cadence = Cadence(steps=cfg.save_every)  # and at the end of each epoch
    running = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen: read once per epoch
    s.model.train()
    while state["global_step"] < s.total_steps:
        step = state["global_step"]
        epoch, in_epoch, images, labels = batches(step)
        if cfg.augment == "light":  # per-sample random crops/flips, seeded by (seed, epoch, step, process)
            x = s.augment(images, 1, generator=make_generator(cfg.seed, epoch, in_epoch, acc.process_index))[0]
        else:
            x = s.eval_transform(images).to(s.augment.output_dtype)
        with acc.autocast():
            logits = s.model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        acc.backward(loss)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.step()
        state["global_step"] = step + 1
        running += torch.stack([loss.detach().double() * labels.numel(),
                                (logits.detach().argmax(1) == labels).sum().double(),
                                torch.tensor(float(labels.numel()), dtype=torch.float64, device=device)])
        bar.update(1)
        if cfg.time_budget is not None:  # the bar ends where the budget will: its total and ETA follow the pace
            bar.total = expected_total_steps(step + 1, s.total_steps, cfg.time_budget, clock.elapsed(),
                                             start_step, start_seconds)
        # every process must stop at the same step
        out_of_time = any_process(cfg.time_budget is not None and clock.elapsed() >= cfg.time_budget, acc)
        epoch_done = (step + 1) % s.steps_per_epoch == 0 or step + 1 == s.total_steps or out_of_time
        if epoch_done:
            with clock.paused():
                top = test_accuracy(cfg, s)
            totals = acc.reduce(running, reduction="sum") if acc.num_processes > 1 else running
            loss_sum, correct, seen = totals.tolist()
            record = {"epoch": round((step + 1) / s.steps_per_epoch, 4), "step": step + 1,
                      "train_loss": loss_sum / seen, "train_top1": 100.0 * correct / seen,
                      "test_top1": top["top1"], "test_top5": top["top5"],
                      "lr_backbone": s.scheduler.get_last_lr()[0], "lr_head": s.scheduler.get_last_lr()[1]}
            state["history"].append(record)
            state["epoch"] = (step + 1) // s.steps_per_epoch
            acc.log(record, step=step + 1)
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", test_top1=f"{top['top1']:.2f}")
            s.say(f"# epoch {record['epoch']:g}: loss {record['train_loss']:.4f}, train top-1 "
                  f"{record['train_top1']:.2f}%, test top-1 {top['top1']:.2f}%, top-5 {top['top5']:.2f}%")
            running.zero_()
        if epoch_done or save_cadence.due(step + 1):
            state["train_seconds"] = clock.elapsed()
            with clock.paused():
                run_states.save(acc, state["global_step"], state, s.config)
        if out_of_time:
            s.say(f"# time budget of {cfg.time_budget:g}s spent at step {step + 1} of {s.total_steps}")
            break
    bar.close()
    state["train_seconds"] = clock.elapsed()


def export(cfg: FinetuneConfig, s: Setup, state: dict[str, Any], records: list[dict]) -> Path:
    """The classifier as a checkpoint folder; its base_model names the pretrained checkpoint."""
    trained = s.accelerator.unwrap_model(s.model)
    clean = Classifier(backbone_from_config(trained.backbone.config.to_dict()), s.num_classes,  # plain BatchNorm, fp32
                       class_names=trained.class_names)
    clean.load_state_dict({k: v.detach().float().cpu() for k, v in trained.state_dict().items()})
    seconds = state["train_seconds"]
    return save_pretrained(
        clean, Path(cfg.output_dir) / "export", transforms=s.transforms, metrics=records, base_model=s.source,
        dataset=dataset_record(cfg.data, name=cfg.data_name, revision=cfg.revision, split=cfg.train_split,
                               fraction=cfg.fraction),
        train_config=portable_config(s.config, data_name=cfg.data_name),
        training={"hardware": hardware_string(s.accelerator.device, s.accelerator.num_processes),
                  "wall_clock_s": round(seconds, 1), "steps": state["global_step"],
                  "images_per_s": round(state["global_step"] * cfg.batch_size / max(seconds, 1e-9), 2),
                  "epochs": round(state["global_step"] / s.steps_per_epoch, 4)},
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the recipe; returns a summary dict (used by the tests)."""
    cfg = parse_config(FinetuneConfig, argv, prog="recipes/finetune.py", summary=__doc__.split("\n\n")[0])
    s = setup(cfg, argv)
    run_dir = Path(cfg.output_dir)
    state = {"global_step": 0, "epoch": 0, "train_seconds": 0.0, "history": []}
    run_states, saved, latest = open_run_state(
        s.accelerator, name="finetune", output_dir=run_dir, log_file="finetune", config=s.config,
        keep=cfg.keep_checkpoints, resume=cfg.resume, overwrite=cfg.overwrite, resumable=RESUMABLE_CHANGES,
        defaults=config_defaults(FinetuneConfig), max_step=s.total_steps, tidy=tidy_interrupted_save)
    state.update(saved)
    if latest is not None:
        s.say(f"# resumed from {latest} at step {state['global_step']}")
    if cfg.head_init == "probe" and state["global_step"] == 0:  # on resume the head comes from the run state
        state["probe_top1"] = probe_head(cfg, s)
        s.say(f"# head: a {cfg.head_probe_epochs}-epoch linear probe on the frozen features, test top-1 "
              f"{state['probe_top1']:.2f}%: the fine-tune starts there")

    train(cfg, s, run_states, state)

    final = state["history"][-1] if state["history"] else {}
    head = (f"linear head from a {cfg.head_probe_epochs}-epoch linear probe on the frozen features"
            if cfg.head_init == "probe" else "new linear head")
    protocol = (f"full fine-tuning, {head}: AdamW lr backbone {cfg.lr_backbone:g} / head {cfg.lr_head:g}, "
                f"wd {cfg.weight_decay:g}, {cfg.warmup_epochs:g} warm-up epoch(s) then cosine, "
                f"{state['global_step'] / s.steps_per_epoch:g} of {cfg.epochs} epochs, batch {cfg.batch_size}, "
                f"label smoothing {cfg.label_smoothing:g}, augmentation {cfg.augment}; train: {cfg.train_split} "
                f"({len(s.train)} images), test: {len(s.test)} images")
    records = [metric_record("finetune", m, final[f"test_{m}"], None, dataset=dataset_name(cfg.data, cfg.data_name),
                             split=cfg.test_split, protocol=protocol) for m in ("top1", "top5") if final]
    summary: dict[str, Any] = {
        "config": s.config, "history": state["history"], "records": records, "steps": state["global_step"],
        "train_seconds": round(state["train_seconds"], 2), "probe_top1": state.get("probe_top1"),
        "hardware": hardware_string(s.accelerator.device, s.accelerator.num_processes)}
    if s.accelerator.is_main_process:
        if cfg.export:
            summary["export"] = str(export(cfg, s, state, records))
            s.say(f"# classifier (backbone + head) exported to {summary['export']}: "
                  f"mvssl_hub.from_pretrained({summary['export']!r}) loads it")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "finetune_results.json").write_text(json.dumps(summary, indent=2) + "\n")
        s.say(f"# results saved to {run_dir / 'finetune_results.json'}")
    s.accelerator.wait_for_everyone()
    s.accelerator.end_training()
    return summary


if __name__ == "__main__":
    run_cli(main)

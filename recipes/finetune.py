"""Fine-tune a pretrained backbone with a new linear head; export the classifier as a checkpoint.

    python recipes/finetune.py runs/demo --config recipes/configs/finetune_demo.yaml
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_cifar10.yaml --model org/name
    python recipes/finetune.py --help

MODEL is a run folder of recipes/pretrain.py, a checkpoint folder or a Hub repo id. The export
(``<output_dir>/export``) holds backbone + head (``head.safetensors``), a config.json whose ``base_model``
names the pretrained checkpoint, and a card; ``mvssl_hub.from_pretrained(export)`` returns the classifier
(images (N, 3, H, W) -> logits (N, classes)). The source checkpoint is never modified.

Reads top to bottom: config -> accelerator -> backbone -> data -> classifier, AdamW, warm-up + cosine ->
resume -> loop (light augmentation on the device, cross-entropy, ``guard.step(optimizer, loss)``: a non-finite
step is skipped; test accuracy and a run state each epoch) -> export. The run folder holds the run states
(``run_states/step-*``, what ``--resume`` continues from) and the checkpoint (``export/``).
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
from mvssl_hub.distributed import convert_batchnorm
from mvssl_hub.errors import ConfigError
from mvssl_hub.eval.probes import extract_features, linear_probe, topk_accuracy
from mvssl_hub.hub.format import find_checkpoint, save_pretrained, tidy_interrupted_save
from mvssl_hub.hub.loading import from_pretrained  # a zoo entry's repo id resolves offline too
from mvssl_hub.hub.records import (
    dataset_name,
    dataset_record,
    metric_record,
    portable_config,
    portable_value,
    training_record,
)
from mvssl_hub.hub.schema import MAX_IMAGE_SIZE
from mvssl_hub.models import Classifier
from mvssl_hub.train.backends import apply_memory_format, export_copy
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
from mvssl_hub.train.loop import LoopFrame, NonFiniteLossError  # noqa: F401 (the error the loop raises)
from mvssl_hub.train.run_state import RunStateManager
from mvssl_hub.train.schedule import TrainingClock, lr_factor, schedule_position
from mvssl_hub.train.startup import Run, open_run_state, start_run
from mvssl_hub.train.step_guard import StepGuard
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
    # run folder, run states, logging
    output_dir: str = "runs/finetune"  # the run folder: run states in run_states/, the checkpoint in export/
    run_state_every: Annotated[int, at_least(0)] = 0  # steps between extra run states (one is always written at the end of each epoch)
    keep_run_states: Annotated[int, at_least(1)] = 2  # the newest run states kept; older ones are deleted
    resume: bool = False  # continue from the newest complete run state in run_states/
    overwrite: bool = False  # without --resume: delete this run's old run states instead of refusing
    max_nan_steps: Annotated[int, at_least(1)] = 10  # consecutive non-finite losses (each step skipped) before the run stops
    progress: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # verbosity of the recipe's log
    export: bool = True  # write the classifier (backbone + head) as a checkpoint to export/, also after --max_steps

    # the flags' names before mvssl-hub 0.2.0, still accepted until then (mvssl_hub.train.config)
    OLD_NAMES = {"save_every": "run_state_every", "keep_checkpoints": "keep_run_states"}

    def __post_init__(self) -> None:
        check_ranges(self)  # every range declared beside its field


# Keys that may differ between a run and its resumption without changing the trajectory.
RESUMABLE_CHANGES = {"resume", "run_state_every", "keep_run_states", "progress", "export", "threads", "max_nan_steps",
                     "overwrite", "eval_batch_size", "log_level", "data_name", "dist_timeout_minutes"}



@dataclass
class Data:
    """The labelled splits and the step plan."""

    train: Any
    test: Any
    num_classes: int
    steps_per_epoch: int
    total_steps: int  # the run's length, which its learning-rate schedule spans


@dataclass
class Trainer:
    """The classifier, AdamW and its schedule, the views, the per-step finiteness guard, the training clock."""

    model: Any
    optimizer: Any
    scheduler: Any
    augment: MultiViewAugment  # light views, made on the device
    eval_transform: EvalTransform
    guard: StepGuard
    clock: TrainingClock  # seconds of training so far; with a time budget, the schedule follows it too
    batches: Any  # step -> StepBatch (images and labels on the device)
    source: str  # the pretrained checkpoint, as named in the export's base_model
    transforms: dict[str, Any] | None  # the pretrained checkpoint's transforms, carried to the export


def fresh_state() -> dict[str, Any]:
    """A run's counters before its first step (a resumed run's saved state replaces them)."""
    return {"global_step": 0, "epoch": 0, "train_seconds": 0.0, "nan_skipped": 0, "nan_streak": 0, "history": []}


def setup(cfg: FinetuneConfig) -> tuple[Run, Data, Trainer]:
    """Accelerator, the pretrained backbone, the labelled splits, the classifier and its optimiser."""
    run = start_run(  # not deterministic: cuDNN autotuning, TF32 on CUDA
        name="finetune", output_dir=cfg.output_dir, log_file="finetune", log_level=cfg.log_level, threads=cfg.threads,
        cpu=cfg.cpu, precision=cfg.precision, dist_timeout_minutes=cfg.dist_timeout_minutes,
        batch_size=cfg.batch_size)
    local = Path(cfg.model).expanduser()
    with as_config_error("model", cfg.model):  # a mistyped folder, or a repo the offline cache lacks: one line
        ckpt_dir = find_checkpoint(local) if local.exists() else None
        backbone = from_pretrained(str(ckpt_dir) if ckpt_dir else cfg.model)
    src_cfg = backbone.mvssl_config
    preset_name = cfg.view_preset or (src_cfg.get("transforms") or {}).get("preset") or "cifar10"
    data = load_data(cfg, run)
    run.config = {**config_to_dict(cfg), "precision_used": run.precision, "num_processes": run.world,
                  "checkpoint": str(ckpt_dir) if ckpt_dir else cfg.model, "view_preset_used": preset_name}
    run.say(f"# mvssl-hub finetune: resolved config\n{dump_yaml(cfg)}# backbone {src_cfg['backbone']} from "
            f"{ckpt_dir or cfg.model}; precision {run.precision}; processes {run.world}; device {run.device}\n"
            f"# data {cfg.data}: {len(data.train)} train / {len(data.test)} test images, {data.num_classes} classes, "
            f"{data.steps_per_epoch} steps/epoch")
    trainer = build(cfg, run, data, backbone, get_view_preset(preset_name))
    trainer.source, trainer.transforms = str(portable_value(cfg.model)), src_cfg.get("transforms")
    return run, data, trainer


def load_data(cfg: FinetuneConfig, run: Run) -> Data:
    """The labelled training and test splits, decoded once; the step plan."""
    def load(source: str) -> tuple[Any, Any]:
        return (load_split(source, cfg.train_split, fraction=cfg.fraction, seed=cfg.seed, size=cfg.image_size,
                           revision=cfg.revision, limit=cfg.limit),
                load_split(source, cfg.test_split, size=cfg.image_size, revision=cfg.revision, limit=cfg.eval_limit))

    # One process downloads a Hub dataset; offline, the default CIFAR-10 falls back to the embedded cut.
    with run.accelerator.main_process_first(), as_config_error("data", cfg.data):
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
    return Data(train, test, num_classes, steps_per_epoch, total_steps=min(planned, cfg.max_steps or planned))


def build(cfg: FinetuneConfig, run: Run, data: Data, backbone: torch.nn.Module, preset: Any) -> Trainer:
    """The classifier (global-batch BN across processes), AdamW, warm-up + cosine, views; wrapped by accelerate."""
    # Light augmentation at the evaluation size: random resized crop + flip, no colour changes.
    light = replace(preset, crop_size=preset.eval_size, scale=(0.35, 1.0), jitter_p=0.0, grayscale_p=0.0,
                    solarize_p=0.0)
    torch.manual_seed(cfg.seed)
    names = data.train.class_names if data.train.class_names and len(data.train.class_names) == data.num_classes \
        else None
    model = Classifier(backbone, data.num_classes, class_names=names)  # the export carries the names
    if run.world > 1:
        model = convert_batchnorm(model, run.device)
    channels_last = apply_memory_format(model, run.device, cfg.channels_last)  # off where a CPU kernel fault meets it
    # fused on CUDA: one kernel per step, and the guard skips a non-finite step there without a host sync
    optimizer = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": cfg.lr_backbone},
                                   {"params": model.head.parameters(), "lr": cfg.lr_head}],
                                  weight_decay=cfg.weight_decay, fused=True if run.device.type == "cuda" else None)
    clock = TrainingClock("wall")  # the frame restarts it at the run's training seconds so far
    warmup = round(cfg.warmup_epochs / cfg.epochs * data.total_steps)  # the same share of the schedule, however long
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(schedule_position(k, data.total_steps, clock.elapsed(), cfg.time_budget),
                                       data.total_steps, warmup_steps=warmup))
    model, optimizer, scheduler = run.accelerator.prepare(model, optimizer, scheduler)
    bn_buffers = [b for name, b in run.accelerator.unwrap_model(model).named_buffers()
                  if "running" in name or "num_batches" in name]
    batches = MemoryStepSource(data.train.images, data.train.labels, cfg.batch_size, cfg.seed, run.device,
                              run.accelerator.process_index, run.world, with_labels=True)
    return Trainer(model=model, optimizer=optimizer, scheduler=scheduler,
                   augment=MultiViewAugment(light, output_dtype=run.view_dtype, channels_last=channels_last),
                   eval_transform=EvalTransform(preset), guard=StepGuard(optimizer, bn_buffers, distributed=run.world > 1),
                   clock=clock, batches=batches, source="", transforms=None)


def resume(cfg: FinetuneConfig, run: Run, data: Data, trainer: Trainer, state: dict[str, Any]) -> RunStateManager:
    """Restore the newest complete run state (--resume), or start clean; the log keeps no step twice."""
    run_states, saved, latest = open_run_state(
        run.accelerator, name="finetune", output_dir=cfg.output_dir, log_file="finetune", config=run.config,
        keep=cfg.keep_run_states, resume=cfg.resume, overwrite=cfg.overwrite, resumable=RESUMABLE_CHANGES,
        defaults=config_defaults(FinetuneConfig), max_step=data.total_steps, tidy=tidy_interrupted_save)
    state.update(saved)
    trainer.guard.load_counts(state["nan_skipped"], state["nan_streak"])
    if latest is not None:
        run.say(f"# resumed from {latest} at step {state['global_step']}")
    return run_states


def test_accuracy(cfg: FinetuneConfig, run: Run, data: Data, trainer: Trainer) -> dict[str, float]:
    """Top-1 / top-5 (%) on the test split: sharded over the processes and gathered, eval mode."""
    logits = extract_features(run.accelerator.unwrap_model(trainer.model), data.test.images, trainer.eval_transform,
                              batch_size=cfg.eval_batch_size, device=run.device, bf16=run.precision == "bf16",
                              channels_last=cfg.channels_last, progress=run.accelerator.is_main_process and cfg.progress)
    trainer.model.train()
    return topk_accuracy(logits, data.test.labels)


def probe_head(cfg: FinetuneConfig, run: Run, data: Data, trainer: Trainer) -> float:
    """Fit the classifier's head as a linear probe on the frozen backbone's features (evaluation transform,
    eval-mode BatchNorm); returns the probe's test top-1 (%), the baseline the fine-tune should beat. Every
    process fits the same head on the gathered features; the main process's is broadcast to be sure."""
    from accelerate.utils import broadcast

    model = run.accelerator.unwrap_model(trainer.model)
    feats = [extract_features(model.backbone, split.images, trainer.eval_transform, batch_size=cfg.eval_batch_size,
                              device=run.device, bf16=run.precision == "bf16", channels_last=cfg.channels_last,
                              progress=False) for split in (data.train, data.test)]
    probe = linear_probe(feats[0], data.train.labels, feats[1], data.test.labels, epochs=cfg.head_probe_epochs,
                         label_smoothing=cfg.label_smoothing, num_classes=data.num_classes, device="cpu",
                         seed=cfg.seed, return_head=True)
    with torch.no_grad():
        for mine, fitted in ((model.head.weight, probe["head"].weight), (model.head.bias, probe["head"].bias)):
            mine.copy_(broadcast(fitted.to(mine.device, mine.dtype).contiguous()) if run.world > 1 else fitted)
    model.train()
    return probe["top1"]


def train(cfg: FinetuneConfig, run: Run, data: Data, trainer: Trainer, run_states: RunStateManager,
          state: dict[str, Any]) -> None:
    """The loop: light views, cross-entropy, the guarded step; test accuracy and a run state at the end of each
    epoch. The frame (mvssl_hub.train.loop) keeps the bar, the clock and the time budget."""
    acc, guard, optimizer = run.accelerator, trainer.guard, trainer.optimizer
    running = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss sum, correct, seen: read once per epoch
    with LoopFrame(run, state, run_states, total_steps=data.total_steps, clock=trainer.clock,
                   time_budget=cfg.time_budget, run_state_every=cfg.run_state_every, progress=cfg.progress) as frame:
        trainer.model.train()
        while frame.running():
            epoch, in_epoch, images, labels = trainer.batches(state["global_step"])
            if cfg.augment == "light":  # per-sample random crops/flips, seeded by (seed, epoch, step, process)
                x = trainer.augment(images, 1, generator=make_generator(cfg.seed, epoch, in_epoch,
                                                                        acc.process_index))[0]
            else:
                x = trainer.eval_transform(images).to(trainer.augment.output_dtype)
            guard.before_forward()
            with acc.autocast():
                logits = trainer.model(x)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            acc.backward(loss)  # every step, finite or not: all processes issue the same collectives
            ok = guard.step(optimizer, loss)  # optimizer.step() unless the loss is non-finite: one decision
            optimizer.zero_grad(set_to_none=True)
            trainer.scheduler.step()
            running += step_totals(loss, logits, labels, ok)
            done = frame.advance()
            out_of_time = frame.out_of_time()  # every process stops at the same step
            epoch_done = done % data.steps_per_epoch == 0 or done == data.total_steps or out_of_time
            if epoch_done or not guard.device_skip:  # free on the host path; one read per epoch on the device path
                frame.count_skipped(guard, cfg.max_nan_steps)
            if epoch_done:
                with frame.paused():
                    top = test_accuracy(cfg, run, data, trainer)
                end_epoch(run, data, trainer, frame, running, top)
            if epoch_done or frame.save_due():
                frame.save()
            if out_of_time:
                run.say(f"# time budget of {cfg.time_budget:g}s spent at step {done} of {data.total_steps}")
                break


def step_totals(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """(loss x images, correct, images) of one step as float64 on the device, zeros for a skipped step; no sync."""
    totals = torch.stack([loss.detach().double() * labels.numel(), (logits.detach().argmax(1) == labels).sum().double(),
                          torch.tensor(float(labels.numel()), dtype=torch.float64, device=loss.device)])
    return torch.where(ok, totals, torch.zeros_like(totals))


def end_epoch(run: Run, data: Data, trainer: Trainer, frame: LoopFrame, running: torch.Tensor,
              top: dict[str, float]) -> None:
    """The epoch's record (training loss and accuracy over every process, test accuracy, learning rates) into the
    history, the trackers, the bar and the log; the running totals start again."""
    acc, state, done = run.accelerator, frame.state, frame.state["global_step"]
    totals = acc.reduce(running, reduction="sum") if run.world > 1 else running
    loss_sum, correct, seen = totals.tolist()
    record = {"epoch": round(done / data.steps_per_epoch, 4), "step": done,
              "train_loss": loss_sum / seen if seen else float("nan"),
              "train_top1": 100.0 * correct / seen if seen else float("nan"),
              "test_top1": top["top1"], "test_top5": top["top5"],
              "lr_backbone": trainer.scheduler.get_last_lr()[0], "lr_head": trainer.scheduler.get_last_lr()[1]}
    state["history"].append(record)
    state["epoch"] = done // data.steps_per_epoch
    acc.log(record, step=done)
    frame.bar.set_postfix(loss=f"{record['train_loss']:.4f}", test_top1=f"{top['top1']:.2f}")
    run.say(f"# epoch {record['epoch']:g}: loss {record['train_loss']:.4f}, train top-1 "
            f"{record['train_top1']:.2f}%, test top-1 {top['top1']:.2f}%, top-5 {top['top5']:.2f}%")
    running.zero_()


def export(cfg: FinetuneConfig, run: Run, data: Data, trainer: Trainer, state: dict[str, Any],
           records: list[dict]) -> Path:
    """The checkpoint: the classifier in ``<output_dir>/export``; its base_model names the pretrained checkpoint."""
    trained = run.accelerator.unwrap_model(trainer.model)
    clean = export_copy(trained, Classifier(backbone_from_config(trained.backbone.config.to_dict()), data.num_classes,
                                            class_names=trained.class_names))  # plain BatchNorm, fp32
    seconds, steps = state["train_seconds"], state["global_step"]
    return save_pretrained(
        clean, Path(cfg.output_dir) / "export", transforms=trainer.transforms, metrics=records,
        base_model=trainer.source, train_config=portable_config(run.config, data_name=cfg.data_name),
        dataset=dataset_record(cfg.data, name=cfg.data_name, revision=cfg.revision, split=cfg.train_split,
                               fraction=cfg.fraction),
        training=training_record(hardware=hardware_string(run.device, run.world), seconds=seconds,
                                 images_per_s=steps * cfg.batch_size / seconds if seconds > 0 else 0.0, steps=steps,
                                 epochs=steps / data.steps_per_epoch),
    )


def results(cfg: FinetuneConfig, run: Run, data: Data, state: dict[str, Any]) -> dict[str, Any]:
    """The run's summary: history, the final test accuracy as metric records (with their protocol), timings."""
    final = state["history"][-1] if state["history"] else {}
    head = (f"linear head from a {cfg.head_probe_epochs}-epoch linear probe on the frozen features"
            if cfg.head_init == "probe" else "new linear head")
    protocol = (f"full fine-tuning, {head}: AdamW lr backbone {cfg.lr_backbone:g} / head {cfg.lr_head:g}, "
                f"wd {cfg.weight_decay:g}, {cfg.warmup_epochs:g} warm-up epoch(s) then cosine, "
                f"{state['global_step'] / data.steps_per_epoch:g} of {cfg.epochs} epochs, batch {cfg.batch_size}, "
                f"label smoothing {cfg.label_smoothing:g}, augmentation {cfg.augment}; train: {cfg.train_split} "
                f"({len(data.train)} images), test: {len(data.test)} images")
    records = [metric_record("finetune", m, final[f"test_{m}"], None, dataset=dataset_name(cfg.data, cfg.data_name),
                             split=cfg.test_split, protocol=protocol) for m in ("top1", "top5") if final]
    return {"config": run.config, "history": state["history"], "records": records, "steps": state["global_step"],
            "train_seconds": round(state["train_seconds"], 2), "probe_top1": state.get("probe_top1"),
            "nan_skipped": state["nan_skipped"], "hardware": hardware_string(run.device, run.world)}


def main(argv: list[str] | None = None) -> dict:
    """Run the recipe; returns a summary dict (used by the tests)."""
    cfg = parse_config(FinetuneConfig, argv, prog="recipes/finetune.py", summary=__doc__.split("\n\n")[0])
    run, data, trainer = setup(cfg)
    state = fresh_state()
    run_states = resume(cfg, run, data, trainer, state)
    if cfg.head_init == "probe" and state["global_step"] == 0:  # on resume the head comes from the run state
        state["probe_top1"] = probe_head(cfg, run, data, trainer)
        run.say(f"# head: a {cfg.head_probe_epochs}-epoch linear probe on the frozen features, test top-1 "
                f"{state['probe_top1']:.2f}%: the fine-tune starts there")

    train(cfg, run, data, trainer, run_states, state)

    summary = results(cfg, run, data, state)
    run_dir = Path(cfg.output_dir)
    if run.accelerator.is_main_process:
        if cfg.export:
            summary["export"] = str(export(cfg, run, data, trainer, state, summary["records"]))
            run.say(f"# checkpoint (the classifier: backbone + head): {summary['export']}; "
                    f"mvssl_hub.from_pretrained({summary['export']!r}) loads it")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "finetune_results.json").write_text(json.dumps(summary, indent=2) + "\n")
        run.say(f"# results saved to {run_dir / 'finetune_results.json'}")
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return summary


if __name__ == "__main__":
    run_cli(main)

"""Reusable pieces of the training recipes: batching, cross-process BatchNorm, checkpoints, tracking, launch checks.

- :func:`epoch_batches` / :func:`process_slice`: a seeded per-epoch permutation cut into global batches
  (drop_last), each process taking its contiguous slice of every global batch.
- :class:`GlobalBatchNorm`: BatchNorm whose training statistics cover the batch of every process, through
  autograd-aware all-reduces; unlike ``torch.nn.SyncBatchNorm`` it also runs on CPU (gloo).
- :class:`CheckpointManager`: ``accelerate`` ``save_state`` written to a temporary folder, completed by a
  marker file (step + sha256 of every file) and renamed into place; resume picks the newest complete one.
- :class:`JSONLTracker`: an ``accelerate`` tracker writing one JSON object per ``log`` call.
- :func:`check_distributed_launch`: fail loudly when ``accelerate launch`` started unrelated processes.

``accelerate`` is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import sha256_file

__all__ = [
    "CheckpointManager", "GlobalBatchNorm", "JSONLTracker", "LaunchError", "StepBatches", "check_distributed_launch",
    "convert_batchnorm", "derive_seed", "epoch_batches", "hardware_string", "lr_factor", "make_accelerator",
    "make_generator", "peak_memory_mb", "place_images", "process_slice",
]

MARKER_FILE = "COMPLETE.json"
STATE_FILE = "training_state.json"
CONFIG_FILE = "config.json"
_STEP_PREFIX = "step-"
_TMP_PREFIX = ".tmp-step-"


# --------------------------------------------------------------------------------------------------- batching

def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. (seed, epoch, step, process))."""
    digest = hashlib.sha256(json.dumps([int(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def epoch_batches(num_images: int, global_batch: int, seed: int, epoch: int) -> torch.Tensor:
    """Indices of one epoch as int64 (steps, global_batch): a permutation seeded from (seed, epoch), drop_last.

    Every process computes the same permutation; :func:`process_slice` gives each its part of a batch.
    """
    if global_batch < 1 or num_images < global_batch:
        raise ValueError(f"global batch {global_batch} needs 1 <= batch <= number of images ({num_images})")
    perm = torch.randperm(num_images, generator=make_generator(seed, epoch))
    steps = num_images // global_batch
    return perm[: steps * global_batch].view(steps, global_batch)


def process_slice(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Process ``rank``'s contiguous share of a global batch (global_batch,) -> (global_batch / world,)."""
    if batch.shape[0] % world:
        raise ValueError(f"global batch {batch.shape[0]} is not divisible by the {world} processes")
    per = batch.shape[0] // world
    return batch[rank * per : (rank + 1) * per]


class StepBatches:
    """Global step -> (epoch, step within the epoch, this process's row indices (global_batch / world,)).

    The epoch's permutation depends only on (seed, epoch), so a resumed run at step s draws the same
    rows as an uninterrupted one; the permutation is computed once per epoch.
    """

    def __init__(self, num_images: int, global_batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.num_images, self.global_batch, self.seed = num_images, global_batch, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = num_images // global_batch
        self._epoch: tuple[int, torch.Tensor] | None = None

    def __call__(self, step: int) -> tuple[int, int, torch.Tensor]:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_batches(self.num_images, self.global_batch, self.seed, epoch))
        return epoch, in_epoch, process_slice(self._epoch[1][in_epoch], self.rank, self.world)


# -------------------------------------------------------------------------------------------------- batchnorm

def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the union of every process's batch; the plain BatchNorm when there is one process.

    forward: (N, C) or (N, C, *spatial) -> same shape. Statistics are computed in float32 with two
    autograd-aware all-reduces (mean, then centred second moment), so gradients flow to every process's
    inputs exactly as with one process on the global batch. All processes must use the same local N.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        world = _world_size()
        if not self.training or world == 1:
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = x.numel() // x.shape[1] * world
        mean = all_reduce(x.sum(dim=dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dim=dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * count / max(count - 1, 1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return out.to(input.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm1d/2d by a cross-process one: SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere.

    State-dict keys are unchanged. Call before wrapping the model for data parallelism.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(device=child.weight.device if child.weight is not None else device)
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, device)
    return module


# ------------------------------------------------------------------------------------------------ checkpoints

def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointManager:
    """Training checkpoints under ``root``: ``step-00000123/`` folders, the newest ``keep`` of them kept.

    A checkpoint is ``Accelerator.save_state`` output (model as safetensors; optimizer, scheduler and RNG
    states as accelerate writes them) plus ``training_state.json`` and ``config.json`` of ours, and the
    marker ``COMPLETE.json`` = {step, files: {relative path: sha256}} written last. Everything is written
    into ``.tmp-step-*`` and renamed only when complete, so a crash mid-save leaves the previous
    checkpoint in use; :meth:`latest` ignores (and the main process deletes) incomplete folders.
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"CheckpointManager: keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    @staticmethod
    def _step_of(path: Path) -> int | None:
        name = path.name
        if not name.startswith(_STEP_PREFIX):
            return None
        try:
            return int(name[len(_STEP_PREFIX):])
        except ValueError:
            return None

    def is_complete(self, folder: Path) -> bool:
        """True when the marker exists and every listed file has its recorded sha256."""
        marker = folder / MARKER_FILE
        if not marker.is_file():
            return False
        try:
            info = json.loads(marker.read_text())
            files = info["files"]
            return bool(files) and all(
                (folder / rel).is_file() and sha256_file(folder / rel) == digest for rel, digest in files.items()
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(self._step_of(p), p) for p in self.root.iterdir() if p.is_dir()]
        return [p for step, p in sorted((s, p) for s, p in found if s is not None) if self.is_complete(p)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        done = self.complete_checkpoints()
        return done[-1] if done else None

    def clean_incomplete(self) -> list[Path]:
        """Delete temporary and marker-less/corrupt step folders (main process only). Returns what was removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        for p in self.root.iterdir():
            if p.is_dir() and (p.name.startswith(_TMP_PREFIX) or (self._step_of(p) is not None and not self.is_complete(p))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed

    def save(self, accelerator: Any, step: int, state: Mapping[str, Any], config: Mapping[str, Any]) -> Path:
        """Save the accelerator's registered objects + ``state`` + ``config`` as ``step-{step}``; all processes call."""
        final = self.root / f"{_STEP_PREFIX}{step:08d}"
        tmp = self.root / f"{_TMP_PREFIX}{step:08d}"
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(tmp / STATE_FILE, dict(state))
            _write_json(tmp / CONFIG_FILE, dict(config))
            files = {
                str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            _write_json(tmp / MARKER_FILE, {"step": step, "files": files})
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(self.root)
            # Prune by marker and step, without re-hashing every kept checkpoint on every save: the one just
            # written was hashed above, and latest() verifies hashes when a run resumes.
            marked = sorted((s, p) for p in self.root.iterdir()
                            if (s := self._step_of(p)) is not None and (p / MARKER_FILE).is_file())
            for _, old in marked[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(accelerator: Any, folder: Path) -> dict[str, Any]:
        """Restore model / optimizer / scheduler / RNG from ``folder``; return its training state dict.

        accelerate reads its pickled states through ``torch.load(weights_only=True)`` (its default since
        torch 2.4); only load checkpoints this recipe wrote — never a training checkpoint from the Hub.
        """
        accelerator.load_state(str(folder))
        return json.loads((folder / STATE_FILE).read_text())

    def start_or_resume(self, accelerator: Any, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                        resumable: set[str], log_dir: Path) -> tuple[dict[str, Any], Path | None]:
        """Begin a run: resume from the newest complete checkpoint, or start clean.

        resume: restore the newest complete checkpoint (incomplete ones are deleted first); every config key
        outside ``resumable`` must equal the saved one. Without resume, existing checkpoints are refused
        unless ``overwrite``, which deletes them and ``log_dir``. Returns (saved training state or {}, folder or None).
        """
        from .config import ConfigError

        if resume:
            if accelerator.is_main_process:
                self.clean_incomplete()
            accelerator.wait_for_everyone()
            latest = self.latest()
            if latest is None:
                return {}, None
            saved = json.loads((latest / "config.json").read_text())
            changed = {k: (saved.get(k), v) for k, v in config.items() if k not in resumable and saved.get(k) != v}
            if changed:
                raise ConfigError(f"--resume from {latest}: these keys differ from the checkpoint's config "
                                  f"(saved, now): {changed}")
            return self.load(accelerator, latest), latest
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise ConfigError(f"{self.root} already holds checkpoints; pass --resume to continue, --overwrite "
                                  "to start again, or choose another --output_dir")
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                shutil.rmtree(self.root)
                shutil.rmtree(log_dir, ignore_errors=True)
            accelerator.wait_for_everyone()
        return {}, None


# --------------------------------------------------------------------------------------------------- tracking

def _json_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _tracker_base() -> type:
    from accelerate.tracking import GeneralTracker

    return GeneralTracker


class JSONLTracker:
    """Factory for an ``accelerate`` tracker writing ``<logging_dir>/<run_name>.jsonl``: one object per ``log``.

    ``JSONLTracker(run_name, logging_dir)`` returns an instance of a ``GeneralTracker`` subclass (built on
    first use so that importing this module does not import accelerate). Lines: {"step", "time", **values};
    the first line is {"config": ...} when ``store_init_configuration`` is called.
    """

    _cls: type | None = None

    def __new__(cls, run_name: str, logging_dir: str | os.PathLike[str]) -> Any:
        if cls._cls is None:
            base = _tracker_base()

            class _JSONL(base):  # type: ignore[misc, valid-type]
                name = "jsonl"
                requires_logging_directory = True

                def __init__(self, run_name: str, logging_dir: str | os.PathLike[str]) -> None:
                    super().__init__()
                    self.run_name = run_name
                    self.path = Path(logging_dir) / f"{run_name}.jsonl"

                def start(self) -> None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)

                @property
                def tracker(self) -> Path:
                    return self.path

                def _append(self, obj: dict[str, Any]) -> None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.path, "a") as f:
                        f.write(json.dumps(obj) + "\n")

                def store_init_configuration(self, values: dict) -> None:
                    self._append({"config": {k: _json_value(v) for k, v in values.items()}})

                def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
                    self._append({"step": step, "time": time.time(), **{k: _json_value(v) for k, v in values.items()}})

            cls._cls = _JSONL
        return cls._cls(run_name, logging_dir)


# ----------------------------------------------------------------------------------------------- environment

class LaunchError(RuntimeError):
    """The processes were started in a way that would silently train the wrong thing."""


_LAUNCH_HINT = (
    "To run N processes on CPU use: accelerate launch --multi_gpu --num_processes N --num_machines 1 "
    "recipes/pretrain.py ... (the recipe then creates Accelerator(cpu=True) itself when there is no GPU; "
    "do not pass --cpu false), or set ACCELERATE_USE_CPU=1. For one process use --num_processes 1."
)


def check_distributed_launch(num_processes: int, env: Mapping[str, str] | None = None) -> None:
    """Raise LaunchError when the launcher asked for several processes but accelerate sees only one.

    Two cases are caught: (1) ``WORLD_SIZE``/``LOCAL_WORLD_SIZE`` > 1 (torchrun / ``accelerate launch
    --multi_gpu``) while the Accelerator reports one process — each process would train alone on its own
    copy; this is what ``--multi_gpu`` without ``--cpu``/``ACCELERATE_USE_CPU`` gives on a machine
    without GPUs. (2) ``accelerate launch --cpu --num_processes N`` (N > 1) without MPI starts a *single*
    process (it only sets MASTER_ADDR/MASTER_PORT and no WORLD_SIZE).
    """
    env = os.environ if env is None else env

    def as_int(key: str) -> int:
        try:
            return int(env.get(key, "") or 0)
        except ValueError:
            return 0

    world = max(as_int("WORLD_SIZE"), as_int("LOCAL_WORLD_SIZE"))
    if world > 1 and num_processes == 1:
        raise LaunchError(
            f"the launcher started {world} processes (WORLD_SIZE={env.get('WORLD_SIZE')}, LOCAL_WORLD_SIZE="
            f"{env.get('LOCAL_WORLD_SIZE')}) but accelerate runs each one alone (num_processes=1): they would "
            f"train {world} unrelated models. {_LAUNCH_HINT}"
        )
    mpi = any(as_int(k) > 1 for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in env
    if (num_processes == 1 and launched_by_accelerate and not mpi and "WORLD_SIZE" not in env
            and env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise LaunchError(
            "accelerate launch was asked for several processes (it set MASTER_ADDR/MASTER_PORT) but started "
            f"only this one: with --cpu and no MPI it runs a single process. {_LAUNCH_HINT}"
        )


def hardware_string(device: torch.device, num_processes: int = 1) -> str:
    """E.g. '2 x Intel(R) Xeon(R) ... (2 threads), torch 2.x' or 'NVIDIA A100 x 8, torch 2.x'."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"{name} ({torch.get_num_threads()} threads per process)"
    return f"{num_processes} process(es) on {name}, torch {torch.__version__}"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA max allocated, else the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):
        return float("nan")


def lr_factor(step: int, total_steps: int, *, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then constant or cosine to 0 at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_accelerator(*, cpu: bool | None, precision: str, run_dir: Path, log_with: list[Any]) -> tuple[Any, str]:
    """An ``accelerate.Accelerator`` for a recipe, and the precision it trains in ("bf16" or "fp32").

    cpu=None picks the CPU when no GPU is visible; precision "auto" is bf16 autocast where the device
    runs it natively (CUDA with bf16, CPUs with AMX / AVX512-BF16). Fails loudly on a launch that
    started unrelated single processes (:func:`check_distributed_launch`).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, parse_flag_from_env

    from .probes import bf16_is_fast

    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    use_cpu = use_cpu or parse_flag_from_env("ACCELERATE_USE_CPU")  # `accelerate launch --cpu` on a GPU machine
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(torch.device("cpu" if use_cpu else "cuda")) else "fp32"
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision="bf16" if precision == "bf16" else "no",
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        step_scheduler_with_optimizer=False,  # one scheduler.step() per optimiser step, whatever the world size
    )
    check_distributed_launch(accelerator.num_processes)
    return accelerator, precision


def place_images(images: torch.Tensor, device: torch.device, max_device_bytes: int = 2 << 30) -> torch.Tensor:
    """Where a decoded uint8 split (N, 3, H, W) lives during training: on the accelerator when it fits in
    ``max_device_bytes`` (gathers then never cross the bus), else in pinned host memory, from which each
    step copies only its own rows (ImageNet-100 at 146 px is ~8 GB: not one copy per GPU)."""
    if device.type == "cpu":
        return images
    if images.numel() * images.element_size() <= max_device_bytes:
        return images.to(device)
    return images.pin_memory()

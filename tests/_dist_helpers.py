"""Helpers of the multi-process tests, and the worker of the losses' 2-process gloo test.

Launch helpers: :func:`accelerate_launch` runs ``accelerate launch`` with N processes on this machine;
:func:`start_machines` starts one ``accelerate launch --num_machines M --machine_rank r`` per "machine", all on
127.0.0.1 (gloo, one process each), the way a cluster starts one launcher per node; :func:`signal_machine`
sends a signal to a machine's launcher and its workers (torchrun starts each worker in a session of its own, so
a signal to the launcher's process group would miss them).

The worker, run as a script (no pickle): ``python _dist_helpers.py RANK WORLD PORT DIR``. Reads
DIR/inputs.safetensors (global "x" (M, N, k), Linear "weight" (d, k) and "bias" (d,)), takes its own half of the
batch, wraps the Linear in DDP, computes each case's loss with distributed=True, backpropagates and writes
DIR/rank{RANK}.safetensors (loss, local input grad, DDP-averaged parameter grads per case) and
DIR/rank{RANK}.json (the message of the unequal-N error, and any host read of a tensor made by a
second, steady-state call of each case: there must be none).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from mvssl_hub.losses import barlow_twins_loss, vicreg_loss

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(procs: int, machines: int = 1, machine_rank: int = 0, port: int | None = None,
             config_file: Path | None = None) -> list[str]:
    """The ``accelerate launch`` command line of ``procs`` processes in all over ``machines`` machines; flags win
    over ``config_file``'s values."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", str(config_file)] if config_file else []
    cmd += ["--num_machines", str(machines),
           "--mixed_precision", "no", "--dynamo_backend", "no", "--num_processes", str(procs)]
    if procs > 1:
        cmd += ["--multi_gpu", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port or free_port())]
    if machines > 1:
        cmd += ["--machine_rank", str(machine_rank)]
    return cmd


def launch_env(procs: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("ACCELERATE_USE_CPU", None)
    if 0 < torch.cuda.device_count() < procs:
        # fewer GPUs than ranks: two NCCL ranks cannot share one GPU, so these runs use gloo on the CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def accelerate_launch(args: list[str], procs: int, timeout: float = 180) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``procs`` processes on this one machine; waits for it."""
    return subprocess.run(launcher(procs) + args, cwd=ROOT, env=launch_env(procs), capture_output=True, text=True,
                          timeout=timeout)


def start_machines(args: list[str], logs: Path, machines: int = 2, config_file: Path | None = None
                   ) -> list[subprocess.Popen]:
    """One ``accelerate launch --machine_rank r`` per machine (one process each), not waited for; machine r's
    output goes to ``logs/machine{r}.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return [subprocess.Popen(launcher(machines, machines, r, port, config_file) + args, cwd=ROOT,
                             env=launch_env(machines),
                             stdout=open(logs / f"machine{r}.log", "w"), stderr=subprocess.STDOUT)
            for r in range(machines)]


def signal_machine(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a machine's launcher and every process under it (its torchrun agent and workers)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def finish_machines(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes of the machines' launchers; any still running after ``timeout`` seconds is killed (-9)."""
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            signal_machine(p)
            codes.append(p.wait())
    return codes


# name -> (loss function, keyword arguments, number of views used)
CASES = {
    "bt_classic": (barlow_twins_loss, {"beta": 0.02, "form": "classic"}, 2),
    "bt_mean": (barlow_twins_loss, {"beta": 0.02, "form": "mean"}, 3),
    "bt_all_pairs": (barlow_twins_loss, {"beta": 0.02, "form": "all_pairs"}, 3),
    "vic_classic": (vicreg_loss, {"beta": 0.04, "form": "classic"}, 2),
    "vic_leave_one_out": (vicreg_loss, {"beta": 0.04, "form": "leave_one_out"}, 3),
    "vic_all_pairs": (vicreg_loss, {"beta": 0.04, "form": "all_pairs"}, 3),
}


@contextlib.contextmanager
def forbid_host_reads():
    """Reading a tensor's value on the host (a CUDA sync) raises AssertionError inside this block."""
    names = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
    saved = {k: torch.Tensor.__dict__.get(k) for k in names}

    def make(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read of a tensor: Tensor.{name}")
        return read

    for k in names:
        setattr(torch.Tensor, k, make(k))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                delattr(torch.Tensor, k)
            else:
                setattr(torch.Tensor, k, v)


def make_linear(tensors: dict[str, torch.Tensor]) -> torch.nn.Linear:
    d, k = tensors["weight"].shape
    lin = torch.nn.Linear(k, d).double()
    with torch.no_grad():
        lin.weight.copy_(tensors["weight"])
        lin.bias.copy_(tensors["bias"])
    return lin


def main(rank: int, world: int, port: int, out_dir: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        tensors = load_file(str(out_dir / "inputs.safetensors"))
        x = tensors["x"]
        n_local = x.shape[1] // world
        results: dict[str, torch.Tensor] = {}
        for name, (fn, kwargs, m) in CASES.items():
            x_local = x[:m, rank * n_local:(rank + 1) * n_local].clone().requires_grad_(True)
            model = DistributedDataParallel(make_linear(tensors))
            loss = fn(model(x_local), distributed=True, **kwargs)
            loss.backward()
            results[f"{name}.loss"] = loss.detach().reshape(1)
            results[f"{name}.x_grad"] = x_local.grad
            results[f"{name}.weight_grad"] = model.module.weight.grad
            results[f"{name}.bias_grad"] = model.module.bias.grad
        save_file(results, str(out_dir / f"rank{rank}.safetensors"))

        # Steady state: this (world, N) was checked by the first calls, so the loss reads nothing back.
        host_reads = {}
        for name, (fn, kwargs, m) in CASES.items():
            z = make_linear(tensors)(x[:m, rank * n_local:(rank + 1) * n_local])
            try:
                with forbid_host_reads():
                    fn(z, distributed=True, **kwargs).backward()
                host_reads[name] = ""
            except AssertionError as err:
                host_reads[name] = str(err)

        # Unequal batch sizes across ranks must raise on every rank (not hang).
        z_bad = torch.randn(2, 4 + rank, 3, dtype=torch.float64)
        message = ""
        try:
            barlow_twins_loss(z_bad, 0.02, distributed=True)
        except ValueError as err:
            message = str(err)
        (out_dir / f"rank{rank}.json").write_text(json.dumps({"unequal_n_error": message,
                                                                "host_reads": host_reads}))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))

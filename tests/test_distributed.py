"""Several processes: 2 gloo processes (on one machine or two) == 1 process on the global batch; the recipe under
2 processes; bad launches.

Processes are started with ``accelerate launch`` (the way users start them) on 127.0.0.1 only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mvssl_hub.distributed import LaunchError, check_distributed_launch

from _dist_helpers import accelerate_launch, finish_machines, start_machines

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data" / "cifar10-5k"

# One training step of the recipe's model/loss/BatchNorm setup on fixed views (no augmentation randomness):
# the global batch is split across processes with the recipe's process_slice.
WORKER = r'''
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from mvssl_hub.losses import build_loss
from mvssl_hub.models import build_ssl_model
from mvssl_hub.distributed import check_distributed_launch, convert_batchnorm
from mvssl_hub.data.sampling import process_slice

out, tag = Path(sys.argv[1]), sys.argv[2]
acc = Accelerator(cpu=True)
check_distributed_launch(acc.num_processes)
world, rank = acc.num_processes, acc.process_index
views = load_file(str(out / "views.safetensors"))["views"]  # (M, N, 3, 32, 32), float32
result = {}
for method, beta in (("barlowtwins", 0.02), ("vicreg", 0.04)):
    torch.manual_seed(0)
    model = build_ssl_model("resnet18", width=8, proj_dim=32)
    if world > 1:
        model = convert_batchnorm(model, acc.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model, optimizer = acc.prepare(model, optimizer)
    idx = process_slice(torch.arange(views.shape[1]), rank, world)
    z = model(views[:, idx])
    loss = build_loss(method, beta, distributed=world > 1)(z)
    acc.backward(loss)
    inner = acc.unwrap_model(model)
    result[f"{method}.loss"] = loss.detach().reshape(1)
    for name, p in inner.named_parameters():
        result[f"{method}.grad.{name}"] = p.grad.detach().clone()
    optimizer.step()
    for name, t in inner.state_dict().items():
        result[f"{method}.after.{name}"] = t.detach().clone()
    result[f"{method}.local_batch"] = torch.tensor([idx.numel()])
if rank == 0:
    save_file({k: v.contiguous() for k, v in result.items()}, str(out / f"{tag}.safetensors"))
acc.wait_for_everyone()
'''


def test_two_processes_match_one_process_on_the_global_batch(tmp_path: Path) -> None:
    # two processes on one machine, and on two machines (one `accelerate launch --machine_rank r` each, the way a
    # cluster starts them): both train what one process does on the global batch
    torch.manual_seed(1)
    views = torch.randn(3, 16, 3, 32, 32)
    save_file({"views": views}, str(tmp_path / "views.safetensors"))
    (tmp_path / "worker.py").write_text(WORKER)
    worker = [str(tmp_path / "worker.py"), str(tmp_path)]
    machines = start_machines([*worker, "machines"], tmp_path / "logs")
    for name, procs in (("one", 1), ("two", 2)):
        run = accelerate_launch([*worker, name], procs)
        assert run.returncode == 0, run.stderr[-3000:]
    assert finish_machines(machines, timeout=180) == [0, 0], (tmp_path / "logs" / "machine0.log").read_text()[-3000:]
    one = load_file(str(tmp_path / "one.safetensors"))
    for name in ("two", "machines"):
        assert_same_training(load_file(str(tmp_path / f"{name}.safetensors")), one)


def assert_same_training(two: dict[str, torch.Tensor], one: dict[str, torch.Tensor]) -> None:
    """Two processes on 8 images each (``two``) trained as one process on the 16 (``one``): losses, every
    gradient, and the weights and BatchNorm statistics after one Adam step."""
    assert one.keys() == two.keys()
    for method in ("barlowtwins", "vicreg"):
        assert int(one[f"{method}.local_batch"]) == 16 and int(two[f"{method}.local_batch"]) == 8
        torch.testing.assert_close(two[f"{method}.loss"], one[f"{method}.loss"], rtol=1e-5, atol=1e-6)
        grads = [k for k in one if k.startswith(f"{method}.grad.")]
        assert len(grads) > 60  # every backbone and projector parameter
        for k in grads:
            scale = one[k].abs().max().item() + 1e-12
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{k}: {m}")
        # after one Adam step: weights and BatchNorm running statistics (global-batch BN) agree too
        for k in (k for k in one if k.startswith(f"{method}.after.")):
            if one[k].is_floating_point():
                torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
            else:
                assert torch.equal(two[k], one[k]), k


def test_recipe_runs_on_two_processes_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [str(ROOT / "recipes" / "pretrain.py"), "--data", str(DATA), "--limit", "64", "--eval_limit", "40",
            "--knn_k", "10", "--width", "8", "--proj_dim", "32", "--num_views", "2", "--batch_size", "16",
            "--precision", "fp32", "--output_dir", str(out), "--progress", "false", "--log_every", "1",
            "--run_state_every", "2", "--knn_random_init", "false"]
    run = accelerate_launch(args + ["--max_steps", "2", "--export", "false"], 2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "global batch 16 = 2 x 8 per process" in run.stdout
    run_state = out / "run_states" / "step-00000002"
    assert (run_state / "random_states_0.pkl").is_file() and (run_state / "random_states_1.pkl").is_file()
    cfg = json.loads((run_state / "run_config.json").read_text())
    assert (cfg["num_processes"], cfg["per_process_batch"], cfg["global_batch"]) == (2, 8, 16)
    run = accelerate_launch(args + ["--max_steps", "3", "--resume"], 2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed from" in run.stdout and "step-00000002" in run.stdout
    state = json.loads((out / "run_states" / "step-00000003" / "training_state.json").read_text())
    assert state["global_step"] == 3 and state["knn"] is not None
    assert (out / "export" / "model.safetensors").is_file()


def test_two_unrelated_processes_are_detected(tmp_path: Path) -> None:
    # --multi_gpu on a machine without GPUs and without Accelerator(cpu=True): each process trains alone.
    args = [str(ROOT / "recipes" / "pretrain.py"), "--data", str(DATA), "--limit", "32", "--cpu", "false",
            "--output_dir", str(tmp_path / "run"), "--progress", "false"]
    if torch.cuda.device_count() > 1:
        pytest.skip("with several GPUs --cpu false is a valid multi-GPU launch")
    run = accelerate_launch(args, 2, timeout=120)
    assert run.returncode != 0
    assert "LaunchError" in run.stderr and "--multi_gpu --num_processes N --num_machines 1" in run.stderr
    assert not (tmp_path / "run" / "run_states").exists()


def test_launch_check_unit() -> None:
    check_distributed_launch(1, {})
    check_distributed_launch(2, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match=r"started 2 processes.*train 2 unrelated models"):
        check_distributed_launch(1, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    # `accelerate launch --cpu --num_processes 2` without MPI: one process, MASTER_ADDR set, no WORLD_SIZE
    env = {"ACCELERATE_MIXED_PRECISION": "no", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(LaunchError, match="started only this one"):
        check_distributed_launch(1, env)
    check_distributed_launch(1, {**env, "PMI_SIZE": "2"} | {"WORLD_SIZE": "1"})
    check_distributed_launch(1, {"ACCELERATE_MIXED_PRECISION": "no"})  # plain `accelerate launch` of 1 process


@pytest.mark.parametrize(("minutes", "at_start"), [(5, 60), (90, 90)])
def test_collectives_wait_for_the_start_up_then_for_dist_timeout_minutes(
        minutes: float, at_start: float, tmp_path: Path, fresh_accelerate_state) -> None:
    # rank 0 may download and decode a large split under main_process_first while the others wait at the barrier:
    # the process group starts with at least an hour, and open_run_state then tightens it to dist_timeout_minutes
    # (that a frozen machine then stops the run within that limit: tests/test_multinode.py)
    from datetime import timedelta

    from mvssl_hub.train import collectives
    from mvssl_hub.train.backends import make_accelerator

    accelerator, _ = make_accelerator(cpu=True, precision="fp32", run_dir=tmp_path, log_with=[],
                                      timeout_minutes=minutes)
    assert accelerator.init_handler.to_kwargs() == {"timeout": timedelta(minutes=at_start)}
    assert collectives._armed["timeout"] == timedelta(minutes=minutes)


def test_a_failed_collective_is_told_from_other_errors() -> None:
    from mvssl_hub.train.collectives import is_collective_failure, lost_process_error

    closed = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:5: Connection "
                          "reset by peer")
    assert is_collective_failure(closed) and is_collective_failure(torch.distributed.DistBackendError("NCCL"))
    assert not is_collective_failure(RuntimeError("shape mismatch")) and not is_collective_failure(ValueError("x"))
    assert lost_process_error(closed) is None  # one process: nobody to lose, the error stands


def test_a_process_that_does_not_see_the_output_folder_stops_the_run(tmp_path: Path, fresh_accelerate_state) -> None:
    # what rank 1 of 2 meets when output_dir is a local folder of machine 0 (two machines, no shared filesystem);
    # every two-process test passes through the same check with a folder both see
    from mvssl_hub.errors import ConfigError
    from mvssl_hub.train.startup import check_shared_folder

    class RankOneOfTwo:  # the collectives of one process: rank 0 saw its own file, this one sees none
        num_processes, is_main_process, device = 2, False, torch.device("cpu")

        def gather(self, seen: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.ones(1), seen])

    with pytest.raises(ConfigError, match=r"'output_dir' = .*: process\(es\) of rank \[1\] do not see the file"):
        check_shared_folder(RankOneOfTwo(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # not the main process: it writes nothing there

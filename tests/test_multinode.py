"""Two machines: one ``accelerate launch --num_machines 2 --machine_rank r`` each (gloo, one process each), all on
127.0.0.1, the way a cluster starts one launcher per node. (That they train what one process does on the global
batch: tests/test_distributed.py.) Here: when one machine freezes or dies, the other stops within the
collectives' limit and names it, leaving only complete run states, and both relaunched with --resume end bit for bit
where an uninterrupted run does; the streamed data gives each machine a disjoint share that, with the other's,
covers the epoch, also after a resume.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mvssl_hub.data.splits import load_split
from mvssl_hub.train.run_state import RunStateManager

from _dist_helpers import ROOT, finish_machines, signal_machine, start_machines

pytest.importorskip("accelerate")
pytest.importorskip("psutil")  # signal_machine: a machine's launcher and the workers under it

DATA = ROOT / "recipes" / "data" / "cifar10-5k"
# The smallest run of the recipe: 64 images, batch 16 (8 per machine) = 4 steps per epoch, kNN and export off.
RUN = [str(ROOT / "recipes" / "pretrain.py"), "--data", str(DATA), "--limit", "64", "--eval_split", "",
       "--width", "8", "--proj_dim", "32", "--num_views", "2", "--batch_size", "16", "--precision", "fp32",
       "--progress", "false", "--log_every", "1", "--export", "false", "--monitors", "false"]


def wait_for(path: Path, procs: list, timeout: float = 120) -> None:
    """Until ``path`` exists (the run reached a point); fails if every machine ended before."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        assert any(p.poll() is None for p in procs), f"the machines ended before {path} appeared"
        time.sleep(0.05)


def log(logs: Path, machine: int) -> str:
    return (logs / f"machine{machine}.log").read_text()


def assert_only_complete_run_states(root: Path) -> RunStateManager:
    run_states = RunStateManager(root)
    folders = sorted(root.glob("step-*"))
    assert folders and all(run_states.problem(f) is None for f in folders), [run_states.problem(f) for f in folders]
    return run_states


def test_a_frozen_machine_stops_the_other_in_time_and_a_relaunch_resumes_bitwise(tmp_path: Path) -> None:
    # Machine 1 freezes mid-run (a hung machine, a lost network: nothing closes its connections): machine 0's
    # collective fails after dist_timeout_minutes, a roll call names the missing rank within min(30 s, that limit),
    # and machine 0 stops leaving only complete run states. Machine 1 is then killed (it is not coming back), and
    # both machines relaunched with --resume end bit for bit where an uninterrupted run (alongside) does.
    limit_s = 6
    steps = ["--max_steps", "12", "--run_state_every", "1", "--dist_timeout_minutes", str(limit_s / 60)]  # 3 epochs
    cut = start_machines([*RUN, *steps, "--output_dir", str(tmp_path / "cut")], tmp_path / "cut_logs")
    whole: list = []
    try:
        wait_for(tmp_path / "cut" / "run_states" / "step-00000003", cut)
        frozen = time.monotonic()
        signal_machine(cut[1], signal.SIGSTOP)
        # the uninterrupted run starts now, while machine 0 waits out the limit
        whole = start_machines([*RUN, *steps, "--output_dir", str(tmp_path / "whole")], tmp_path / "whole_logs")
        [code] = finish_machines(cut[:1], timeout=2 * limit_s + 60)
        stopped_after = time.monotonic() - frozen
        signal_machine(cut[1], signal.SIGKILL)
        survivor = log(tmp_path / "cut_logs", 0)
        assert code == 1 and limit_s <= stopped_after < 2 * limit_s + 15, (code, stopped_after)
        assert f"error: rank 1 (machine 1) went away (no answer within {limit_s} s)" in survivor, survivor[-3000:]
        assert "Timed out" in survivor  # the collective's limit, not a closed connection
        resumed_from = assert_only_complete_run_states(tmp_path / "cut" / "run_states").latest()
        assert resumed_from is not None and resumed_from.name < "step-00000012"  # stopped mid-run
        again = start_machines([*RUN, *steps, "--output_dir", str(tmp_path / "cut"), "--resume"], tmp_path / "again")
        codes = finish_machines([*whole, *again], timeout=180)
    finally:
        for machine in (*whole, *cut):
            signal_machine(machine)
    assert codes == [0, 0, 0, 0], log(tmp_path / "again", 0)[-3000:]
    assert f"resumed from {resumed_from}" in log(tmp_path / "again", 0)
    final = [load_file(str(tmp_path / run / "run_states" / "step-00000012" / "model.safetensors"))
             for run in ("whole", "cut")]
    assert final[0].keys() == final[1].keys() and len(final[0]) > 60
    for name, tensor in final[0].items():  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(tensor, final[1][name]), name


def test_when_machine_0_is_killed_the_other_stops_at_once_naming_it(tmp_path: Path) -> None:
    # Machine 0 (the main process, which writes the run states, and the rendezvous store) is killed, every process
    # of it, wherever it was (a save included): its connections close, machine 1's next collective fails at once,
    # and the store it would hold the roll call in is gone with it.
    logs = tmp_path / "logs"
    machines = start_machines([*RUN, "--max_steps", "400", "--run_state_every", "1", "--output_dir", str(tmp_path / "run"),
                               "--dist_timeout_minutes", "0.1"], logs)
    try:
        wait_for(tmp_path / "run" / "run_states" / "step-00000002", machines)
        killed = time.monotonic()
        signal_machine(machines[0], signal.SIGKILL)
        assert finish_machines(machines, timeout=60) == [-9, 1]
        stopped_after = time.monotonic() - killed
    finally:
        signal_machine(machines[0])
    survivor = log(logs, 1)
    assert stopped_after < 15 and "Timed out" not in survivor, stopped_after
    assert re.search(r"error: machine 0 went away \(its rendezvous store at 127\.0\.0\.1:\d+ no longer answers\) "
                     r"after a collective failed", survivor), survivor[-3000:]
    assert "This process, rank 1 (machine 1), stops too" in survivor and "--resume" in survivor
    run_states = assert_only_complete_run_states(tmp_path / "run" / "run_states")
    assert run_states.latest() is not None and not (tmp_path / "run" / "export").exists()


STREAM_WORKER = r'''
import hashlib
import json
import sys
from pathlib import Path

from recipes.pretrain import setup

cfg, run, data, trainer = setup(sys.argv[2:])
steps = 2 * data.steps_per_epoch
digest = lambda images: [hashlib.sha256(im.numpy().tobytes()).hexdigest() for im in images]
first = [digest(trainer.batches(s).images) for s in range(steps)]
resume_at = 3  # mid-epoch and mid-window: a fresh stream from here is what a resumed run reads
again = [digest(trainer.batches(s).images) for s in range(resume_at, steps)]
trainer.batches.close()
out = Path(sys.argv[1]) / f"rank{run.accelerator.process_index}.json"
out.write_text(json.dumps({"steps_per_epoch": data.steps_per_epoch, "first": first, "again": again,
                           "resume_at": resume_at}))
'''


def test_streamed_shares_are_disjoint_and_cover_each_epoch_across_a_resume(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(STREAM_WORKER)
    # launched with the docs' accelerate config file, the address, sizes and precision given on the command line
    machines = start_machines([str(tmp_path / "worker.py"), str(tmp_path), *RUN[1:], "--streaming", "true",
                               "--stream_window", "32", "--stream_workers", "0", "--output_dir", str(tmp_path / "run")],
                              tmp_path / "logs", config_file=ROOT / "docs" / "accelerate_multinode.yaml")
    assert finish_machines(machines, timeout=180) == [0, 0], log(tmp_path / "logs", 0)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    every = {hashlib.sha256(im.numpy().tobytes()).hexdigest() for im in load_split(str(DATA), "train", limit=64).images}
    assert len(every) == 64
    per_epoch = ranks[0]["steps_per_epoch"]
    assert per_epoch == 4
    for epoch in (0, 1):
        shares = [[d for step in r["first"][epoch * per_epoch:(epoch + 1) * per_epoch] for d in step] for r in ranks]
        assert [len(s) for s in shares] == [32, 32] and all(len(set(s)) == 32 for s in shares)  # 8 a step, no repeat
        assert not set(shares[0]) & set(shares[1])  # disjoint
        assert set(shares[0]) | set(shares[1]) == every  # together: the whole epoch
    assert ranks[0]["first"][:per_epoch] != ranks[0]["first"][per_epoch:]  # a new order each epoch
    for r in ranks:  # a resumed stream reads exactly what the uninterrupted one did
        assert r["again"] == r["first"][r["resume_at"]:]

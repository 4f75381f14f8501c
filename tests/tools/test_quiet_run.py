"""tools/quiet_run.py: a long measurement pauses while other processes load the machine, and resumes after."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.quiet_run import machine_busy_ticks, process_tree, run_quietly

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A child that works until it has used 1.5 s of its own CPU time, then reports how long that took.
WORKER = "import time\nt = time.time()\nwhile time.process_time() < 1.5:\n    sum(range(10_000))\nprint(time.time() - t)"


def test_the_tree_and_the_machine_are_read_from_proc() -> None:
    before = machine_busy_ticks()
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                              "'import time; time.sleep(3)'])"])
    try:
        time.sleep(1.0)
        tree = process_tree(child.pid)
        assert child.pid in tree and len(tree) == 2  # the child and its own child
        assert machine_busy_ticks() >= before
    finally:
        child.kill()
        child.wait()


def test_a_run_waits_while_another_process_is_busy_and_finishes_after(tmp_path) -> None:
    said: list[str] = []
    noise = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 4:\n"
                              "    sum(range(10_000))"])
    try:
        code, waited = run_quietly([sys.executable, "-c", WORKER], interval=0.25, busy_samples=2, quiet_samples=2,
                                   say=said.append, stdout=open(tmp_path / "out.txt", "w"))
    finally:
        noise.kill()
        noise.wait()
    assert code == 0
    assert any(m.startswith("# quiet_run: paused") for m in said), said
    assert any(m.startswith("# quiet_run: resumed") for m in said), said
    assert waited >= 1.0  # it sat out most of the 4 busy seconds
    # its own work still got done: 1.5 s of CPU, however long it waited
    assert float((tmp_path / "out.txt").read_text()) >= 1.5


def test_a_failing_command_reports_its_exit_code() -> None:
    code, waited = run_quietly([sys.executable, "-c", "raise SystemExit(3)"], interval=0.1, say=lambda m: None)
    assert code == 3 and waited == 0.0


def test_disabled_it_runs_the_command_plainly_and_never_pauses(tmp_path: Path) -> None:
    said: list[str] = []
    script = f"open({str(tmp_path / 'ran.txt')!r}, 'w').write('yes'); raise SystemExit(5)"
    code, waited = run_quietly([sys.executable, "-c", script], enabled=False, interval=0.01, say=said.append)
    assert (code, waited, said) == (5, 0.0, [])
    assert (tmp_path / "ran.txt").read_text() == "yes"

"""Run a long measurement only while the machine is otherwise quiet: pause it whenever other processes load the CPU.

A run timed by its own CPU seconds (``--clock process``) still slows down beside other work: OpenMP threads
spin while a sibling waits for a core, and that spinning counts as the run's CPU time. On a 2-core machine
shared with a test suite, the network race's steps cost up to 2x their quiet price (16.7 CPU-s instead of ~8). ``run_quietly`` starts the
command, samples the machine every ``interval`` seconds, stops the command's process tree (SIGSTOP) when the
rest of the machine has used more than ``max_other_cores`` for ``busy_samples`` samples in a row, and resumes
it (SIGCONT) after ``quiet_samples`` quiet ones. A stopped process's clocks do not advance, so its time budget
and its curve see only quiet time; the wall time it waited is reported.

    python tools/quiet_run.py -- python recipes/pretrain.py ...   # the same, from a shell
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_ticks() -> int:
    """Clock ticks this machine's CPUs have spent working since boot (``/proc/stat``: user, nice, system, irq,
    softirq; not idle, iowait, nor the time the hypervisor stole for other machines)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = (fields + [0] * 7)[:7]
    return user + nice + system + irq + softirq


def process_tree(root: int) -> dict[int, int]:
    """{pid: ticks of CPU used} for ``root`` and its descendants, read from ``/proc/<pid>/stat``."""
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        rest = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
        parents[int(entry.name)] = int(rest[1])
        used[int(entry.name)] = int(rest[11]) + int(rest[12])  # utime + stime
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree and pid not in tree}
        tree |= children
        grew = bool(children)
    return {pid: used[pid] for pid in tree if pid in used}


def signal_tree(root: int, sig: int) -> None:
    for pid in process_tree(root):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def run_quietly(cmd: list[str], *, enabled: bool = True, max_other_cores: float = 0.5, interval: float = 2.0,
                busy_samples: int = 2, quiet_samples: int = 3, say: Callable[[str], None] = print,
                **popen) -> tuple[int, float]:
    """Run ``cmd`` (``subprocess.Popen`` keywords in ``popen``) paused whenever the rest of the machine is busy;
    returns (exit code, seconds it spent paused). ``enabled=False`` runs it plainly (smoke runs: beside a test
    suite the machine is never quiet, and their numbers mean nothing)."""
    if not enabled:
        return subprocess.call(cmd, **popen), 0.0
    child = subprocess.Popen(cmd, **popen)
    paused, paused_since, paused_total, streak = False, 0.0, 0.0, 0
    last_t, last_busy, last_mine = time.monotonic(), machine_busy_ticks(), 0
    try:
        while child.poll() is None:
            time.sleep(interval)
            now, busy, tree = time.monotonic(), machine_busy_ticks(), process_tree(child.pid)
            mine = sum(tree.values())
            others = max(0, (busy - last_busy) - max(0, mine - last_mine)) / TICKS / max(now - last_t, 1e-6)
            last_t, last_busy, last_mine = now, busy, mine
            loud = others > max_other_cores
            streak = streak + 1 if loud != paused else 0  # samples in a row that argue for a change
            if not paused and streak >= busy_samples:
                signal_tree(child.pid, signal.SIGSTOP)
                paused, paused_since, streak = True, now, 0
                say(f"# quiet_run: paused (other processes use {others:.1f} cores)")
            elif paused and streak >= quiet_samples:
                signal_tree(child.pid, signal.SIGCONT)
                paused_total += now - paused_since
                paused, streak = False, 0
                say(f"# quiet_run: resumed after {now - paused_since:.0f} s")
    except BaseException:
        signal_tree(child.pid, signal.SIGCONT)
        child.terminate()
        child.wait()
        raise
    finally:
        if paused:
            paused_total += time.monotonic() - paused_since
    return child.returncode, paused_total


if __name__ == "__main__":
    if "--" not in sys.argv:
        sys.exit("usage: python tools/quiet_run.py -- COMMAND [ARGS...]")
    code, waited = run_quietly(sys.argv[sys.argv.index("--") + 1:], say=lambda m: print(m, flush=True))
    print(f"# quiet_run: exit code {code}; paused {waited:.0f} s in all", flush=True)
    sys.exit(code)

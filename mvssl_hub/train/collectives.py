"""How long a collective may wait, and which process went away when one fails.

Every collective of a run (all-reduce, all-gather, barrier) fails after ``dist_timeout_minutes`` instead of
hanging when a machine stops answering. Until the run state is open the limit is at least
:data:`STARTUP_MINUTES`: rank 0 may download and decode a split under ``main_process_first`` while the others wait
at the barrier. :func:`arm` (at accelerator creation) records the run's limit; :func:`tighten` (once the run state
is open) applies it.

When a collective fails (a peer's connection closed: its machine died; or the limit passed: its machine hangs
or its network is gone), :func:`lost_process_error` holds a roll call in the rendezvous store that every launch
through torchrun (``accelerate launch`` included) keeps at ``MASTER_ADDR:MASTER_PORT``: each surviving process
writes its rank, waits up to :data:`ROLL_CALL_SECONDS` for the others, and the error names the ranks (and their
machines) that never answered. ``accelerate`` is not imported here.
"""

from __future__ import annotations

import os
import re
import socket
import time
import traceback
from collections.abc import Mapping
from datetime import timedelta

import torch.distributed as dist

from ..distributed import rank_and_world

__all__ = ["ROLL_CALL_SECONDS", "STARTUP_MINUTES", "LostProcessError", "arm", "is_collective_failure",
           "lost_process_error", "startup_timeout", "tighten"]

STARTUP_MINUTES = 60.0  # rank 0 downloading and decoding a large split while the others wait
ROLL_CALL_SECONDS = 30.0  # at most: how long survivors wait for each other after a failed collective
_ROLL_CALL_KEY = "mvssl_hub/roll_call/"
_armed: dict[str, timedelta] = {}


class LostProcessError(RuntimeError):
    """A process of the run went away (died, hung, or lost its network): the others stop."""


def startup_timeout(minutes: float) -> timedelta:
    """The process group's limit at creation: the run's, but at least :data:`STARTUP_MINUTES`."""
    return timedelta(minutes=max(minutes, STARTUP_MINUTES))


def arm(minutes: float) -> None:
    """Record the run's limit on a collective (applied by :func:`tighten`, used to size the roll call)."""
    _armed["timeout"] = timedelta(minutes=minutes)


def tighten() -> None:
    """From now on every collective of the default process group fails after the limit :func:`arm` recorded.
    No-op with one process or before :func:`arm`."""
    if "timeout" not in _armed or not (dist.is_available() and dist.is_initialized()):
        return
    set_timeout = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout  # torch < 2.12
    set_timeout(_armed["timeout"])


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` came out of a torch.distributed collective (a closed peer connection or a timeout)."""
    if isinstance(err, dist.DistError):
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err)
    if any(mark in text for mark in ("gloo/transport", "NCCL", "Connection reset by peer", "Connection closed by peer")):
        return True
    return any(f"torch{os.sep}distributed{os.sep}" in frame.filename for frame in traceback.extract_tb(err.__traceback__))


def _gist(err: BaseException) -> str:
    """The first sentence of ``err``'s message, without the backend's source location ("[.../pair.cc:545] ")."""
    line = (str(err).strip().splitlines() or [""])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line).split(". ")[0][:200]


def _machine(rank: int, env: Mapping[str, str]) -> str:
    local = int(env.get("LOCAL_WORLD_SIZE") or 1)
    return f"rank {rank} (machine {rank // max(local, 1)})"


def roll_call(wait_s: float, env: Mapping[str, str] | None = None) -> list[int] | None:
    """Ranks that did not answer within ``wait_s`` seconds; None when the rendezvous store itself does not answer
    (it lives on machine 0). Every surviving process calls it once, after a failed collective."""
    env = os.environ if env is None else env
    rank, world = rank_and_world()
    host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    try:  # a closed port answers at once; TCPStore itself would retry it for twice the wait
        socket.create_connection((host, port), timeout=wait_s).close()
    except OSError:
        return None
    try:
        store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=wait_s), wait_for_workers=False)
        store.set(f"{_ROLL_CALL_KEY}{rank}", "here")
        missing = [r for r in range(world) if r != rank]
        deadline = time.monotonic() + wait_s
        while missing and time.monotonic() < deadline:
            time.sleep(0.2)
            missing = [r for r in missing if not store.check([f"{_ROLL_CALL_KEY}{r}"])]
        return missing
    except (RuntimeError, dist.DistError):  # store unreachable or gone mid-call: machine 0 went away
        return None


def lost_process_error(err: BaseException, env: Mapping[str, str] | None = None) -> LostProcessError | None:
    """A :class:`LostProcessError` naming the ranks and machines that went away, when ``err`` is a failed
    collective of a multi-process run and the roll call finds someone missing; else None (``err`` stands)."""
    env = os.environ if env is None else env
    rank, world = rank_and_world()
    if world == 1 or not is_collective_failure(err) or not env.get("MASTER_ADDR") or not env.get("MASTER_PORT"):
        return None
    limit = _armed.get("timeout", timedelta(seconds=ROLL_CALL_SECONDS)).total_seconds()
    wait_s = min(ROLL_CALL_SECONDS, limit)
    missing = roll_call(wait_s, env)
    cause = f"{type(err).__name__}: {_gist(err)}"
    if missing is None:
        gone = f"machine 0 went away (its rendezvous store at {env['MASTER_ADDR']}:{env['MASTER_PORT']} no longer answers)"
    elif missing:
        gone = f"{', '.join(_machine(r, env) for r in missing)} went away (no answer within {wait_s:g} s)"
    else:
        return None  # everyone answered: not a lost process
    return LostProcessError(
        f"{gone} after a collective failed: {cause}. This process, {_machine(rank, env)}, stops too; complete run "
        "states are kept: once every machine is back, launch them all again with --resume")

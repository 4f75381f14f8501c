"""The one harness every benchmark and study uses: the result envelope, the timer, the isolated-worker protocol.

- **Envelope**: :func:`write_result` writes every JSON in ``benchmarks/results/`` (or ``--out``) as one flat
  object: ``benchmark`` (the script's name), ``command`` (as typed), ``cpu`` / ``cpu_isa``
  (``mvssl_hub.device.cpu_name`` / ``cpu_isa``), ``torch``, ``date`` (UTC, ISO 8601), and the measured values
  beside them. Flat, so that the README tables (``readme_tables.py``) read older results files, written before
  the envelope, and newer ones alike. :func:`check_envelope` is what the smoke test holds every script to.
- **Timer**: :class:`Timer` times a block (``perf_counter``, or the process's CPU clock), synchronising a CUDA
  device around it; :func:`median_seconds` runs a callable a few times and takes the median;
  :func:`interleaved_seconds` times several variants in turns (A/B in one run, the order flipped each repeat).
- **Workers**: :func:`run_worker` runs one case in a child process (an instruction-set level, a convolution
  that may hang, a fresh process for a peak-memory reading) under a timeout; the child prints its result as
  the one line ``WORKER_JSON {...}`` (:func:`emit`), and a hang or a crash comes back as an outcome, not an
  exception, so that a sweep goes on.
- **Smoke**: every script takes ``--smoke`` (a few seconds: the embedded 5k cut, width 4-8, 1-3 steps) and
  ``--out``; ``tests/benchmarks/test_benchmarks.py`` runs them all in ``make test`` so that a rename cannot leave one broken.

Scripts import it as ``from harness import ...`` (``benchmarks/`` is put on ``sys.path`` by :func:`setup_paths`,
which also puts the checkout first so that ``mvssl_hub`` and ``recipes`` come from it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
RECORDS = BENCHMARKS / "records"  # the raw training logs (metrics.jsonl, *.log) some results are derived from
EMBEDDED_DATA = ROOT / "recipes" / "data" / "cifar10-5k"  # the 5k CIFAR-10 cut shipped with the checkout
ENVELOPE_KEYS = ("benchmark", "command", "cpu", "cpu_isa", "torch", "date")
WORKER_PREFIX = "WORKER_JSON "
# recipes/pretrain.py flags that shrink a preset's run to seconds (a benchmark's --smoke): 64 images, width 4
PRETRAIN_SMOKE = ("--limit", "64", "--eval_limit", "64", "--width", "4", "--knn_k", "10", "--precision", "fp32",
                  "--batch_size", "16", "--proj_dim", "32", "--proj_hidden", "32", "--log_every", "1")


def setup_paths() -> None:
    """The checkout (``mvssl_hub``, ``recipes``) and ``benchmarks/`` (this harness) and ``benchmarks/studies/`` (the
    studies import each other's readers) first on ``sys.path``, whatever folder a script was started from."""
    for path in (str(BENCHMARKS / "studies"), str(BENCHMARKS), str(ROOT)):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


setup_paths()


def envelope(name: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What every result says about where it came from: the script, its command line, the CPU, torch, the date."""
    import torch

    from mvssl_hub.device import cpu_isa, cpu_name

    argv = sys.argv if argv is None else argv
    return {"benchmark": name, "command": shlex.join(["python", *argv]), "cpu": cpu_name(), "cpu_isa": cpu_isa(),
            "torch": torch.__version__, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_result(out: str | Path, name: str, values: Mapping[str, Any], argv: Sequence[str] | None = None,
                 quiet: bool = False) -> dict[str, Any]:
    """Write ``values`` under the envelope to ``out`` (atomically: a reader never sees half a file); returns it.
    The envelope's keys come first and win over same-named values (a script does not restate them)."""
    result = {**envelope(name, argv), **{k: v for k, v in values.items() if k not in ENVELOPE_KEYS}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    if not quiet:
        print(f"# {name}: results -> {out}")
    return result


def check_envelope(result: Mapping[str, Any], name: str | None = None) -> None:
    """AssertionError unless ``result`` carries the envelope (and, given ``name``, is that benchmark's)."""
    missing = [k for k in ENVELOPE_KEYS if not result.get(k)]
    assert not missing, f"result lacks envelope keys {missing}"
    assert name is None or result["benchmark"] == name, f"result of {result['benchmark']!r}, expected {name!r}"
    assert len(result) > len(ENVELOPE_KEYS), "result has no measured values"


def default_out(name: str, smoke: bool, out: str | Path | None = None) -> Path:
    """``--out`` when given; else ``results/<name>.json``, except that a smoke run never writes there (its
    numbers mean nothing): it goes to a temporary folder."""
    if out is not None:
        return Path(out)
    if smoke:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"{name}-smoke-")) / f"{name}.json"
    return RESULTS / f"{name}.json"


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``. ``clock="process"`` counts this process's CPU seconds;
    ``device`` (a CUDA device) is synchronised before and after so that queued kernels are inside the block."""

    def __init__(self, clock: str = "wall", device: Any = None) -> None:
        self._now = time.process_time if clock == "process" else time.perf_counter
        self._device = device
        self.seconds = 0.0

    def _sync(self) -> None:
        if self._device is not None and str(self._device).startswith("cuda"):
            import torch

            torch.cuda.synchronize(self._device)

    def __enter__(self) -> Timer:
        self._sync()
        self._t0 = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = self._now() - self._t0


def timed(fn: Callable[[], Any], device: Any = None) -> float:
    """Seconds one call of ``fn`` takes."""
    with Timer(device=device) as t:
        fn()
    return t.seconds


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 0, device: Any = None) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def interleaved_seconds(variants: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 0, steps: int = 1,
                        device: Any = None) -> dict[str, list[float]]:
    """Seconds per call of each variant, one entry per repeat (``steps`` calls each), after ``warmup`` untimed
    calls of each; the variants take turns and the order flips every repeat (A, B, B, A, ...), so that machine
    noise hits them alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            with Timer(device=device) as t:
                for _ in range(steps):
                    variants[name]()
            times[name].append(t.seconds / steps)
    return times


def emit(result: Mapping[str, Any]) -> None:
    """A worker's answer to :func:`run_worker`: one line on stdout."""
    print(WORKER_PREFIX + json.dumps(result), flush=True)


def run_worker(cmd: Sequence[str], timeout: float | None = None, env: Mapping[str, str] | None = None,
               cwd: str | Path = ROOT) -> dict[str, Any]:
    """Run ``cmd`` (a worker that answers with :func:`emit`) in a child process under ``timeout`` seconds.

    Returns the worker's dict with ``outcome: "ok"`` and ``seconds``; or ``{"outcome": "hang" | "crash (exit N)"
    | "no answer", "seconds", "stderr"}`` when it did not answer: a sweep records the case and goes on.
    ``env`` entries are set over this process's environment (a worker must see them before torch loads)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "seconds": round(time.perf_counter() - t0, 1)}
    seconds = round(time.perf_counter() - t0, 1)
    answers = [line[len(WORKER_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(WORKER_PREFIX)]
    if proc.returncode != 0:
        return {"outcome": f"crash (exit {proc.returncode})", "seconds": seconds, "stderr": proc.stderr[-2000:]}
    if not answers:
        return {"outcome": "no answer", "seconds": seconds, "stderr": proc.stderr[-2000:]}
    return {**json.loads(answers[-1]), "outcome": "ok", "seconds": seconds}


def add_common_args(parser: Any, name: str) -> None:
    """``--smoke`` and ``--out``, the two flags every script has."""
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds on tiny settings: checks the code path, numbers mean nothing; "
                             "writes to a temporary folder unless --out")
    parser.add_argument("--out", default=None, help=f"result JSON (default: benchmarks/results/{name}.json)")

"""Forward+backward time of the multi-view losses vs the number of views M.

Compares the O(M) forms (Barlow Twins "mean", VICReg "leave_one_out") with the O(M^2) all-pairs
baseline at fixed N and d. Repeats are interleaved over all (form, M) settings in a shuffled order
per round, the median per setting is reported, and ratios t(M)/t(2) are taken inside this run.
The linear bound (t(16)/t(2) <= 16/2 + 1 = 9 for the O(M) forms) is checked on the measured ratios.

    python benchmarks/loss_scaling.py [--n 256] [--d 256] [--repeats 15] [--inner 5]

The 2-core machine is shared: the 1-minute load average is printed and stored, since memory-bound
elementwise work (which dominates the O(M) forms at large M) slows down most under contention.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from mvssl_hub.losses import barlow_twins_loss, vicreg_loss

from harness import default_out, write_result

VIEWS = (2, 4, 8, 16)
FORMS = {  # label -> (loss function, form, beta, expected scaling)
    "bt_mean": (barlow_twins_loss, "mean", 0.02, "linear"),
    "bt_all_pairs": (barlow_twins_loss, "all_pairs", 0.02, "quadratic"),
    "vicreg_leave_one_out": (vicreg_loss, "leave_one_out", 0.04, "linear"),
    "vicreg_all_pairs": (vicreg_loss, "all_pairs", 0.04, "quadratic"),
}


def time_once(label: str, z: torch.Tensor, inner: int) -> float:
    """Milliseconds per forward+backward, averaged over ``inner`` back-to-back calls."""
    fn, form, beta, _ = FORMS[label]
    start = time.perf_counter()
    for _ in range(inner):
        z.grad = None
        fn(z, beta, form=form).backward()
    return (time.perf_counter() - start) * 1000.0 / inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="batch size N")
    parser.add_argument("--d", type=int, default=256, help="embedding dim d")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds (median over them)")
    parser.add_argument("--inner", type=int, default=5, help="max calls per timed measurement")
    parser.add_argument("--target-ms", type=float, default=30.0, help="aim per measurement (sets calls)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/loss_scaling.json")
    parser.add_argument("--smoke", action="store_true", help="seconds: N = d = 16, 1 repeat, temporary folder")
    args = parser.parse_args()
    args.out = default_out("loss_scaling", args.smoke, args.out)
    if args.smoke:
        args.n, args.d, args.repeats, args.inner = 16, 16, 1, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    inputs = {m: torch.randn(m, args.n, args.d, requires_grad=True) for m in VIEWS}
    settings = [(label, m) for label in FORMS for m in VIEWS]
    # Warm-up; slow settings get fewer calls per measurement (at least 1, at most --inner) so the
    # whole run stays short: about --target-ms per measurement.
    inner = {}
    for label, m in settings:
        time_once(label, inputs[m], 1)
        t = time_once(label, inputs[m], 1)
        inner[(label, m)] = max(1, min(args.inner, int(args.target_ms / max(t, 1e-3))))
    samples: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
    rng = random.Random(0)
    for _ in range(args.repeats):
        order = settings[:]
        rng.shuffle(order)
        for label, m in order:
            samples[(label, m)].append(time_once(label, inputs[m], inner[(label, m)]))

    load = os.getloadavg()[0]
    median = {s: statistics.median(v) for s, v in samples.items()}
    bound = VIEWS[-1] / VIEWS[0] + 1.0
    print(f"loss forward+backward, N={args.n} d={args.d} float32, {args.threads} threads, "
          f"median of {args.repeats} interleaved rounds (1-{args.inner} calls each); "
          f"1-min load average at the end: {load:.1f}")
    header = f"{'form':<22}" + "".join(f"{'M=' + str(m) + ' ms':>11}" for m in VIEWS) + \
        "".join(f"{'t' + str(m) + '/t2':>9}" for m in VIEWS[1:])
    print(header)
    results: dict[str, dict] = {}
    for label, (_, form, beta, scaling) in FORMS.items():
        times = [median[(label, m)] for m in VIEWS]
        ratios = [t / times[0] for t in times]
        print(f"{label:<22}" + "".join(f"{t:>11.3f}" for t in times) + "".join(f"{r:>9.2f}" for r in ratios[1:]))
        results[label] = {"form": form, "beta": beta, "expected": scaling,
                          "median_ms": dict(zip(map(str, VIEWS), times)),
                          "ratio_to_m2": dict(zip(map(str, VIEWS), ratios)),
                          "samples_ms": {str(m): samples[(label, m)] for m in VIEWS}}
    print()
    verdicts = {}
    for label, res in results.items():
        r16 = res["ratio_to_m2"][str(VIEWS[-1])]
        if res["expected"] == "linear":
            ok = r16 <= bound
            verdicts[label] = ok
            print(f"{'PASS' if ok else 'FAIL'}: {label} t(M={VIEWS[-1]})/t(M={VIEWS[0]}) = {r16:.2f} "
                  f"(linear bound <= {bound:.0f}; pairs grow {VIEWS[-1] * (VIEWS[-1] - 1) // 2}x)")
        else:
            print(f"info: {label} t(M={VIEWS[-1]})/t(M={VIEWS[0]}) = {r16:.2f} "
                  f"(pair count grows {VIEWS[-1] * (VIEWS[-1] - 1) // 2}x)")
    for lin, quad in (("bt_mean", "bt_all_pairs"), ("vicreg_leave_one_out", "vicreg_all_pairs")):
        speedups = ", ".join(f"M={m}: {median[(quad, m)] / median[(lin, m)]:.1f}x" for m in VIEWS)
        print(f"speed-up {lin} over {quad}: {speedups}")

    payload = {"n": args.n, "d": args.d, "threads": args.threads, "repeats": args.repeats,
               "inner": {f"{k[0]}@M={k[1]}": v for k, v in inner.items()}, "load_average_1min": load,
               "views": list(VIEWS), "linear_bound": bound, "pass": all(verdicts.values()),
               "verdicts": verdicts, "torch": torch.__version__, "machine": platform.machine(),
               "processor": platform.processor(), "results": results}
    write_result(args.out, "loss_scaling", payload)


if __name__ == "__main__":
    main()

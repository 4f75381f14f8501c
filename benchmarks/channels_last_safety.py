"""Where is oneDNN's channels_last convolution backward wrong, or hung, on this CPU?

Each case is one fp32 ``conv2d`` (batch 8, square input) run forward and backward in channels_last, and compared
with the same convolution in float64 contiguous: the relative max error of the output, the weight gradient
and the input gradient. Every case runs in a child process under a timeout, so a hang or a crash is recorded
as such and the sweep goes on. ``mvssl_hub.train.backends.channels_last_hazards`` encodes the boundary found here.

    python benchmarks/channels_last_safety.py            # the grid below; JSON -> benchmarks/results/
    python benchmarks/channels_last_safety.py --smoke    # four cases (tests)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from harness import default_out, run_worker, write_result

TOLERANCE = 1e-3  # relative max error; the exact cases measure 1e-8 to 1e-5
IN_CHANNELS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 15, 16, 24, 32]
SIZES = [8, 32, 48, 96]  # CIFAR's 32 px and STL-10's 96 px, and their downsampled maps
# (in_channels, out_channels, kernel, stride, size): every kernel and stride with 16 outputs, and the strided 1x1
# case (a ResNet's downsample) with 32 outputs too
GRID = [*itertools.product(IN_CHANNELS, [16], [1, 3], [1, 2], SIZES), *itertools.product(IN_CHANNELS, [32], [1], [2], SIZES)]
SMOKE_GRID = [(4, 16, 1, 2, 8), (16, 16, 1, 2, 8), (4, 16, 3, 2, 8), (4, 16, 1, 1, 8)]

CASE = """
import json, sys, torch
cin, cout, k, stride, size = map(int, sys.argv[1:6])
g = torch.Generator().manual_seed(0)
x, w = torch.randn(8, cin, size, size, generator=g), torch.randn(cout, cin, k, k, generator=g)
xc = x.to(memory_format=torch.channels_last).requires_grad_()
wc = w.to(memory_format=torch.channels_last).requires_grad_()
y = torch.nn.functional.conv2d(xc, wc, stride=stride, padding=k // 2)
gy = torch.randn(y.shape, generator=g).to(memory_format=torch.channels_last)
y.backward(gy)
x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
y64 = torch.nn.functional.conv2d(x64, w64, stride=stride, padding=k // 2)
y64.backward(gy.double())
err = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()
print("WORKER_JSON " + json.dumps({"output": err(y, y64), "weight_grad": err(wc.grad, w64.grad), "input_grad": err(xc.grad, x64.grad)}))
"""


def inside_hazard_rule(case: dict) -> bool:
    """Whether the library's own rule (mvssl_hub.train.backends.channels_last_hazards) routes a model around the
    case's convolution on a CPU."""
    import torch

    from mvssl_hub.train.backends import channels_last_hazards  # harness put the checkout on the path

    conv = torch.nn.Conv2d(case["in_channels"], case["out_channels"], case["kernel"], stride=case["stride"])
    return bool(channels_last_hazards(conv, "cpu"))


def run_case(cin: int, cout: int, k: int, stride: int, size: int, timeout: float) -> dict:
    """One case in its own process (the harness's worker protocol): a hang or a crash is an outcome."""
    done = run_worker([sys.executable, "-c", CASE, *map(str, (cin, cout, k, stride, size))], timeout=timeout)
    if done["outcome"] != "ok":
        return {"outcome": done["outcome"], "seconds": done["seconds"]}
    errors = {k: done[k] for k in ("output", "weight_grad", "input_grad")}
    return {"outcome": "exact" if max(errors.values()) < TOLERANCE else "wrong", **errors, "seconds": done["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="four cases, for the test suite")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as hung")
    p.add_argument("--out", default=None, help="default: benchmarks/results/channels_last_safety.json")
    a = p.parse_args()
    a.out = default_out("channels_last_safety", a.smoke, a.out)

    grid = SMOKE_GRID if a.smoke else GRID
    cases = []
    for cin, cout, k, stride, size in grid:
        case = {"in_channels": cin, "out_channels": cout, "kernel": k, "stride": stride, "size": size,
                **run_case(cin, cout, k, stride, size, a.timeout)}
        cases.append(case)
        print(json.dumps(case), flush=True)
    bad = [c for c in cases if c["outcome"] != "exact"]
    from mvssl_hub.train.backends import CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS
    result = {
        "tolerance": TOLERANCE, "timeout_s": a.timeout,
        "faulty": [{k: c[k] for k in ("in_channels", "kernel", "stride", "size", "outcome")} for c in bad],
        "hazard_rule_min_channels": CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS,
        "faulty_all_inside_hazard_rule": all(inside_hazard_rule(c) for c in bad),
        "cases": cases,
    }
    result = write_result(a.out, "channels_last_safety", result)
    print(f"{len(bad)} of {len(cases)} cases faulty; all of them strided 1x1 with < {CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS} "
          f"input channels (the library's hazard rule): {result['faulty_all_inside_hazard_rule']}")


if __name__ == "__main__":
    main()

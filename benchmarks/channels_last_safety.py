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
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 1e-3  # relative max error; the exact cases measure 1e-8 to 1e-5

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
print(json.dumps({"output": err(y, y64), "weight_grad": err(wc.grad, w64.grad), "input_grad": err(xc.grad, x64.grad)}))
"""


def run_case(cin: int, cout: int, k: int, stride: int, size: int, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", CASE, *map(str, (cin, cout, k, stride, size))],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "seconds": round(time.perf_counter() - t0, 1)}
    if done.returncode != 0:
        return {"outcome": f"crash (exit {done.returncode})", "seconds": round(time.perf_counter() - t0, 1)}
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    return {"outcome": "exact" if max(errors.values()) < TOLERANCE else "wrong", **errors,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="four cases, for the test suite")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as hung")
    p.add_argument("--out", default=str(RESULTS / "channels_last_safety.json"))
    a = p.parse_args()
    from mvssl_hub.device import cpu_isa, cpu_name

    grid = ([(4, 16, 1, 2, 8), (8, 16, 1, 2, 8), (4, 16, 3, 2, 8), (4, 16, 1, 1, 8)] if a.smoke else
            list(itertools.product([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16], [16], [1, 3], [1, 2], [8, 32])))
    cases = []
    for cin, cout, k, stride, size in grid:
        case = {"in_channels": cin, "out_channels": cout, "kernel": k, "stride": stride, "size": size,
                **run_case(cin, cout, k, stride, size, a.timeout)}
        cases.append(case)
        print(json.dumps(case), flush=True)
    import torch

    bad = [c for c in cases if c["outcome"] != "exact"]
    result = {
        "benchmark": "channels_last_safety",
        "command": "python benchmarks/channels_last_safety.py" + (" --smoke" if a.smoke else ""),
        "cpu": f"{cpu_name()} ({cpu_isa()})", "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "tolerance": TOLERANCE, "timeout_s": a.timeout,
        "faulty": [{k: c[k] for k in ("in_channels", "kernel", "stride", "size", "outcome")} for c in bad],
        "faulty_all_strided_1x1_below_8_channels": all(c["kernel"] == 1 and c["stride"] > 1 and c["in_channels"] < 8
                                                       for c in bad),
        "cases": cases,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(bad)} of {len(cases)} cases faulty; all of them strided 1x1 with < 8 input channels: "
          f"{result['faulty_all_strided_1x1_below_8_channels']}")


if __name__ == "__main__":
    main()

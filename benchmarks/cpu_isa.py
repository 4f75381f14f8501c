"""Training and evaluation throughput at each CPU instruction-set level, and what each speed lever buys there.

oneDNN and ATen can be held to an older instruction set than the CPU has (``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``; both are read when torch loads, so each level runs in its own worker process).
For every level this CPU can emulate (AVX2; AVX512 without bf16; AVX512-BF16; AMX where present), the
worker measures, all on random uint8 32 px images (cost does not depend on pixel values):

- **training step** (``MultiViewAugment`` + forward + Barlow Twins loss + backward + Adam) of a ResNet-18
  with the small-image stem, projector 256, at width 16 (batch 128) and full width 64 (batch 16), with 2 and
  4 views, under the recipe's defaults at that level: 2 threads, bf16 autocast where ``bf16_is_fast``,
  channels_last;
- **levers**, each against the default in interleaved repeats (A, B, A, B ... so machine noise hits both):
  1 thread instead of 2, channels_last flipped, bf16 flipped, ``torch.compile`` (width 16 only; its
  compile time is reported separately);
- **feature extraction** (``mvssl_hub.eval.probes.extract_features``, batch 256, eval mode) at both widths;
- **linear probe** (``mvssl_hub.eval.probes.linear_probe``, 10,000 x D random features, 10 classes, batch 512);
- **data path**: ``benchmarks/pipeline.py``'s full step against the same step on pre-made views.

It builds its own training step rather than timing the recipe's ``train_step``, because each lever is a
variant of the step (threads, channels_last, bf16, compile) built side by side in one process.

Results go to ``benchmarks/results/cpu_isa.json`` under the harness's envelope (written after every level);
``--markdown`` prints the README tables from it. ``--smoke`` (alias ``--quick``): the lowest level only,
widths 8 and 16, batches of 4 and 2, one step per variant, no torch.compile; to a temporary folder unless --out.

    python benchmarks/cpu_isa.py                     # every level this CPU can emulate (~15 min on 2 cores)
    python benchmarks/cpu_isa.py --levels avx2       # one level
    python benchmarks/cpu_isa.py --markdown          # README tables from the stored JSON
    python benchmarks/cpu_isa.py --smoke --out F     # seconds-long smoke run (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS, add_common_args, default_out, emit, interleaved_seconds, run_worker, write_result

# level: (CPU flags it needs, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY); lowest first
LEVELS: dict[str, tuple[frozenset[str], str, str]] = {
    "avx2": (frozenset({"avx2", "fma"}), "AVX2", "avx2"),
    "avx512": (frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"}), "AVX512_CORE", "avx512"),
    "avx512_bf16": (frozenset({"avx512_bf16"}), "AVX512_CORE_BF16", "avx512"),
    "amx": (frozenset({"amx_tile", "amx_bf16"}), "AVX512_CORE_AMX", "avx512"),
}
DEFAULT_OUT = RESULTS / "cpu_isa.json"
# each level's two networks: (label, ResNet-18 width, training batch), for smoke False (the full run) and True;
# not narrower than 8: channels_last (forced here) hangs or gives wrong gradients below 8 channels at 8-32 px,
# and crashes below 16 at 48-96 px (mvssl_hub.train.backends); these networks train at 32 px
SIZES = {False: (("width 16", 16, 128), ("full width", 64, 16)), True: (("width 8", 8, 4), ("width 16", 16, 2))}


def available_levels(flags: frozenset[str]) -> list[str]:
    """The levels whose instructions this CPU has (a level needs every lower level's flags too)."""
    out: list[str] = []
    for name, (needs, _, _) in LEVELS.items():
        if not needs <= flags:
            break
        out.append(name)
    return out


def level_env(name: str) -> dict[str, str]:
    _, onednn, aten = LEVELS[name]
    return {"ONEDNN_MAX_CPU_ISA": onednn, "ATEN_CPU_CAPABILITY": aten}


# --------------------------------------------------------------------------------------------------
# Worker: runs inside one process whose instruction set is already capped


def interleaved(variants: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each variant, calls interleaved (order reversed every other round)."""
    return {k: statistics.median(v) for k, v in interleaved_seconds(variants, repeats, warmup).items()}


def train_variants(width: int, batch: int, views: list[int], bf16_default: bool, smoke: bool,
                   levers: bool = True, compile_lever: bool = False) -> dict[str, Any]:
    """Training steps of one width: defaults at each M, then the levers at the largest M."""
    import torch

    from mvssl_hub.losses import build_loss, recommended_beta
    from mvssl_hub.models import build_ssl_model
    from mvssl_hub.views import MultiViewAugment, get_view_preset

    preset = get_view_preset("cifar10")
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)

    def make_step(m: int, *, bf16: bool, channels_last: bool, threads: int = 2,
                  compiled: bool = False) -> Callable[[], None]:
        torch.manual_seed(0)
        model = build_ssl_model("resnet18", small_images=True, width=width, proj_dim=256).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        run_model = torch.compile(model) if compiled else model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6, foreach=True)
        augment = MultiViewAugment(preset, output_dtype=torch.bfloat16 if bf16 else torch.float32,
                                   channels_last=channels_last)
        loss_fn = build_loss("barlowtwins", recommended_beta("barlowtwins", 256, m))

        def step() -> None:
            torch.set_num_threads(threads)
            views = augment(images, m, generator=gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z = run_model(views)
            loss_fn(z.float()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.set_num_threads(2)
        return step

    repeats, warmup = (1, 0) if smoke else (3, 1)
    m_top = max(views)
    steps = {f"default M={m}": make_step(m, bf16=bf16_default, channels_last=True) for m in views}
    if levers:
        steps["1 thread"] = make_step(m_top, bf16=bf16_default, channels_last=True, threads=1)
        steps["channels_last off"] = make_step(m_top, bf16=bf16_default, channels_last=False)
        steps["bf16 on" if not bf16_default else "bf16 off (fp32)"] = make_step(m_top, bf16=not bf16_default,
                                                                               channels_last=True)
    compile_s = None
    if compile_lever:
        steps["torch.compile"] = make_step(m_top, bf16=bf16_default, channels_last=True, compiled=True)
        t = time.perf_counter()
        steps["torch.compile"]()  # first call compiles
        compile_s = time.perf_counter() - t
    med = interleaved(steps, repeats, warmup)
    rows = {}
    for name, s in med.items():
        m = int(name.split("M=")[1]) if name.startswith("default M=") else m_top
        rows[name] = {"num_views": m, "seconds_per_step": s, "images_per_s": batch / s, "views_per_s": batch * m / s}
    base = rows[f"default M={m_top}"]["seconds_per_step"]
    levers = {k: base / v["seconds_per_step"] for k, v in rows.items() if not k.startswith("default")}
    out = {"width": width, "batch_images": batch, "steps": rows, "lever_speedup_vs_default": levers}
    return out | ({"compile_first_call_s": compile_s} if compile_lever else {})


def extraction(width: int, bf16_default: bool, smoke: bool) -> dict[str, Any]:
    import torch

    from mvssl_hub.eval.probes import extract_features
    from mvssl_hub.models import build_ssl_model
    from mvssl_hub.views import EvalTransform, get_view_preset

    n = 16 if smoke else 1024
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    backbone = build_ssl_model("resnet18", small_images=True, width=width, proj_dim=256).backbone
    tf = EvalTransform(get_view_preset("cifar10"))
    runs = {f"bf16 {'on' if b else 'off'}{' (default)' if b == bf16_default else ''}":
            (lambda b=b: extract_features(backbone, images, tf, batch_size=256, bf16=b)) for b in (bf16_default,
                                                                                               not bf16_default)}
    med = interleaved(runs, 1, 0) if smoke else interleaved(runs, 3, 1)
    return {"width": width, "images": n, "images_per_s": {k: n / v for k, v in med.items()}}


def probe_speed(dim: int, smoke: bool) -> dict[str, Any]:
    import torch

    from mvssl_hub.eval.probes import linear_probe

    n, epochs = (200, 1) if smoke else (10000, 10)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, dim, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    t = time.perf_counter()
    linear_probe(feats, labels, feats[:1000], labels[:1000], epochs=epochs, num_classes=10, cpu_threads=2)
    s = time.perf_counter() - t
    return {"dim": dim, "train_rows": n, "epochs": epochs, "seconds_per_epoch": s / epochs,
            "rows_per_s": n * epochs / s}


def worker(level: str, smoke: bool, section: str) -> dict[str, Any]:
    """``section`` "main": everything but torch.compile; "compile": the compile lever alone (its own process:
    Inductor's generated code can crash the process at some emulated levels, and that must not lose the rest)."""
    import torch

    from mvssl_hub.device import bf16_is_fast

    torch.set_num_threads(2)
    bf16 = bf16_is_fast("cpu")
    out: dict[str, Any] = {
        "level": level, "env": level_env(level), "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_default": bf16, "torch": torch.__version__,
    }
    t0 = time.perf_counter()
    if section == "compile":
        (_, width, batch), _ = SIZES[smoke]
        out["compile"] = train_variants(width, batch, [4], bf16, smoke, levers=False, compile_lever=True)
        out["worker_seconds"] = time.perf_counter() - t0
        return out
    sizes = SIZES[smoke]
    out["train"] = {label: train_variants(width, batch, [2, 4], bf16, smoke) for label, width, batch in sizes}
    out["extraction"] = {label: extraction(width, bf16, smoke) for label, width, _ in sizes}
    # a ResNet-18's features: 8 x its width (D=128 at width 16, 512 at 64)
    out["linear_probe"] = {f"{label} (D={8 * width})": probe_speed(8 * width, smoke) for label, width, _ in sizes}
    import pipeline  # benchmarks/pipeline.py: the same step with data against pre-made views

    (_, width, batch), _ = sizes
    with tempfile.TemporaryDirectory() as tmp:  # its own JSON is not kept: the numbers go into this level's
        p = pipeline.main(["--views", "4", "--steps", "1", "--repeats", "1" if smoke else "3",
                           "--out", str(Path(tmp) / "pipeline.json"), "--",
                           "--width", str(width), "--batch_size", str(batch), "--threads", "2"])
    out["pipeline"] = {"settings": p["settings"], "ratio_data_over_premade": p["results"][0]["ratio_data_over_premade"],
                       "views_per_s": p["results"][0]["views_per_s"]}
    out["worker_seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------------
# Tables


def markdown(result: dict[str, Any]) -> str:
    """The README's two tables: throughput under the defaults, and each lever's speed-up. Each level's two
    networks are read in order (narrow, full), so that a smoke run's tiny widths make the same tables."""
    cpu = f"{result['cpu']} [{result['cpu_isa']}]" if "cpu_isa" in result else result["cpu"]  # before the envelope: one key
    lines = [f"Measured on {cpu}, each level emulated on it, torch {result['torch']}, 2 threads unless "
             "stated; `python benchmarks/cpu_isa.py` (JSON: `benchmarks/results/cpu_isa.json`).", "",
             "| level (bf16 default) | train w16 M=2 | train w16 M=4 | train full M=2 | train full M=4 | "
             "extract w16 | extract full | linear probe D=512 | data/pre-made |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["levels"].items():
        w16, full = (t["steps"] for t in r["train"].values())
        ext_w16, ext_full = (next(v for n, v in e["images_per_s"].items() if "default" in n)
                             for e in r["extraction"].values())
        probe_full = list(r["linear_probe"].values())[-1]
        lines.append(
            f"| {name} ({'bf16' if r['bf16_default'] else 'fp32'}) | {w16['default M=2']['images_per_s']:.0f} | "
            f"{w16['default M=4']['images_per_s']:.0f} | {full['default M=2']['images_per_s']:.1f} | "
            f"{full['default M=4']['images_per_s']:.1f} | {ext_w16:.0f} | "
            f"{ext_full:.0f} | {probe_full['rows_per_s'] / 1000:.0f}k rows/s | "
            f"{r['pipeline']['ratio_data_over_premade']:.2f} |")
    lines += ["", "Training and extraction in images/s (each image gives M views). Levers, as speed-up of one "
              "training step at M=4 over the default (above 1: the lever helps):", "",
              "| level | width | 1 thread | channels_last off | bf16 flipped | torch.compile (first call) |",
              "|---|---|---|---|---|---|"]
    for name, r in result["levels"].items():
        for i, (width, t) in enumerate(r["train"].items()):
            lev = t["lever_speedup_vs_default"]
            bf = next((f"{v:.2f} ({k})" for k, v in lev.items() if k.startswith("bf16")), "n/a")
            comp = "not measured"
            if i == 0 and "compile" in r:  # the narrow network's
                c = r["compile"]
                comp = (f"crashed: {c['error']}" if "error" in c else
                        f"{c['lever_speedup_vs_default']['torch.compile']:.2f} ({c['compile_first_call_s']:.0f} s)")
            lines.append(f"| {name} | {width} | {lev['1 thread']:.2f} | {lev['channels_last off']:.2f} | {bf} | {comp} |")
    return "\n".join(lines)


def level_worker(level: str, section: str, smoke: bool) -> dict[str, Any]:
    """One worker process at ``level`` (the harness's worker protocol); its dict, or {"error": ...} naming how it
    died (a crash at one emulated level, e.g. in Inductor's generated code, must not lose the other levels)."""
    cmd = [sys.executable, __file__, "--worker", level, "--section", section, *(["--smoke"] if smoke else [])]
    answer = run_worker(cmd, env={**level_env(level), "OMP_NUM_THREADS": "2"}, timeout=300 if smoke else None)
    outcome, stderr = answer.pop("outcome"), answer.pop("stderr", "")
    answer.pop("seconds", None)  # the worker times itself (worker_seconds)
    if outcome == "ok":
        return answer
    killed = re.fullmatch(r"crash \(exit -(\d+)\)", outcome)  # a negative exit status: killed by that signal
    how = f"signal {killed[1]} ({signal.Signals(int(killed[1])).name})" if killed else outcome
    # the last line that is not one of torch's glog-style warnings ("W1130 16:00:50 ...")
    said = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not re.match(r"[WI]\d{4} ", ln)]
    print(f"# level {level}, {section}: worker died ({how}): {said[-1] if said else 'no message'}", flush=True)
    return {"error": how + (f": {said[-1][:120]}" if said else ""), "stderr_tail": stderr[-1500:]}


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default=None, help="comma-separated subset of " + ", ".join(LEVELS))
    add_common_args(ap, "cpu_isa")
    ap.add_argument("--quick", dest="smoke", action="store_true", help="the same as --smoke (its former name)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile lever")
    ap.add_argument("--markdown", action="store_true", help="print the README tables from --out and exit")
    ap.add_argument("--merge", action="store_true",
                    help="keep the levels already in --out (same CPU and torch) that this run does not measure")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--section", default="main", choices=["main", "compile"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        emit(worker(args.worker, args.smoke, args.section))
        return None
    if args.markdown:
        print(markdown(json.loads(Path(args.out or DEFAULT_OUT).read_text())))
        return None
    out = default_out("cpu_isa", args.smoke, args.out)

    import torch

    from mvssl_hub.device import cpu_flags, hardware_string

    possible = available_levels(cpu_flags())
    # a smoke run: the lowest level only (none on a CPU without AVX2: then an empty result, still enveloped)
    levels = (possible[:1] if args.smoke else possible) if args.levels is None else args.levels.split(",")
    for name in levels:
        if name not in possible:
            ap.error(f"level {name!r} is not available on this CPU (available: {', '.join(possible) or 'none'})")
    result: dict[str, Any] = {
        "hardware": hardware_string(torch.device("cpu")), "platform": platform.platform(),
        "smoke": args.smoke, "available_levels": possible, "levels": {},
    }
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        old_smoke = old.get("smoke", old.get("quick"))  # "quick" before the harness
        if (old["hardware"], old["torch"], old_smoke) != (result["hardware"], torch.__version__, args.smoke):
            ap.error(f"--merge: {out} was measured on {old['hardware']} / torch {old['torch']}")
        kept = {k: v for k, v in old["levels"].items() if k not in levels}
        result["levels"] = {k: kept[k] for k in LEVELS if k in kept}
        print(f"# kept from {out}: {', '.join(kept) or 'nothing'}", flush=True)
    typed = sys.argv if argv is None else ["benchmarks/cpu_isa.py", *argv]  # the envelope's command
    for name in levels:
        print(f"# level {name}: {' '.join(f'{k}={v}' for k, v in level_env(name).items())}", flush=True)
        level = level_worker(name, "main", args.smoke)
        if "error" in level:
            raise RuntimeError(f"worker for level {name} failed: {level['error']}")
        if args.compile and not args.smoke:  # compiling takes minutes: not in a smoke run
            compiled = level_worker(name, "compile", args.smoke)
            level["compile"] = compiled.get("compile", compiled)
        result["levels"][name] = level
        result["levels"] = {k: result["levels"][k] for k in LEVELS if k in result["levels"]}  # lowest level first
        write_result(out, "cpu_isa", result, typed, quiet=True)  # after every level: partial results survive
    written = write_result(out, "cpu_isa", result, typed, quiet=True)
    print(markdown(written))
    print(f"wrote {out}")
    return written


if __name__ == "__main__":
    main()

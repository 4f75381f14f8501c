"""Data past CIFAR scale: decode throughput, peak memory against dataset size, time to the first batch.

On a generated parquet of mixed-size JPEGs (~500x375, photograph-like, ~45 KB each), stored at ``--size`` px:

- decode throughput (images/s) of ``load_split`` at 1 and 2 decode threads;
- for each dataset size N, in a fresh process each: peak RSS growth (VmHWM) and anonymous-memory growth
  (RssAnon: what every rank would pay privately) of
  ``full_size`` (the old path: every image decoded at full size into a list, then resized and stacked),
  ``in_memory`` (decode + resize one image at a time into a preallocated tensor),
  ``cached`` (a second run mapping the on-disk cache the first built; crc32 checked),
  ``streaming`` (StreamingSplit, window 128, in-process reads: one epoch of batches of 32);
- seconds from nothing to the first batch in memory for each path.

JSON -> benchmarks/results/data_scale.json, plot -> benchmarks/results/data_scale.png.

    python benchmarks/data_scale.py                 # ~2 min on 2 busy cores
    python benchmarks/data_scale.py --sizes 100 200 --throughput_images 100   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _status(field: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))


def probe(mode: str, data: str, size: int, cache_dir: str) -> dict:
    """One measurement in this (fresh) process; prints JSON."""
    import torch

    from mvssl_hub.data.decode import _decode, resize_center_crop
    from mvssl_hub.data.splits import load_split
    from mvssl_hub.data.stream import StreamingSplit

    load_split(data, "train", size=size, limit=2)  # warm-up: imports, dataset resolution, decoders
    base_hwm, base_anon = _status("VmHWM"), _status("RssAnon")
    t0 = time.perf_counter()
    if mode == "full_size":
        import datasets

        ds = datasets.load_dataset("parquet", data_files={"train": data}, split="train")
        enc = ds.cast_column("image", datasets.Image(decode=False))["image"]
        decoded = [_decode(item, i) for i, item in enumerate(enc)]
        images = torch.stack([resize_center_crop(x, size) for x in decoded])
        del decoded
        first = images[torch.randperm(len(images))[:32]]
    elif mode in ("in_memory", "cached"):
        kw = {"cache_dir": cache_dir} if mode == "cached" else {}
        images = load_split(data, "train", size=size, **kw).images
        first = images[torch.randperm(len(images))[:32]]
    else:
        stream = StreamingSplit(data, "train", size=size)
        batches = stream.batches(32, seed=0, window=128, workers=0)
        first = batches(0)[2]
    to_first = time.perf_counter() - t0
    if mode == "streaming":
        for step in range(1, batches.steps_per_epoch):
            batches(step)
        batches.close()
    out = {"mode": mode, "seconds_to_first_batch": round(to_first, 3), "first_batch": list(first.shape),
           "peak_rss_growth_mb": round((_status("VmHWM") - base_hwm) / 2**20, 1),
           "anon_growth_mb": round((_status("RssAnon") - base_anon) / 2**20, 1)}
    print(json.dumps(out))
    return out


def run_probe(mode: str, data: Path, size: int, cache_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, __file__, "--_probe", mode, str(data), str(size), str(cache_dir)],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode:
        raise RuntimeError(f"probe {mode} on {data} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def throughput(data: Path, size: int, n: int, workers: int, repeats: int) -> float:
    from mvssl_hub.data.splits import load_split

    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        load_split(str(data), "train", size=size, limit=n, decode_workers=workers)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    tp = result["decode_images_per_s"]
    a.bar([f"{k} thread(s)" for k in tp], list(tp.values()), color=["#4c72b0", "#dd8452"])
    a.set_ylabel("images / s")
    a.set_title(f"decode + resize to {result['settings']['size']} px")
    sizes = result["settings"]["dataset_sizes"]
    for mode, style in (("full_size", "o-"), ("in_memory", "s-"), ("cached", "^-"), ("streaming", "d-")):
        rows = [result["runs"][str(n)][mode] for n in sizes]
        b.plot(sizes, [r["peak_rss_growth_mb"] for r in rows], style, label=mode)
        c.plot(sizes, [r["anon_growth_mb"] for r in rows], style, label=mode)
    b.plot(sizes, [result["resized_mb"][str(n)] for n in sizes], "k--", label="resized split bytes")
    c.plot(sizes, [result["resized_mb"][str(n)] for n in sizes], "k--", label="resized split bytes")
    b.set_title("peak RSS growth (VmHWM)")
    c.set_title("private memory after load (RssAnon growth)")
    for ax in (b, c):
        ax.set_xlabel("images in the split")
        ax.set_ylabel("MB")
        ax.legend(fontsize=8)
    fig.suptitle(result["hardware"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 300, 600], help="images in each generated split")
    p.add_argument("--size", type=int, default=64, help="storage size (px)")
    p.add_argument("--throughput_images", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_scale.json"))
    p.add_argument("--_probe", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._probe:
        mode, data, size, cache_dir = args._probe
        probe(mode, data, int(size), cache_dir)
        return

    import torch

    from mvssl_hub.device import hardware_string

    from _standins import mixed_sizes, write_parquet

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="data_scale-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf")
    result: dict = {
        "benchmark": "data_scale",
        "what": "decode+resize throughput; peak RSS and private-memory growth against split size for the old "
                "full-size path, the streaming in-memory decode, the memory-mapped cache and the streaming "
                "iterator; seconds to the first batch",
        "settings": {"size": args.size, "dataset_sizes": args.sizes, "jpeg_around": [500, 375],
                     "throughput_images": args.throughput_images, "repeats": args.repeats, "torch_threads": 1},
        "hardware": f"{platform.processor() or platform.machine()} / {hardware_string(torch.device('cpu'), 1)}; "
                    f"{os.cpu_count()} cores shared with other jobs",
        "runs": {}, "resized_mb": {}, "full_size_mb": {},
    }
    t_all = time.perf_counter()
    biggest = max(args.sizes)
    sizes_px = mixed_sizes(biggest, 0)
    for n in args.sizes:
        data = write_parquet(work / f"n{n}" / "train.parquet", sizes_px[:n], 10, rows_per_group=64)
        result["resized_mb"][str(n)] = round(n * 3 * args.size**2 / 2**20, 2)
        result["full_size_mb"][str(n)] = round(sum(3 * w * h for w, h in sizes_px[:n]) / 2**20, 1)
        cache = work / "cache"
        runs = {"cold_cache_build": run_probe("cached", data, args.size, cache)}  # builds the cache
        for mode in ("full_size", "in_memory", "cached", "streaming"):
            runs[mode] = run_probe(mode, data, args.size, cache)
        result["runs"][str(n)] = runs
        print(n, json.dumps(runs), flush=True)
    data = work / f"n{biggest}" / "train.parquet"
    result["decode_images_per_s"] = {
        str(w): round(throughput(data, args.size, min(args.throughput_images, biggest), w, args.repeats), 1)
        for w in (1, 2)
    }
    result["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("decode_images_per_s", "resized_mb", "full_size_mb", "wall_seconds")}))


if __name__ == "__main__":
    main()

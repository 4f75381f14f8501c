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

Each measurement is a harness worker (``run_worker`` / ``emit``). ``--smoke``: the first 64 images of the
embedded 5k CIFAR-10 cut (``recipes/data/cifar10-5k``) resized to 16 px, every path in one worker (its memory
numbers mean nothing), to a temporary folder.

JSON -> benchmarks/results/data_scale.json, plot -> benchmarks/results/data_scale.png (beside ``--out``).

    python benchmarks/data_scale.py                 # ~2 min on 2 busy cores
    python benchmarks/data_scale.py --sizes 100 200 --throughput_images 100   # quick look
    python benchmarks/data_scale.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from harness import EMBEDDED_DATA, ROOT, Timer, add_common_args, default_out, emit, run_worker, write_result

MODES = ("full_size", "in_memory", "cached", "streaming")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def probe(mode: str, data: str, size: int, cache_dir: str) -> dict:
    """One measurement in this process (a fresh one, in a full run)."""
    import torch

    from mvssl_hub.data.decode import _decode, resize_center_crop
    from mvssl_hub.data.splits import load_split
    from mvssl_hub.data.stream import StreamingSplit

    load_split(data, "train", size=size, limit=2)  # warm-up: imports, dataset resolution, decoders
    base_hwm, base_anon = _status("VmHWM"), _status("RssAnon")
    with Timer() as to_first:
        if mode == "full_size":
            import datasets

            ds = datasets.load_dataset("parquet", data_files={"train": data}, split="train")
            col = next(k for k, f in ds.features.items() if isinstance(f, datasets.Image))  # "image" or "img"
            enc = ds.cast_column(col, datasets.Image(decode=False))[col]
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
    if mode == "streaming":
        for step in range(1, batches.steps_per_epoch):
            batches(step)
        batches.close()
    return {"mode": mode, "seconds_to_first_batch": round(to_first.seconds, 3), "first_batch": list(first.shape),
            "peak_rss_growth_mb": round((_status("VmHWM") - base_hwm) / 2**20, 1),
            "anon_growth_mb": round((_status("RssAnon") - base_anon) / 2**20, 1)}


def run_probes(modes: list[str], data: Path, size: int, cache_dir: Path) -> list[dict]:
    """``modes`` measured one after the other in one worker process; RuntimeError if it fails."""
    res = run_worker([sys.executable, __file__, "--_probe", ",".join(modes), str(data), str(size), str(cache_dir)],
                     timeout=600, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    if res.pop("outcome") != "ok":
        raise RuntimeError(f"probe {modes} on {data} failed ({res.get('seconds')} s):\n{res.get('stderr', '')}")
    return res["runs"]


def throughput(data: Path, size: int, n: int, workers: int, repeats: int) -> float:
    """Best images/s of ``repeats`` loads of the first ``n`` images."""
    from mvssl_hub.data.splits import load_split

    load_split(str(data), "train", size=size, limit=2)  # warm-up: imports, dataset resolution, decoders
    best = 0.0
    for _ in range(repeats):
        with Timer() as t:
            load_split(str(data), "train", size=size, limit=n, decode_workers=workers)
        best = max(best, n / t.seconds)
    return best


def embedded_cut(path: Path, n: int) -> Path:
    """The first ``n`` training images of the embedded 5k cut as a parquet file (row groups of 32)."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.read_table(EMBEDDED_DATA / "train.parquet").slice(0, n), path, row_group_size=32)
    return path


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
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 300, 600], help="images in each generated split")
    p.add_argument("--size", type=int, default=64, help="storage size (px)")
    p.add_argument("--throughput_images", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    add_common_args(p, "data_scale")
    p.add_argument("--_probe", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._probe:
        modes, data, size, cache_dir = args._probe
        emit({"runs": [probe(mode, data, int(size), cache_dir) for mode in modes.split(",")]})
        return
    out = default_out("data_scale", args.smoke, args.out)
    if args.smoke:
        args.sizes, args.size, args.throughput_images, args.repeats = [64], 16, 32, 1

    import torch

    from mvssl_hub.device import hardware_string

    torch.set_num_threads(1)
    result: dict = {
        "what": "decode+resize throughput; peak RSS and private-memory growth against split size for the old "
                "full-size path, the streaming in-memory decode, the memory-mapped cache and the streaming "
                "iterator; seconds to the first batch",
        "settings": {"size": args.size, "dataset_sizes": args.sizes, "jpeg_around": [500, 375],
                     "throughput_images": args.throughput_images, "repeats": args.repeats, "torch_threads": 1},
        "hardware": f"{platform.processor() or platform.machine()} / {hardware_string(torch.device('cpu'), 1)}; "
                    f"{os.cpu_count()} cores shared with other jobs",
        "runs": {}, "resized_mb": {}, "full_size_mb": {},
    }
    if args.smoke:
        result["settings"] = {**result["settings"], "jpeg_around": None, "data": "recipes/data/cifar10-5k (first "
                              f"{args.sizes[0]} training images, 32 px)", "smoke": True}
    with tempfile.TemporaryDirectory(prefix="data_scale-") as tmp, Timer() as wall:
        work = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf")  # the workers inherit it: nothing cached elsewhere
        biggest = max(args.sizes)
        if args.smoke:
            sizes_px = [(32, 32)] * biggest
        else:
            sys.path.insert(0, str(ROOT / "tests"))
            from _standins import mixed_sizes, write_parquet

            sizes_px = mixed_sizes(biggest, 0)
        for n in args.sizes:
            path = work / f"n{n}" / "train.parquet"
            data = embedded_cut(path, n) if args.smoke else write_parquet(path, sizes_px[:n], 10, rows_per_group=64)
            result["resized_mb"][str(n)] = round(n * 3 * args.size**2 / 2**20, 2)
            result["full_size_mb"][str(n)] = round(sum(3 * w * h for w, h in sizes_px[:n]) / 2**20, 1)
            cache = work / "cache"
            if args.smoke:  # one worker: the cache built (cold), then every path
                cold, *rest = run_probes(["cached", *MODES], data, args.size, cache)
                runs = {"cold_cache_build": cold, **{r["mode"]: r for r in rest}}
            else:  # a fresh process for each reading
                runs = {"cold_cache_build": run_probes(["cached"], data, args.size, cache)[0]}  # builds the cache
                for mode in MODES:
                    runs[mode] = run_probes([mode], data, args.size, cache)[0]
            result["runs"][str(n)] = runs
            print(n, json.dumps(runs), flush=True)
        data = work / f"n{biggest}" / "train.parquet"
        result["decode_images_per_s"] = {
            str(w): round(throughput(data, args.size, min(args.throughput_images, biggest), w, args.repeats), 1)
            for w in (1, 2)
        }
    result["wall_seconds"] = round(wall.seconds, 1)
    write_result(out, "data_scale", result)
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("decode_images_per_s", "resized_mb", "full_size_mb", "wall_seconds")}))


if __name__ == "__main__":
    main()

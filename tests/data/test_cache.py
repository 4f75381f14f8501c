"""Streaming decode keeps memory at the resized split; the on-disk cache is reused, shared, rebuilt when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from mvssl_hub.data import decode as data_decode
from mvssl_hub.data.cache import HEADER_BYTES
from mvssl_hub.data.splits import load_split

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes" / "data" / "cifar10-5k"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared helpers

from _standins import mixed_sizes, write_imagefolder  # noqa: E402


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts calls of the image decoder (every decoded image goes through data_decode._decode)."""
    calls = {"n": 0}
    real = data_decode._decode

    def counting(item, index):
        calls["n"] += 1
        return real(item, index)

    monkeypatch.setattr(data_decode, "_decode", counting)
    return calls


MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    def hwm():
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
    from mvssl_hub.data.splits import load_split
    load_split(sys.argv[1], "train", size=64, limit=2)  # warm-up: dataset resolved, decoders loaded
    base = hwm()
    split = load_split(sys.argv[1], "train", size=64)
    print(json.dumps({"growth": hwm() - base, "n": len(split), "resized": split.images.numel()}))
""")


def test_peak_memory_grows_with_resized_not_full_size_bytes(tmp_path: Path) -> None:
    """500 mixed-size JPEGs (~500x375, 275 MB decoded) at 64 px (6.1 MB); 800 of them grew the old path 464 MB."""
    full = write_imagefolder(tmp_path / "folder", "train", mixed_sizes(500, 0), num_classes=10)
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "folder")], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["n"] == 500 and r["resized"] == 500 * 3 * 64 * 64
    assert full > 40 * r["resized"]  # the set really is mostly full-size bytes
    assert r["growth"] < 4 * r["resized"], r
    assert r["growth"] < full / 10, r


def test_second_load_reads_the_cache_without_decoding(tmp_path: Path, count_decodes: dict[str, int]) -> None:
    plain = load_split(str(DEMO), "test", limit=300, size=24)
    count_decodes["n"] = 0
    t0 = time.perf_counter()
    first = load_split(str(DEMO), "test", limit=300, size=24, cache_dir=tmp_path / "c")
    t_first = time.perf_counter() - t0
    assert count_decodes["n"] == 300
    t0 = time.perf_counter()
    second = load_split(str(DEMO), "test", limit=300, size=24, cache_dir=tmp_path / "c", decode_workers=2)
    t_second = time.perf_counter() - t0
    assert count_decodes["n"] == 300  # nothing decoded the second time
    assert torch.equal(first.images, plain.images) and torch.equal(second.images, plain.images)
    assert torch.equal(second.labels, plain.labels) and second.class_names == plain.class_names
    assert t_second < t_first
    assert len(list((tmp_path / "c").glob("*.u8"))) == 1
    # the cached tensor is a copy-on-write map: writing to it never changes the file
    second.images[0].zero_()
    assert torch.equal(load_split(str(DEMO), "test", limit=300, size=24, cache_dir=tmp_path / "c").images, plain.images)


def test_parallel_decode_matches_one_thread() -> None:
    one = load_split(str(DEMO), "test", limit=200, size=20)
    two = load_split(str(DEMO), "test", limit=200, size=20, decode_workers=2)
    assert torch.equal(one.images, two.images)
    with pytest.raises(ValueError, match="decode_workers must be >= 1, got 0"):
        load_split(str(DEMO), "test", limit=2, decode_workers=0)


CONCURRENT = textwrap.dedent("""
    import hashlib, json, sys, time
    from pathlib import Path
    import mvssl_hub.data.decode as dd
    real, calls = dd._decode, [0]
    def slow(item, index):
        calls[0] += 1
        time.sleep(0.004)
        return real(item, index)
    dd._decode = slow
    from mvssl_hub.data.splits import load_split
    tmp, me = Path(sys.argv[1]), sys.argv[2]
    (tmp / f"ready-{me}").touch()
    while len(list(tmp.glob("ready-*"))) < 2:  # start together
        time.sleep(0.01)
    split = load_split(sys.argv[3], "test", limit=400, size=16, cache_dir=tmp / "cache")
    print(json.dumps({"decoded": calls[0], "sha": hashlib.sha256(split.images.numpy().tobytes()).hexdigest()}))
""")


def test_two_processes_build_the_cache_once_and_read_the_same_data(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path), str(i), str(DEMO)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["decoded"] for r in results) == [0, 400]  # one built it, the other waited and mapped it
    assert results[0]["sha"] == results[1]["sha"]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([f for f in files if f.endswith(".u8")]) == 1 and not [f for f in files if ".tmp-" in f]


def _rewrite_header(raw: bytearray, edit) -> bytearray:
    """The cache file with its JSON header edited (padding kept), so that only the header is at fault."""
    from mvssl_hub.data.cache import MAGIC

    header = json.loads(bytes(raw[len(MAGIC):HEADER_BYTES]).rstrip(b" \x00"))
    blob = MAGIC + json.dumps(edit(header)).encode()
    return bytearray(blob.ljust(HEADER_BYTES, b" ")) + raw[HEADER_BYTES:]


@pytest.mark.parametrize("damage", ["truncate", "flip_data_byte", "garbage_header", "non_utf8_header",
                                    "header_not_an_object", "shape_disagrees_with_the_split"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path: Path, count_decodes: dict[str, int], damage: str) -> None:
    good = load_split(str(DEMO), "test", limit=50, size=16, cache_dir=tmp_path).images.clone()  # not the live map
    (path,) = tmp_path.glob("*.u8")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-100]
    elif damage == "flip_data_byte":
        raw[HEADER_BYTES + 1234] ^= 0xFF
    elif damage == "garbage_header":
        raw[:64] = b"x" * 64
    elif damage == "non_utf8_header":
        raw[20] = 0xFF  # inside the JSON text
    elif damage == "header_not_an_object":
        raw = _rewrite_header(raw, lambda h: [h])
    else:  # a consistent file of 25 images where the split has 50
        raw = _rewrite_header(raw, lambda h: {**h, "shape": [25, 3, 16, 16]})[: HEADER_BYTES + 25 * 3 * 16 * 16]
    path.write_bytes(bytes(raw))
    count_decodes["n"] = 0
    with pytest.warns(UserWarning, match=f"rebuilding the resized-image cache: cache file {path}"):
        again = load_split(str(DEMO), "test", limit=50, size=16, cache_dir=tmp_path)
    assert count_decodes["n"] == 50 and torch.equal(again.images, good)
    assert path.stat().st_size == HEADER_BYTES + 50 * 3 * 16 * 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt file is valid: no further warning, no decode
        load_split(str(DEMO), "test", limit=50, size=16, cache_dir=tmp_path)
    assert count_decodes["n"] == 50


def test_cache_key_follows_size_fraction_seed_and_revision(tmp_path: Path) -> None:
    def files() -> set[str]:
        return {p.name for p in tmp_path.glob("*.u8")}

    load_split(str(DEMO), "test", fraction=0.1, size=16, cache_dir=tmp_path)
    seen = files()
    assert len(seen) == 1
    variants = [{"fraction": 0.1, "size": 20}, {"fraction": 0.2, "size": 16}, {"fraction": 0.1, "size": 16, "seed": 3},
                {"fraction": 0.1, "size": 16, "revision": "refs/pr/1"}]
    for kw in variants:
        load_split(str(DEMO), "test", cache_dir=tmp_path, **kw)
        now = files()
        assert len(now) == len(seen) + 1, kw  # a new key, a new file
        seen = now
    # the seed does not select rows at fraction 1: both seeds share one file
    load_split(str(DEMO), "test", limit=30, size=16, seed=0, cache_dir=tmp_path)
    load_split(str(DEMO), "test", limit=30, size=16, seed=5, cache_dir=tmp_path)
    assert len(files()) == len(seen) + 1


def test_a_killed_builders_temporary_file_is_removed(tmp_path: Path) -> None:
    load_split(str(DEMO), "test", limit=20, size=16, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.u8")
    path.unlink()
    stale = tmp_path / f".{path.name}.tmp-999999"  # the builder died (SIGKILL) mid-build
    stale.write_bytes(b"partial")
    load_split(str(DEMO), "test", limit=20, size=16, cache_dir=tmp_path)
    assert path.is_file() and not stale.exists()


def test_concurrent_builders_serialise_on_the_lock_and_build_once(tmp_path: Path) -> None:
    """Two processes ask for the same missing cache at once: one builds (slowly), the other waits for the lock
    and maps the finished file; the builder ran once and both read the same images."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import torch
        from mvssl_hub.data.cache import cached_images

        def build(alloc):
            with open({str(tmp_path / "builds.txt")!r}, "a") as f:
                f.write("built\\n")
            out = alloc((4, 3, 2, 2))
            time.sleep(1.5)  # long enough for the other process to arrive while the lock is held
            out.copy_(torch.arange(48, dtype=torch.uint8).reshape(4, 3, 2, 2))
            return out

        images = cached_images(Path({str(tmp_path / "c.u8")!r}), "k", {{}}, build)
        print(int(images.sum()))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs == [str(sum(range(48)))] * 2
    assert (tmp_path / "builds.txt").read_text() == "built\n"

"""An on-disk cache of a resized split: one memory-mapped uint8 file per (dataset, split, size, subset).

File layout: a 4096-byte header (magic line + JSON: format, key, fields, shape, dtype, crc32 of the data),
then the images as raw uint8 (N, 3, H, W). Processes map the file copy-on-write, so every rank of a run
shares the page cache instead of holding its own copy. The build writes a temporary file in the same
folder and renames it into place under an exclusive file lock (``filelock``, which huggingface_hub uses for its
own cache): one process builds, the others wait and then map the finished file. A truncated file, a bad header or a checksum mismatch is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

MAGIC = b"MVSSL-RESIZED-U8\n"
HEADER_BYTES = 4096
FORMAT_VERSION = 1
_CRC_CHUNK = 64 << 20

# build(alloc) fills the tensor that alloc(shape) returns and gives it back
Builder = Callable[[Callable[[tuple[int, ...]], torch.Tensor]], torch.Tensor]


class CacheError(ValueError):
    """A cache file is truncated, corrupted or belongs to another key; the message names the file and field."""


def cache_key(fields: dict[str, Any]) -> str:
    """A 20-hex-digit key of everything that determines the cached pixels (JSON-serialisable ``fields``)."""
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def default_cache_dir() -> Path:
    """``<HF datasets cache>/mvssl_hub_resized`` (``HF_DATASETS_CACHE`` / ``HF_HOME`` are honoured)."""
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "mvssl_hub_resized"


def cache_file(cache_dir: str | Path, name: str, key: str) -> Path:
    """``cache_dir/<name with unsafe characters replaced>-<key>.u8``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")[:80] or "split"
    return Path(cache_dir).expanduser() / f"{safe}-{key}.u8"


def _checksum(data: np.ndarray) -> int:
    flat = data.reshape(-1)
    crc = 0
    for start in range(0, flat.size, _CRC_CHUNK):
        crc = zlib.crc32(flat[start : start + _CRC_CHUNK], crc)
    return crc


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a cache file; CacheError naming the file when it is missing or malformed."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
        raise CacheError(f"cache file {path}: header is truncated or has no {MAGIC!r} magic")
    try:
        header = json.loads(head[len(MAGIC) :].rstrip(b" \x00"))  # any damage: bad UTF-8, bad JSON, not a dict
    except ValueError as e:
        raise CacheError(f"cache file {path}: header is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise CacheError(f"cache file {path}: header is a JSON {type(header).__name__}, not an object")
    return header


def open_cache(path: Path, key: str, *, verify: bool = True, rows: int | None = None) -> torch.Tensor:
    """Map a finished cache file as uint8 (N, 3, H, W) (copy-on-write: writes never reach the file).

    Checks the header's key, dtype and shape against the file's size (and N against ``rows``, the split's
    row count, when given) and, with ``verify``, the crc32 of the data; raises CacheError naming the file
    and the field at fault.
    """
    header = read_header(path)
    if header.get("key") != key:
        raise CacheError(f"cache file {path}: header key {header.get('key')!r} != expected {key!r}")
    if header.get("dtype") != "uint8" or header.get("format") != FORMAT_VERSION:
        raise CacheError(f"cache file {path}: dtype {header.get('dtype')!r} / format {header.get('format')!r} "
                         f"is not uint8 / {FORMAT_VERSION}")
    raw_shape = header.get("shape")
    if (not isinstance(raw_shape, list) or len(raw_shape) != 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in raw_shape)):
        raise CacheError(f"cache file {path}: header shape {raw_shape!r:.80} is not 4 positive ints")
    shape = tuple(raw_shape)
    if rows is not None and shape[0] != rows:
        raise CacheError(f"cache file {path}: header shape {shape} holds {shape[0]} images, the split has {rows}")
    expected = HEADER_BYTES + int(np.prod(shape, dtype=np.int64))
    actual = path.stat().st_size
    if actual != expected:
        raise CacheError(f"cache file {path}: {actual} bytes on disk, header shape {shape} needs {expected}")
    data = np.memmap(path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=shape)
    if verify and _checksum(data) != header.get("crc32"):
        raise CacheError(f"cache file {path}: crc32 of the data != header crc32 {header.get('crc32')}")
    return torch.from_numpy(data)


def _write_atomically(path: Path, key: str, fields: dict[str, Any], build: Builder) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    holder: dict[str, np.memmap] = {}

    def alloc(shape: tuple[int, ...]) -> torch.Tensor:
        with open(tmp, "wb") as f:
            f.truncate(HEADER_BYTES + int(np.prod(shape, dtype=np.int64)))
        holder["data"] = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=HEADER_BYTES, shape=shape)
        return torch.from_numpy(holder["data"])

    try:
        build(alloc)
        data = holder["data"]
        data.flush()
        header = {"format": FORMAT_VERSION, "key": key, "dtype": "uint8", "shape": list(data.shape),
                  "crc32": _checksum(data), "fields": fields}
        blob = MAGIC + json.dumps(header, default=str).encode()
        if len(blob) > HEADER_BYTES:
            raise CacheError(f"cache file {path}: header of {len(blob)} bytes exceeds {HEADER_BYTES}")
        del data, holder["data"]
        with open(tmp, "r+b") as f:
            f.write(blob.ljust(HEADER_BYTES, b" "))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        holder.clear()
        tmp.unlink(missing_ok=True)


def cached_images(path: Path, key: str, fields: dict[str, Any], build: Builder, *, verify: bool = True,
                  rows: int | None = None) -> torch.Tensor:
    """The cached uint8 (N, 3, H, W) at ``path``, built once with ``build`` when missing or invalid (any damage,
    or N other than ``rows``).

    Concurrent callers serialise on ``path.lock``: the first builds, the others find the finished file. A
    builder holds the lock for its whole build, so a temporary file found under the lock is a killed
    builder's, and is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # fast path without the lock: a finished file is only ever replaced atomically
        with contextlib.suppress(CacheError, OSError):
            return open_cache(path, key, verify=verify, rows=rows)
    with FileLock(path.with_name(path.name + ".lock")):
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        if path.exists():
            try:
                return open_cache(path, key, verify=verify, rows=rows)
            except (CacheError, OSError) as e:
                warnings.warn(f"rebuilding the resized-image cache: {e}", stacklevel=3)
        _write_atomically(path, key, fields, build)
    return open_cache(path, key, verify=False, rows=rows)  # just checksummed while writing

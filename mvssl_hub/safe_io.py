"""Safe file I/O, the bottom of the load path: nothing here trusts a file, and nothing is unpickled.

- :func:`sha256_file`, :func:`check_regular_file`: hashing, and "a directory / FIFO where a file should be".
- :func:`refuse_pickle`: pickle / ``torch.save`` files are refused by name and magic bytes, unread.
- :func:`read_safetensors_header`, :func:`load_safetensors`: the header is parsed and checked (types,
  metadata, offsets that tile the data section without overlap) before a single tensor byte is read;
  every error of the safetensors library becomes a :class:`CheckpointError` naming the file.
- :func:`read_json_file`: bounded size and nesting depth, no duplicate keys, finite numbers only.
- :func:`atomic_write_folder`: a temporary sibling folder, fsync, then a swap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

# safetensors dtype codes -> (torch dtype, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
MAX_JSON_BYTES = 4 * 1024 * 1024  # a config.json is a few KB
MAX_JSON_DEPTH = 16
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_regular_file(path: Path, what: str = "file") -> int:
    """The size of ``path``; FileNotFoundError if absent, CheckpointError if it is not a regular file.

    A directory, FIFO, socket or device where a file should be is reported as exactly that (a FIFO
    would otherwise block the reader forever).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing ({what})") from None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    for test, kind in kinds:
        if test(st.st_mode):
            raise CheckpointError(f"{path}: is {kind}, not a regular file ({what} expected)")
    return st.st_size


def refuse_pickle(path: Path) -> None:
    """Raise CheckpointError if ``path`` is a pickle / torch.save archive, judged by name and magic bytes only.

    A file that is plausibly safetensors (its 8-byte little-endian header length fits the file and byte
    8 is ``{``) passes, since a header length such as 640 starts with the same bytes as a pickle.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing a {path.suffix} file as weights: pickle files can run code when loaded. "
            "Convert it once in a trusted environment (torch.load(..., weights_only=True) then "
            "mvssl_hub.save_pretrained) and load the safetensors checkpoint instead."
        )
    if not path.is_file():
        return
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= min(MAX_HEADER_BYTES, path.stat().st_size - 8):
            return  # plausibly safetensors; read_safetensors_header checks the rest
    magic = head[:4]
    if magic.startswith(b"PK\x03\x04") or (len(magic) >= 2 and magic[0] == 0x80 and 2 <= magic[1] <= 5):
        kind = "a zip archive (torch.save format)" if magic.startswith(b"PK") else "a pickle stream"
        raise CheckpointError(
            f"{path}: the file is {kind}, not safetensors; refusing to unpickle it. "
            "Re-export the weights with mvssl_hub.save_pretrained."
        )


# ------------------------------------------------------------------------------------------------------ JSON

def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} overflows to {value}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), iteratively."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, dict):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in value.values())
        elif isinstance(value, list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in value)
    return deepest


def parse_json(raw: bytes, where: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity or overflowing numbers, depth <= ``max_depth``.

    Every parser error becomes a CheckpointError that names ``where`` and what is wrong.
    """
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_float=_finite_float,
                           parse_constant=_reject_constant)
    except RecursionError:
        raise CheckpointError(f"{where}: JSON nested too deeply (limit {max_depth} levels)") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, int/float conversion, duplicates
        raise CheckpointError(f"{where}: invalid JSON (not JSON: {e})") from None
    if _depth(value) > max_depth:
        raise CheckpointError(f"{where}: JSON nested {_depth(value)} levels deep (limit {max_depth})")
    return value


def read_json_file(path: Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read ``path`` as strict JSON (:func:`parse_json`), refusing a file over ``max_bytes`` before reading it."""
    size = check_regular_file(path, "a JSON file")
    if size > max_bytes:
        raise CheckpointError(f"{path}: {size} bytes, over the {max_bytes}-byte limit for this JSON file")
    return parse_json(path.read_bytes(), str(path), max_depth=max_depth)


def json_bytes(obj: Any) -> bytes:
    """Indented JSON + newline; NaN/Infinity refused (the reader refuses them too)."""
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8")


# ----------------------------------------------------------------------------------------------- safetensors

@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return SAFETENSORS_DTYPES[self.dtype][0]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked header: tensors by name (file order), the string metadata, and the data section's size."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_bytes: int


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse and check a safetensors header without trusting it, reading no tensor data.

    CheckpointError for: not a regular file, a pickle, an empty or truncated file, an absurd header
    length, a header that is not strict JSON, metadata that is not string -> string, an entry with a
    bad dtype / shape / offsets, offsets that overlap, leave gaps or do not end where the file ends.
    """
    size = check_regular_file(path, "a safetensors weights file")
    refuse_pickle(path)
    if size < 8:
        raise CheckpointError(f"{path}: {size} bytes, too short for a safetensors file (empty or truncated)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError(
                f"{path}: corrupted safetensors header: declares a {n}-byte header but the file has {size} bytes"
            )
        raw = f.read(n)
    header = parse_json(raw, f"{path}: safetensors header", max_depth=3)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header: expected a JSON object, "
                              f"got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: safetensors __metadata__ must map strings to strings, got {metadata!r:.200}")
    tensors: dict[str, TensorInfo] = {}
    for name, info in header.items():
        ok = isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}
        if ok:
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            ok = (dtype in SAFETENSORS_DTYPES and isinstance(shape, list) and all(_is_count(s) for s in shape)
                  and isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets))
        if ok:
            begin, end = offsets
            ok = begin <= end and end - begin == math.prod(shape) * SAFETENSORS_DTYPES[dtype][1]
        if not ok:
            raise CheckpointError(f"{path}: corrupted safetensors header: bad entry for tensor {name!r}: {info!r:.200}")
        tensors[name] = TensorInfo(dtype, tuple(shape), begin, end)
    data_bytes = size - 8 - n
    position = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin != position:
            what = "overlaps the previous tensor" if t.begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(f"{path}: corrupted safetensors header: tensor {name!r} at bytes "
                                  f"[{t.begin}, {t.end}) {what}")
        position = t.end
    if position != data_bytes:
        what = "truncated" if position > data_bytes else "has trailing bytes"
        raise CheckpointError(
            f"{path}: {what}: the header describes {position} bytes of tensor data but the file holds {data_bytes}"
        )
    return SafetensorsHeader(tensors, metadata, data_bytes)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on the CPU; call after :func:`read_safetensors_header` has passed.

    Any error of the safetensors library (or of the file system under it) is a CheckpointError naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file: {e}") from None


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Serialize contiguous CPU tensors with string metadata."""
    from safetensors.torch import save

    return save(dict(tensors), metadata=dict(metadata))


# -------------------------------------------------------------------------------------------- atomic writes

def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` and fsync it (one place, so tests can inject a failure mid-save)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_folder(target: Path, files: Mapping[str, bytes], replace: Iterable[str] = ()) -> Path:
    """Write ``files`` into a temporary sibling folder, fsync, then swap it in place of ``target``.

    Entries of an existing ``target`` that are neither in ``files`` nor in ``replace`` (e.g. training
    logs in a run folder) are moved into the new folder. A failure before the swap leaves ``target``
    untouched and removes the temporary folder; a crash between the two renames leaves the previous
    folder in ``.<name>.old-*`` next to it.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; a checkpoint is saved as a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        for name, data in files.items():
            write_file(tmp / name, data)
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{tag}"
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    if old.exists():
        dropped = set(files) | set(replace)
        for entry in old.iterdir():
            if entry.name not in dropped and not (target / entry.name).exists():
                os.rename(entry, target / entry.name)
        shutil.rmtree(old)
    fsync_dir(target.parent)
    return target


def looks_local(source: str) -> bool:
    """True when ``source`` can only mean a path: it starts with ``.``, ``/`` or ``~``, ends in ``.parquet``,
    has more than one ``/`` (a Hub id is ``name`` or ``org/name``), or its first folder exists here (``runs/x``)."""
    if source.startswith((".", "/", "~")) or source.endswith(".parquet") or source.count("/") > 1:
        return True
    return "/" in source and Path(source.split("/", 1)[0]).is_dir()


def clean_leftovers(target: Path, replace: Iterable[str] = ()) -> list[str]:
    """Tidy what an interrupted :func:`atomic_write_folder` of ``target`` left beside it; returns what it did.

    ``.<name>.tmp-*`` (never swapped in) is removed. ``.<name>.old-*`` (the previous folder, set aside just
    before the swap) goes back to ``target`` when ``target`` is missing; otherwise the entries ``target`` lacks
    that are not in ``replace`` (what the swap had not yet carried over, as :func:`atomic_write_folder` would)
    move into it, and the rest is removed.
    """
    replaced = set(replace)
    target = Path(target)
    done: list[str] = []
    if not target.parent.is_dir():
        return done
    for p in sorted(target.parent.glob(f".{target.name}.tmp-*")):
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name}")
    for p in sorted(target.parent.glob(f".{target.name}.old-*")):
        if not target.exists():
            os.rename(p, target)
            done.append(f"restored {target.name} from {p.name}")
            continue
        for entry in p.iterdir():  # killed while carrying the old folder's other entries over: finish that
            if entry.name not in replaced and not (target / entry.name).exists():
                os.rename(entry, target / entry.name)
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name}")
    return done


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile


def strip_prefix(key: str) -> str:
    """``key`` without leading ``module.`` / ``_orig_mod.`` (any order, repeated)."""
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes from every key of a state dict."""
    return {strip_prefix(k): v for k, v in state.items()}


__all__ = [
    "SAFETENSORS_DTYPES", "SafetensorsHeader", "TensorInfo", "atomic_write_folder", "check_regular_file", "clean_leftovers",
    "fsync_dir", "json_bytes", "looks_local", "load_safetensors", "parse_json", "read_json_file", "read_safetensors_header",
    "refuse_pickle", "safetensors_bytes", "sha256_file", "strip_prefix", "strip_prefixes", "write_file",
]

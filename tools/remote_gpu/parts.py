"""One tar stream in parts: written there (each part at most 16 MiB, every part and the whole stream hashed),
checked and extracted here (a missing, truncated or corrupted part is refused by name, and nothing is unpacked)."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from .settings import MIB, NAME, PACKED


class Parts:
    """A binary sink that splits what is written into ``<prefix>aa``, ``ab``, ... of at most ``part_bytes`` each,
    hashing every part and the whole stream."""

    def __init__(self, prefix: Path, part_bytes: int) -> None:
        self.prefix, self.part_bytes = prefix, part_bytes
        self.whole = hashlib.sha256()
        self.parts: list[dict[str, Any]] = []
        self.file: BinaryIO | None = None
        self.size = 0

    def _next(self) -> None:
        self._finish()
        n = len(self.parts)
        name = self.prefix.name + chr(97 + n // 26) + chr(97 + n % 26)
        self.file = open(self.prefix.with_name(name), "wb")
        self.hash = hashlib.sha256()
        self.parts.append({"name": name, "bytes": 0})

    def _finish(self) -> None:
        if self.file is not None:
            self.file.close()
            self.parts[-1]["sha256"] = self.hash.hexdigest()
            self.file = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self.file is None or self.parts[-1]["bytes"] == self.part_bytes:
                self._next()
            take = view[: self.part_bytes - self.parts[-1]["bytes"]]
            self.file.write(take)  # type: ignore[union-attr]
            self.hash.update(take)
            self.whole.update(take)
            self.parts[-1]["bytes"] += len(take)
            self.size += len(take)
            view = view[len(take):]
        return len(data)

    def close(self) -> None:
        self._finish()


def pack_run(run: Path, folder: Path, part_bytes: int) -> dict[str, Any]:
    """The run's export and records as one tar stream in parts under ``folder``; their names and hashes."""
    for old in folder.glob(f"{NAME}.tar.part-*"):
        old.unlink()
    members = []
    for name in PACKED:
        path = run / name
        members += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.is_file()
    sink = Parts(folder / f"{NAME}.tar.part-", part_bytes)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in members:
            tar.add(path, arcname=path.relative_to(run).as_posix(), recursive=False)
    sink.close()
    return {"sha256": sink.whole.hexdigest(), "tar_bytes": sink.size, "part_bytes": part_bytes,
            "parts": sink.parts, "members": [p.relative_to(run).as_posix() for p in members]}


def verify(folder: Path, info: dict[str, Any]) -> list[Path]:
    """Every listed part present, of its size and sha256, and their concatenation the stream's sha256."""
    whole = hashlib.sha256()
    paths = []
    for part in info["parts"]:
        path = folder / part["name"]
        if not path.is_file():
            raise SystemExit(f"unpack: part {path} is missing (listed in {NAME}.json); nothing was unpacked")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(MIB):
                h.update(chunk)
                whole.update(chunk)
        if path.stat().st_size != part["bytes"] or h.hexdigest() != part["sha256"]:
            raise SystemExit(f"unpack: part {path} is corrupted or truncated ({path.stat().st_size} bytes, sha256 "
                             f"{h.hexdigest()}; expected {part['bytes']} bytes, {part['sha256']}); nothing was "
                             "unpacked")
        paths.append(path)
    if not paths or whole.hexdigest() != info["sha256"]:
        raise SystemExit(f"unpack: the parts in {folder} do not make the stream {NAME}.json names (sha256 "
                         f"{whole.hexdigest()} != {info['sha256']}); nothing was unpacked")
    return paths


def extract(parts: list[Path], target: Path) -> None:
    """Extract the stream into ``target``: regular files and folders under the packed names only."""
    stream = target / f"{NAME}.tar"
    with open(stream, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, MIB)
    with tarfile.open(stream) as tar:
        for member in tar.getmembers():
            name = member.name
            if (not (member.isfile() or member.isdir()) or name.startswith("/") or ".." in name.split("/")
                    or not any(name == p or name.startswith(p + "/") for p in PACKED)):
                raise SystemExit(f"unpack: unexpected member {name!r} in the stream; nothing was unpacked")
        kw: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(target, **kw)
    stream.unlink()

"""Stream a parquet split too large for RAM: shuffle windows of row groups, decode in DataLoader workers.

An epoch's order depends only on (seed, epoch): the row groups are permuted, their kept rows concatenated
and cut into windows of ``batches_per_window`` global batches; the rows of each window are permuted (a
shuffle buffer of ``window`` rows). Global batch ``k`` is ``window_rows[(k % bpw) * B : ... + B]`` of
window ``k // bpw``; process ``rank`` takes its contiguous share, as :func:`mvssl_hub.data.sampling.process_slice`.
So the batches do not depend on the number of DataLoader workers, and a run resumed at step ``s`` reads
only the windows from ``s`` on and sees the batches an uninterrupted run would have. Each DataLoader
worker decodes whole windows (this process's rows only); memory is about (workers + 1) x window / world
decoded images plus one window of encoded bytes per worker, whatever the dataset size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..version import renamed_names
from .decode import decode_into, first_image_shape
from .sampling import make_generator
from .splits import IMAGE_KEYS, LABEL_KEYS, subset_indices


@dataclass(frozen=True)
class RowGroup:
    """Rows ``rows`` (local indices) of row group ``group`` of parquet file ``file``."""

    file: str
    group: int
    rows: np.ndarray


def parquet_files(source: str, split: str, revision: str | None = None) -> list[str]:
    """The parquet files of ``split``: a ``.parquet`` file, a local folder, or a Hub dataset id (``hf://``)."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"dataset file {path} is not a .parquet file (streaming reads parquet)")
        return [str(path)]
    if path.is_dir():
        candidates = [str(p) for p in sorted(path.rglob("*.parquet"))]
    elif source.startswith((".", "/", "~")) or source.endswith(".parquet"):
        raise FileNotFoundError(f"dataset source {source!r} is not an existing file or folder")
    else:
        from huggingface_hub import HfFileSystem

        candidates = ["hf://" + p for p in sorted(HfFileSystem().glob(f"datasets/{source}@{revision or 'main'}/**/*.parquet"))]
    chosen = [p for p in candidates
              if Path(p).stem == split or Path(p).stem.startswith(f"{split}-") or Path(p).parent.name == split]
    if not chosen:
        raise ValueError(f"no parquet file for split {split!r} in {source} (expected {split}.parquet, "
                         f"{split}-*.parquet or {split}/*.parquet; streaming reads parquet only)")
    return chosen


def _open(file: str) -> Any:
    """A ``pyarrow.parquet.ParquetFile``; a damaged or unreadable file is a ValueError that names it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file.startswith("hf://"):
            from huggingface_hub import HfFileSystem

            return pq.ParquetFile(HfFileSystem().open(file[len("hf://"):], "rb"))
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"parquet file {file}: cannot be read ({type(e).__name__}: {e})") from None


def _read_rows(pf: Any, file: str, group: int, columns: list[str], rows: Any) -> Any:
    """Rows ``rows`` of row group ``group``; a damaged group is a ValueError that names the file and the group."""
    import pyarrow as pa

    try:
        return pf.read_row_group(group, columns=columns).take(pa.array(rows))
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"parquet file {file}: row group {group} cannot be read ({type(e).__name__}: {e})") from None


def _columns(schema: Any, image_key: str | None, label_key: str | None, where: str) -> tuple[str, str | None, list[str] | None]:
    """(image column, label column or None, class names or None) from an arrow schema and its HF metadata."""
    names = list(schema.names)
    features: dict[str, Any] = {}
    meta = schema.metadata or {}
    if b"huggingface" in meta:
        features = json.loads(meta[b"huggingface"]).get("info", {}).get("features", {}) or {}

    def pick(wanted: str | None, candidates: tuple[str, ...], kind: str, feature_type: str) -> str | None:
        if wanted is not None:
            if wanted not in names:
                raise ValueError(f"{where}: {kind} key {wanted!r} not in parquet columns {names}")
            return wanted
        typed = [c for c in names if isinstance(features.get(c), dict) and features[c].get("_type") == feature_type]
        return typed[0] if typed else next((c for c in candidates if c in names), None)

    img = pick(image_key, IMAGE_KEYS, "image", "Image")
    if img is None:
        raise ValueError(f"{where}: no image column in parquet columns {names}; pass image_key")
    lbl = pick(label_key, LABEL_KEYS, "label", "ClassLabel")
    class_names = features.get(lbl, {}).get("names") if lbl is not None else None
    return img, lbl, class_names


class StreamingSplit:
    """A parquet split read lazily: row groups, kept rows, columns; batches via :meth:`batches`.

    fraction keeps a class-balanced share (labels are read, images are not); limit keeps the first rows.
    size: every image is resized (shorter side) + centre-cropped to ``size`` when decoded.
    """

    def __init__(self, source: str, split: str = "train", *, size: int | None = None, fraction: float = 1.0,
                 seed: int = 0, limit: int | None = None, revision: str | None = None,
                 image_key: str | None = None, label_key: str | None = None) -> None:
        self.source, self.split, self.size, self.revision = source, split, size, revision
        files = parquet_files(source, split, revision)
        where = f"{source!r} split {split!r}"
        self.image_col, self.label_col, self.class_names = _columns(_open(files[0]).schema_arrow, image_key, label_key, where)
        groups: list[tuple[str, int, int]] = []
        for f in files:
            meta = _open(f).metadata
            groups += [(f, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        total = sum(n for _, _, n in groups)
        if total == 0:
            raise ValueError(f"{where} has no images")
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be >= 1, got {limit}")
            keep = torch.arange(min(limit, total))
        else:
            labels = None
            if self.label_col is not None and fraction < 1.0:
                labels = torch.as_tensor(np.concatenate(
                    [_open(f).read(columns=[self.label_col]).column(0).to_numpy() for f in files]), dtype=torch.int64)
            keep = subset_indices(total, fraction, labels, seed)
        mask = np.zeros(total, dtype=bool)
        mask[keep.numpy()] = True
        self.groups: list[RowGroup] = []
        offset = 0
        for f, g, n in groups:
            rows = np.flatnonzero(mask[offset : offset + n])
            if len(rows):
                self.groups.append(RowGroup(f, g, rows))
            offset += n
        self.num_rows = int(mask.sum())

    def __len__(self) -> int:
        return self.num_rows

    def describe(self) -> dict[str, Any]:
        return {"id": self.source, "revision": self.revision, "split": self.split, "num_images": len(self)}

    def epoch_groups(self, seed: int, epoch: int) -> list[RowGroup]:
        """The row groups in epoch ``epoch``'s order (a permutation seeded by (seed, epoch))."""

        order = torch.randperm(len(self.groups), generator=make_generator(seed, epoch, 0x5EED))
        return [self.groups[i] for i in order.tolist()]

    def read_positions(self, groups: list[RowGroup], start: int, stop: int) -> tuple[list[Any], torch.Tensor | None]:
        """Encoded images and labels at positions [start, stop) of the concatenation of ``groups``' kept rows."""
        import pyarrow as pa

        cols = [self.image_col] + ([self.label_col] if self.label_col else [])
        tables, pos, files = [], 0, {}
        for g in groups:
            lo, hi = max(start - pos, 0), min(stop - pos, len(g.rows))
            if lo < hi:
                pf = files.setdefault(g.file, _open(g.file))
                tables.append(_read_rows(pf, g.file, g.group, cols, g.rows[lo:hi]))
            pos += len(g.rows)
            if pos >= stop:
                break
        table = pa.concat_tables(tables)
        labels = None
        if self.label_col:
            labels = torch.from_numpy(table.column(self.label_col).to_numpy().astype(np.int64))
        return table.column(self.image_col).to_pylist(), labels

    def batches(self, global_batch: int, seed: int, rank: int = 0, world: int = 1, *, window: int = 2048,
                workers: int = 0) -> StreamDecoder:
        """Step -> (epoch, step in epoch, uint8 (global_batch / world, 3, S, S), labels or None)."""
        return StreamDecoder(self, global_batch, seed, rank, world, window=window, workers=workers)


class _EpochWindows(torch.utils.data.IterableDataset):
    """One epoch's windows from ``first_step`` on; worker ``w`` of ``W`` decodes windows w, w + W, ...

    Yields (first step, uint8 (steps, per_process, 3, S, S), int64 (steps, per_process) or None).
    """

    def __init__(self, batches: StreamDecoder, epoch: int, first_step: int) -> None:
        self.b, self.epoch, self.first_step = batches, epoch, first_step

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:

        b = self.b
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        groups = b.stream.epoch_groups(b.seed, self.epoch)
        per = b.global_batch // b.world
        first_window = self.first_step // b.bpw
        n_windows = -(-b.steps_per_epoch // b.bpw)
        for j in range(first_window + wid, n_windows, nw):
            w_steps = range(j * b.bpw, min((j + 1) * b.bpw, b.steps_per_epoch))
            rows = len(w_steps) * b.global_batch
            perm = torch.randperm(rows, generator=make_generator(b.seed, self.epoch, j, 0x5EED))
            steps = [s for s in w_steps if s >= self.first_step]
            encoded, labels = b.stream.read_positions(groups, w_steps[0] * b.global_batch, w_steps[0] * b.global_batch + rows)
            take = torch.cat([perm[(s - w_steps[0]) * b.global_batch:][b.rank * per : (b.rank + 1) * per] for s in steps])
            picked = [encoded[i] for i in take.tolist()]
            del encoded
            out = torch.empty((len(picked), *b.image_shape), dtype=torch.uint8)
            decode_into(out, lambda lo, hi, rows=picked: rows[lo:hi], b.stream.size,
                        where=f"{b.stream.source!r} split {b.stream.split!r} (epoch {self.epoch}, window {j})")
            lab = labels[take].view(len(steps), per) if labels is not None else None
            yield steps[0], out.view(len(steps), per, *b.image_shape), lab


class StreamDecoder:
    """Global step -> (epoch, step in epoch, this process's uint8 images, labels), decoded ahead by DataLoader
    workers; asking for a step other than the next one restarts the stream there (resume)."""

    def __init__(self, stream: StreamingSplit, global_batch: int, seed: int, rank: int, world: int, *,
                 window: int, workers: int) -> None:
        if global_batch < 1 or len(stream) < global_batch:
            raise ValueError(f"global batch {global_batch} needs 1 <= batch <= number of images ({len(stream)})")
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by the {world} processes")
        self.stream, self.global_batch, self.seed, self.rank, self.world = stream, global_batch, seed, rank, world
        self.workers = workers
        self.steps_per_epoch = len(stream) // global_batch
        self.bpw = max(1, window // global_batch)  # global batches per shuffle window
        self.image_shape = first_image_shape(lambda lo, hi: stream.read_positions(stream.groups, lo, hi)[0], stream.size)
        self._it: Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]] | None = None
        self._next = -1

    def _run(self, step: int) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        epoch, first = divmod(step, self.steps_per_epoch)
        while True:
            loader = torch.utils.data.DataLoader(_EpochWindows(self, epoch, first), batch_size=None,
                                                 num_workers=self.workers, prefetch_factor=1 if self.workers else None)
            for start, images, labels in loader:
                for i in range(images.shape[0]):
                    yield epoch, start + i, images[i], None if labels is None else labels[i]
            epoch, first = epoch + 1, 0

    def __call__(self, step: int) -> tuple[int, int, torch.Tensor, torch.Tensor | None]:
        if self._it is None or step != self._next:
            self.close()
            self._it = self._run(step)
        self._next = step + 1
        return next(self._it)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers started with spawn pickle the dataset
        return {**self.__dict__, "_it": None, "_next": -1}

    def close(self) -> None:
        """Stop the DataLoader workers (also done when the object is garbage-collected)."""
        if self._it is not None:
            self._it.close()
            self._it = None


__getattr__ = renamed_names(__name__, {"StreamBatches": "StreamDecoder"})  # the former name, until it goes

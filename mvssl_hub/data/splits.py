"""Image datasets decoded once into uint8 tensors: Hub ids, local parquet, imagefolder, ``save_to_disk`` folders.

Views are made later, batched on the training device (:mod:`mvssl_hub.views`), so a split is held as one
``(N, 3, H, W)`` uint8 tensor: CIFAR-10's 50,000 training images take 150 MB and decode in about a second.
Each image is decoded and resized before the next (:mod:`mvssl_hub.data.decode`), into a preallocated
tensor or into a memory-mapped on-disk cache shared by later runs and every process
(:mod:`mvssl_hub.data.cache`). Splits larger than RAM stream instead (:mod:`mvssl_hub.data.stream`).
``datasets`` is imported only when a split is loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DatasetUnreachableError
from ..safe_io import looks_local
from .cache import cache_file, cache_key, cached_images, default_cache_dir
from .decode import decode_into, first_image_shape

IMAGE_KEYS = ("img", "image", "images", "pixel_values")
LABEL_KEYS = ("label", "labels", "fine_label", "coarse_label")


@dataclass
class ImageSplit:
    """A decoded split. images: uint8 (N, 3, H, W); labels: int64 (N,) or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    source: str
    split: str
    revision: str | None = None
    indices: torch.Tensor | None = field(default=None, repr=False)  # rows kept by fraction/limit

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.labels is not None else None

    def describe(self) -> dict[str, Any]:
        """What a checkpoint's config records about its data."""
        return {"id": self.source, "revision": self.revision, "split": self.split, "num_images": len(self)}


def _open_dataset(source: str, split: str, revision: str | None) -> Any:
    """A ``datasets.Dataset`` for one split of a Hub id or a local folder/file."""
    import datasets

    path = Path(source).expanduser()
    if not path.exists():
        if looks_local(source):
            raise FileNotFoundError(f"dataset source {source!r}: no such file or folder")
        try:
            return datasets.load_dataset(source, split=split, revision=revision)
        except ConnectionError as e:  # offline, or the Hub unreachable: say what to pass instead
            raise DatasetUnreachableError(f"dataset {source!r} is not a local file or folder, and the Hub did not answer "
                                  f"({e}); pass a local copy (a parquet folder in the uoft-cs/cifar10 layout, an "
                                  "imagefolder or a save_to_disk folder)") from None
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"dataset file {path} is not a .parquet file")
        return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in {path} (has {sorted(loaded)})")
            return loaded[split]
        return loaded
    parquet = sorted(
        p for p in path.rglob("*.parquet")
        if p.stem == split or p.stem.startswith(f"{split}-") or p.parent.name == split
    )
    if parquet:
        return datasets.load_dataset("parquet", data_files={split: [str(p) for p in parquet]}, split=split)
    if any(path.rglob("*.parquet")):
        raise ValueError(f"no parquet file for split {split!r} in {path} (expected {split}.parquet or {split}-*.parquet)")
    try:
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split)
    except ValueError as e:
        if "Unknown split" not in str(e):
            raise
        raise FileNotFoundError(f"{path}: no {split!r} split in this image folder (its splits are subfolders named "
                                f"train/, test/, ...; a folder without them is all 'train'): {e}") from None


def _pick_key(ds: Any, wanted: str | None, candidates: tuple[str, ...], kind: str, feature_type: str) -> str | None:
    columns = list(ds.column_names)
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{kind} key {wanted!r} not in dataset columns {columns}")
        return wanted
    typed = [c for c in columns if type(ds.features[c]).__name__ == feature_type]
    if typed:
        return typed[0]
    return next((c for c in candidates if c in columns), None)


def subset_indices(n: int, fraction: float, labels: torch.Tensor | None, seed: int) -> torch.Tensor:
    """Sorted row indices of a ``fraction`` subset: class-balanced when labels exist, random otherwise."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(n, generator=gen)[: max(1, round(n * fraction))].sort().values
    keep = []
    for cls in labels.unique():
        rows = (labels == cls).nonzero().flatten()
        keep.append(rows[torch.randperm(len(rows), generator=gen)[: max(1, round(len(rows) * fraction))]])
    return torch.cat(keep).sort().values


def _encoded_rows(ds: Any, img_col: str) -> Any:
    """fetch(start, stop) -> the encoded images of rows [start, stop) as dicts {bytes, path} (nothing decoded)."""
    table = ds.with_format("arrow")

    def fetch(start: int, stop: int) -> list[Any]:
        return table[start:stop].column(img_col).to_pylist()

    return fetch


def split_cache_fields(ds: Any, source: str, split: str, *, size: int | None, revision: str | None, img_col: str,
                       fraction: float, limit: int | None, seed: int, rows: torch.Tensor) -> dict[str, Any]:
    """What determines a split's resized pixels: the cache key is a hash of these fields.

    ds: the dataset before row selection (its ``datasets`` fingerprint changes with the data files).
    seed only counts when it selects rows (fraction < 1 without a limit).
    """
    selects = limit is None and fraction < 1.0
    return {
        "source": source, "fingerprint": getattr(ds, "_fingerprint", None), "revision": revision, "split": split,
        "image_key": img_col, "size": size, "num_rows": len(ds), "fraction": None if limit is not None else fraction,
        "limit": limit, "seed": seed if selects else None,
        "rows_sha256": hashlib.sha256(rows.to(torch.int64).numpy().tobytes()).hexdigest(),
    }


def load_split(
    source: str,
    split: str = "train",
    *,
    fraction: float = 1.0,
    seed: int = 0,
    size: int | None = None,
    revision: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    limit: int | None = None,
    cache: bool = False,
    cache_dir: str | Path | None = None,
    decode_workers: int = 1,
    verify_cache: bool = True,
    progress: bool = False,
) -> ImageSplit:
    """Load and decode one split into a uint8 (N, 3, H, W) tensor.

    source: a Hub dataset id (e.g. ``uoft-cs/cifar10``), a ``.parquet`` file, a folder of parquet files
    (``{split}.parquet`` / ``{split}-*.parquet``), an imagefolder, or a ``save_to_disk`` folder.
    size: resize (shorter side) + centre-crop every image to ``size``; required when images differ in size.
    fraction: keep this share of the rows (class-balanced when there are labels); limit: keep the first rows.
    cache / cache_dir: read the resized split from a memory-mapped file under ``cache_dir`` (default: the
    HF datasets cache), building it on first use; setting ``cache_dir`` turns the cache on.
    decode_workers: threads that decode and resize (each image is resized before the next is decoded).
    verify_cache: check the cache file's crc32 on load (a size/header check is always made).
    progress: show a progress bar while decoding.
    """
    import datasets

    if decode_workers < 1:
        raise ValueError(f"decode_workers must be >= 1, got {decode_workers}")
    ds = _open_dataset(source, split, revision)
    img_col = _pick_key(ds, image_key, IMAGE_KEYS, "image", "Image")
    if img_col is None:
        raise ValueError(f"no image column in {source!r} split {split!r}: columns {ds.column_names}; pass image_key")
    lbl_col = _pick_key(ds, label_key, LABEL_KEYS, "label", "ClassLabel")
    class_names = None
    labels = None
    if lbl_col is not None:
        feature = ds.features[lbl_col]
        class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        labels = torch.as_tensor(ds[lbl_col], dtype=torch.int64)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = torch.arange(min(limit, len(ds)))
    else:
        rows = subset_indices(len(ds), fraction, labels, seed)
    full = ds
    if len(rows) < len(ds):
        ds = ds.select(rows.tolist())
        labels = labels[rows] if labels is not None else None
    if len(ds) == 0:
        raise ValueError(f"{source!r} split {split!r} has no images")
    fetch = _encoded_rows(ds, img_col)
    where = f"{source!r} split {split!r}"

    def build(alloc: Any) -> torch.Tensor:
        out = alloc((len(ds), *first_image_shape(fetch, size)))
        return decode_into(out, fetch, size, workers=decode_workers, where=where, progress=progress)

    if cache or cache_dir is not None:
        fields = split_cache_fields(full, source, split, size=size, revision=revision, img_col=img_col,
                                    fraction=fraction, limit=limit, seed=seed, rows=rows)
        key = cache_key(fields)
        path = cache_file(cache_dir if cache_dir is not None else default_cache_dir(), f"{source}-{split}", key)
        images = cached_images(path, key, fields, build, verify=verify_cache, rows=len(ds))
    else:
        images = build(lambda shape: torch.empty(shape, dtype=torch.uint8))
    return ImageSplit(images, labels, class_names, source, split, revision, rows)

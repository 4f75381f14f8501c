"""Image datasets decoded once into uint8 tensors: Hub ids, local parquet, imagefolder, ``save_to_disk`` folders.

Views are made later, batched on the training device (:mod:`mvssl_hub.views`), so a split is held as one
``(N, 3, H, W)`` uint8 tensor: CIFAR-10's 50,000 training images take 150 MB and decode in about a second.
``datasets`` is imported only when a split is loaded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

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
        if source.startswith((".", "/", "~")) or source.endswith(".parquet"):
            raise FileNotFoundError(f"dataset source {source!r} is not an existing file or folder")
        return datasets.load_dataset(source, split=split, revision=revision)
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
    return datasets.load_dataset("imagefolder", data_dir=str(path), split=split)


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


def _decode(item: dict[str, Any] | Any, index: int) -> torch.Tensor:
    """One encoded image -> uint8 (3, H, W). torchvision's decoder first (fast), PIL for other formats."""
    from torchvision.io import ImageReadMode, decode_image

    data = item.get("bytes") if isinstance(item, dict) else None
    if data is None and isinstance(item, dict) and item.get("path"):
        data = Path(item["path"]).read_bytes()
    if data is None:
        raise ValueError(f"image at row {index} has neither bytes nor a path")
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            rgb = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
            return rgb.view(im.height, im.width, 3).permute(2, 0, 1).contiguous()


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): shorter side to ``size`` (antialiased), then centre crop."""
    _, h, w = image.shape
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        image = resized[0, :, top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)
    return image


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
) -> ImageSplit:
    """Load and decode one split into memory.

    source: a Hub dataset id (e.g. ``uoft-cs/cifar10``), a ``.parquet`` file, a folder of parquet files
    (``{split}.parquet`` / ``{split}-*.parquet``), an imagefolder, or a ``save_to_disk`` folder.
    size: resize (shorter side) + centre-crop every image to ``size``; required when images differ in size.
    fraction: keep this share of the rows (class-balanced when there are labels); limit: keep the first rows.
    """
    import datasets

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
    if len(rows) < len(ds):
        ds = ds.select(rows.tolist())
        labels = labels[rows] if labels is not None else None
    encoded = ds.cast_column(img_col, datasets.Image(decode=False))[img_col]
    with warnings.catch_warnings():  # torchvision 0.29 flags its decoders as deprecated; PIL is the fallback
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = [_decode(item, i) for i, item in enumerate(encoded)]
    if size is not None:
        decoded = [resize_center_crop(image, size) for image in decoded]
    for i, image in enumerate(decoded):
        if image.shape != decoded[0].shape:
            raise ValueError(
                f"{source!r} split {split!r}: row {i} has shape {tuple(image.shape)} but row 0 has "
                f"{tuple(decoded[0].shape)}; pass size= to resize every image"
            )
    if not decoded:
        raise ValueError(f"{source!r} split {split!r} has no images")
    return ImageSplit(torch.stack(decoded), labels, class_names, source, split, revision, rows)

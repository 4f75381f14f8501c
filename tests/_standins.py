"""Offline stand-ins with the shapes of real datasets, generated (never downloaded) by tests and benchmarks.

JPEG content is a smooth colour field plus a few blocks and noise, so file sizes and decode times are
close to photographs' (~100 KB at 500x375). A few distinct images per size are encoded once and reused.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def jpeg(width: int, height: int, seed: int, quality: int = 85) -> bytes:
    """A photograph-like RGB JPEG of (width, height)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-0.5, 0.5, (3, 2))
    img = base + x[..., None] * slope[:, 0] + y[..., None] * slope[:, 1]
    for _ in range(6):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        img[y0 : y0 + height // 4, x0 : x0 + width // 4] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def mixed_sizes(n: int, seed: int, around: tuple[int, int] = (500, 375), spread: float = 0.25) -> list[tuple[int, int]]:
    """``n`` (width, height) pairs within +-``spread`` of ``around``, landscape and portrait."""
    rng = np.random.default_rng(seed)
    w0, h0 = around
    out = []
    for _ in range(n):
        w, h = int(w0 * rng.uniform(1 - spread, 1 + spread)), int(h0 * rng.uniform(1 - spread, 1 + spread))
        out.append((w, h) if rng.random() < 0.7 else (h, w))
    return out


def image_pool(sizes: list[tuple[int, int]], distinct: int = 24, seed: int = 0) -> list[bytes]:
    """One JPEG per entry of ``sizes``, drawn from ``distinct`` encoded images per size bucket (fast to make)."""
    cache: dict[tuple[int, int], bytes] = {}
    out = []
    for i, (w, h) in enumerate(sizes):
        key = (w // 16 * 16, h // 16 * 16) if distinct else (w, h)
        key = (key[0], key[1]) if len(cache) < distinct or key in cache else list(cache)[i % len(cache)]
        if key not in cache:
            cache[key] = jpeg(*key, seed=seed + len(cache))
        out.append(cache[key])
    return out


def write_imagefolder(root: Path, split: str, sizes: list[tuple[int, int]], num_classes: int, seed: int = 0) -> int:
    """JPEGs under ``root/split/class_k/i.jpg``; returns the full-size decoded bytes (sum of 3*w*h)."""
    full = 0
    for i, blob in enumerate(image_pool(sizes, seed=seed)):
        folder = root / split / f"class_{i % num_classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(blob)
    from PIL import Image

    for folder in (root / split).iterdir():
        for f in folder.iterdir():
            with Image.open(f) as im:
                full += 3 * im.width * im.height
    return full


def write_parquet(path: Path, sizes: list[tuple[int, int]], num_classes: int | None, *, seed: int = 0,
                  rows_per_group: int = 64, label_key: str = "label") -> Path:
    """A Hub-style parquet file (HF features metadata: Image, ClassLabel) of JPEGs of ``sizes``."""
    import datasets

    blobs = image_pool(sizes, seed=seed)
    data: dict[str, list] = {"image": [{"bytes": b, "path": None} for b in blobs]}
    features = {"image": datasets.Image()}
    if num_classes is not None:
        data[label_key] = [i % num_classes for i in range(len(blobs))]
        features[label_key] = datasets.ClassLabel(names=[f"n{k:08d}" for k in range(num_classes)])
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path), batch_size=rows_per_group)
    return path


def stl10_standin(root: Path, n_unlabeled: int = 96, n_train: int = 40, n_test: int = 40) -> Path:
    """tanganke/stl10's layout: ``unlabeled`` (no labels), ``train`` / ``test`` (10 classes), 96x96 JPEGs."""
    write_parquet(root / "unlabeled.parquet", [(96, 96)] * n_unlabeled, None, seed=1)
    write_parquet(root / "train.parquet", [(96, 96)] * n_train, 10, seed=2)
    write_parquet(root / "test.parquet", [(96, 96)] * n_test, 10, seed=3)
    return root


def imagenet100_standin(root: Path, n_train: int = 96, n_val: int = 40) -> Path:
    """clane9/imagenet-100's layout: ``train`` / ``validation`` parquet, 100 classes, mixed-size JPEGs."""
    write_parquet(root / "train.parquet", mixed_sizes(n_train, 0, (400, 350)), 100, seed=4)
    write_parquet(root / "validation.parquet", mixed_sizes(n_val, 1, (400, 350)), 100, seed=5)
    return root

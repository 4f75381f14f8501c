"""Dataset loading: parquet files and folders, save_to_disk, imagefolder, fractions, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mvssl_hub.data.decode import resize_center_crop
from mvssl_hub.data.splits import load_split, subset_indices

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "data" / "cifar10-5k"


def test_embedded_demo_set_decodes_balanced() -> None:
    train = load_split(str(DEMO), "train")
    test = load_split(str(DEMO / "test.parquet"), "test")
    assert train.images.shape == (5000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 3, 32, 32)
    assert train.labels.bincount().tolist() == [500] * 10
    assert train.class_names[:2] == ["airplane", "automobile"] and train.num_classes == 10
    assert 60 < train.images.float().mean() < 180  # real photographs, not blank decodes


def test_fraction_is_class_balanced_and_seeded() -> None:
    a = load_split(str(DEMO), "test", fraction=0.3, seed=1)
    b = load_split(str(DEMO), "test", fraction=0.3, seed=1)
    c = load_split(str(DEMO), "test", fraction=0.3, seed=2)
    assert a.labels.bincount().tolist() == [30] * 10
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    full = load_split(str(DEMO), "test")
    assert torch.equal(full.images[a.indices], a.images)


def test_subset_without_labels_and_bad_fraction() -> None:
    idx = subset_indices(100, 0.25, None, seed=0)
    assert len(idx) == 25 and len(idx.unique()) == 25
    with pytest.raises(ValueError, match="fraction must be in \\(0, 1\\], got 1.5"):
        subset_indices(10, 1.5, None, 0)


def test_save_to_disk_and_imagefolder(tmp_path: Path) -> None:
    import datasets
    from PIL import Image

    sub = load_split(str(DEMO), "test", limit=12)
    ds = datasets.load_dataset("parquet", data_files={"test": str(DEMO / "test.parquet")}, split="test").select(range(12))
    ds.save_to_disk(str(tmp_path / "disk"))
    from_disk = load_split(str(tmp_path / "disk"), "test")
    assert torch.equal(from_disk.images, sub.images) and torch.equal(from_disk.labels, sub.labels)

    for i in range(6):  # two classes of PNGs of different sizes: needs size=
        cls = "cat" if i % 2 else "dog"
        (tmp_path / "folder" / "train" / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 48), color=(10 * i, 100, 200)).save(tmp_path / "folder" / "train" / cls / f"{i}.png")
    with pytest.raises(ValueError, match="pass size="):
        load_split(str(tmp_path / "folder"), "train")
    folder = load_split(str(tmp_path / "folder"), "train", size=32)
    assert folder.images.shape == (6, 3, 32, 32) and folder.class_names == ["cat", "dog"]
    assert folder.labels.tolist().count(0) == 3


def test_resize_center_crop() -> None:
    img = torch.zeros(3, 20, 40, dtype=torch.uint8)
    img[:, :, 10:30] = 255  # bright centre band survives the centre crop
    out = resize_center_crop(img, 10)
    assert out.shape == (3, 10, 10) and out.float().mean() > 200


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        load_split("./no/such/dir", "train")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="x.csv is not a .parquet file"):
        load_split(str(tmp_path / "x.csv"), "train")
    with pytest.raises(ValueError, match="no parquet file for split 'validation'"):
        load_split(str(DEMO), "validation")
    with pytest.raises(ValueError, match=r"image key 'picture' not in dataset columns \['img', 'label'\]"):
        load_split(str(DEMO), "test", image_key="picture")

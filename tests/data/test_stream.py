"""The streaming path: batches fixed by (seed, epoch, step), whatever the worker count; resumable; rank shares."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mvssl_hub.data.splits import load_split
from mvssl_hub.data.stream import StreamingSplit, parquet_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared helpers

from _standins import mixed_sizes, write_parquet


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """180 mixed-size JPEGs in two parquet files (row groups of 16); label = row number (a row id)."""
    root = tmp_path_factory.mktemp("stream")
    sizes = mixed_sizes(180, 3, (200, 150))
    write_parquet(root / "train-00000-of-00002.parquet", sizes[:100], None, rows_per_group=16)
    write_parquet(root / "train-00001-of-00002.parquet", sizes[100:], None, rows_per_group=16)
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, f in enumerate(sorted(root.glob("train-*.parquet"))):  # add row ids as an int "label" column
        t = pq.read_table(f)
        start = 0 if i == 0 else 100
        t = t.append_column("label", pa.array(range(start, start + t.num_rows), pa.int64()))
        pq.write_table(t, f, row_group_size=16)
    return root


def run(stream: StreamingSplit, steps: range, **kw) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    b = stream.batches(20, seed=7, **kw)
    try:
        return [b(s) for s in steps]
    finally:
        b.close()


def test_batches_do_not_depend_on_workers_and_resume_exactly(big: Path) -> None:
    stream = StreamingSplit(str(big), "train", size=24)
    assert len(stream) == 180 and len(parquet_files(str(big), "train")) == 2
    ref = run(stream, range(12), window=60, workers=0)  # 9 steps per epoch: spans two epochs
    assert [(e, s) for e, s, _, _ in ref] == [(0, i) for i in range(9)] + [(1, 0), (1, 1), (1, 2)]
    assert ref[0][2].shape == (20, 3, 24, 24) and ref[0][2].dtype == torch.uint8
    epoch0 = torch.cat([lab for e, _, _, lab in ref if e == 0])
    assert len(epoch0.unique()) == 180  # every row once per epoch (180 = 9 x 20)
    epoch1 = torch.cat([lab for e, _, _, lab in ref if e == 1])
    assert not torch.equal(epoch0[:60], epoch1)  # a new order each epoch
    assert not torch.equal(epoch0[:60].sort().values, torch.arange(60))  # shuffled, not file order
    two = run(stream, range(12), window=60, workers=2)
    resumed = run(stream, range(5, 12), window=60, workers=2)  # a run restarted at step 5 (mid-window)
    for a, b in zip(ref, two):
        assert a[:2] == b[:2] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    for a, b in zip(ref[5:], resumed):
        assert a[:2] == b[:2] and torch.equal(a[2], b[2])
    # each image is the one its row id names: compare with the in-memory decode of the same rows
    full = torch.cat([load_split(str(f), "train", size=24).images for f in sorted(big.glob("train-*.parquet"))])
    assert torch.equal(ref[3][2], full[ref[3][3]])


def test_processes_take_contiguous_shares_of_the_global_batch(big: Path) -> None:
    stream = StreamingSplit(str(big), "train", size=16)
    whole = run(stream, range(3), window=40)
    r0 = run(stream, range(3), window=40, rank=0, world=2)
    r1 = run(stream, range(3), window=40, rank=1, world=2)
    for w, a, b in zip(whole, r0, r1):
        assert a[2].shape[0] == 10 and torch.equal(torch.cat([a[2], b[2]]), w[2])


def test_fraction_limit_and_errors(big: Path, tmp_path: Path) -> None:
    assert len(StreamingSplit(str(big), "train", size=16, limit=50)) == 50
    write_parquet(tmp_path / "train.parquet", [(32, 32)] * 60, 3, rows_per_group=8)  # 3 classes x 20
    half = StreamingSplit(str(tmp_path), "train", fraction=0.5, seed=1)
    assert len(half) == 30
    labels = torch.cat([lab for *_, lab in run(half, range(1), window=40)])  # batch 20 of the 30 kept rows
    kept = torch.cat([torch.as_tensor(g.rows) + 8 * g.group for g in half.groups]).sort().values
    assert torch.equal(kept, load_split(str(tmp_path), "train", fraction=0.5, seed=1).indices)  # same subset
    assert torch.equal(labels.bincount(minlength=3) <= 10, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no parquet file for split 'validation'"):
        StreamingSplit(str(big), "validation")
    with pytest.raises(ValueError, match=r"image key 'pic' not in parquet columns \['image', 'label'\]"):
        StreamingSplit(str(big), "train", image_key="pic")
    with pytest.raises(ValueError, match="pass size="):  # mixed sizes need a storage size
        run(StreamingSplit(str(big), "train"), range(1))
    with pytest.raises(ValueError, match="global batch 400 needs 1 <= batch <= number of images \\(180\\)"):
        StreamingSplit(str(big), "train", size=8).batches(400, 0)


def test_a_damaged_parquet_file_is_named(tmp_path: Path) -> None:
    write_parquet(tmp_path / "train.parquet", [(32, 32)] * 40, 2, rows_per_group=8)
    raw = (tmp_path / "train.parquet").read_bytes()
    (tmp_path / "train.parquet").write_bytes(raw[:-40])  # the footer is gone
    with pytest.raises(ValueError, match=r"parquet file .*train\.parquet: cannot be read"):
        StreamingSplit(str(tmp_path), "train")
    good = tmp_path / "good"
    good.mkdir()
    write_parquet(good / "train.parquet", [(32, 32)] * 40, 2, rows_per_group=8)
    stream = StreamingSplit(str(good), "train")
    (good / "train.parquet").write_bytes(b"PAR1")  # the file was replaced after the stream was opened
    with pytest.raises(ValueError, match=r"parquet file .*good/train\.parquet: (row group \d+ )?cannot be read"):
        run(stream, range(2), window=40)

"""Cut the embedded demo set from a full CIFAR-10 parquet copy: 500 train + 100 test images per class.

Usage: python recipes/data/make_cifar10_5k.py ../shared/data/cifar10 recipes/data/cifar10-5k
Rows keep the uoft-cs/cifar10 layout (``img`` Image, ``label`` ClassLabel) and schema metadata, so
every loader treats the subset like the full set. The first rows of each class are taken, in file order.
"""

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PER_CLASS = {"train": 500, "test": 100}


def cut(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for split, per_class in PER_CLASS.items():
        table = pq.read_table(src / f"{split}.parquet")
        labels = table.column("label")
        keep = []
        for cls in range(10):
            rows = pc.indices_nonzero(pc.equal(labels, cls)).to_pylist()[:per_class]
            keep.extend(rows)
        subset = table.take(pa.array(sorted(keep)))
        pq.write_table(subset, dst / f"{split}.parquet", compression="zstd")
        print(f"{dst / f'{split}.parquet'}: {subset.num_rows} rows")


if __name__ == "__main__":
    cut(Path(sys.argv[1]), Path(sys.argv[2]))

"""The recipes' default dataset when the Hub cannot be asked: the CIFAR-10 cut embedded beside this file.

``evaluate`` and ``finetune`` default to the Hub's CIFAR-10 (``uoft-cs/cifar10``). Offline, with that default
(no ``--data`` given), they fall back to ``recipes/data/cifar10-5k`` (5,000 training / 1,000 test images) and
say so; their records then name that cut, never the full dataset. ``--data PATH`` points at any other copy
(a parquet folder in the ``uoft-cs/cifar10`` layout, an imagefolder or a ``save_to_disk`` folder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mvssl_hub.errors import DatasetUnreachableError

EMBEDDED = {"uoft-cs/cifar10": Path(__file__).resolve().parent / "cifar10-5k"}
T = TypeVar("T")


def load_or_embedded(load: Callable[[str], T], data: str, *, default: bool, say: Callable[[str], None]) -> tuple[T, str]:
    """(``load(data)``, data), or when the Hub cannot be asked for the default dataset, (``load(copy)``, copy)
    with the embedded copy; an explicit ``--data`` is never replaced."""
    try:
        return load(data), data
    except DatasetUnreachableError:
        copy = EMBEDDED.get(data)
        if not default or copy is None or not copy.is_dir():
            raise
    say(f"# the Hub cannot be reached for {data}: using the embedded cut {copy} instead (5,000 train / 1,000 test "
        "images; results are recorded under its name); pass --data PATH for a full local copy")
    return load(str(copy)), str(copy)

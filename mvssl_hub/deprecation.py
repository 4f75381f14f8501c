"""Public names that were renamed keep their old name for one release, with a ``DeprecationWarning`` naming the new.

A module that renamed a public class sets ``__getattr__ = renamed_names(__name__, {"Old": "New"})``: the old name
then answers (``from module import Old`` included) with the new name's object, and any other missing name is still
an AttributeError (an ImportError for ``from ... import``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

RENAMED_UNTIL = "0.2.0"  # the first release without the old names


def renamed_names(module: str, renames: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module`` that answers each old name of ``renames`` (old -> new)."""

    def __getattr__(name: str) -> Any:
        new = renames.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is now {module}.{new}; the old name goes in mvssl-hub {RENAMED_UNTIL}",
                      DeprecationWarning, stacklevel=2)
        return getattr(sys.modules[module], new)

    return __getattr__


__all__ = ["RENAMED_UNTIL", "renamed_names"]

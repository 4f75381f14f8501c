"""The project's names, defined once: SSL methods and the loss forms each accepts.

- ``barlowtwins``: ``classic`` (M = 2), ``mean`` (O(M): each view against the per-image mean), ``all_pairs`` (O(M²)).
- ``vicreg``: ``classic``, ``leave_one_out`` (O(M): each view against the mean of the others), ``all_pairs``.
- ``auto``: classic at M = 2, the O(M) form above.
"""

from __future__ import annotations

METHODS: tuple[str, ...] = ("barlowtwins", "vicreg")
BT_FORMS: tuple[str, ...] = ("auto", "classic", "mean", "all_pairs")
VICREG_FORMS: tuple[str, ...] = ("auto", "classic", "leave_one_out", "all_pairs")
LOSS_FORMS: dict[str, tuple[str, ...]] = {"barlowtwins": BT_FORMS, "vicreg": VICREG_FORMS}
METHOD_TITLES: dict[str, str] = {"barlowtwins": "BarlowTwins", "vicreg": "VICReg"}
# Narrow widths with builders of their own (``<method>_resnet18_w16``), as torchvision names ``wide_resnet50_2``.
NARROW_WIDTHS: tuple[int, ...] = (16,)

__all__ = ["BT_FORMS", "LOSS_FORMS", "METHODS", "METHOD_TITLES", "NARROW_WIDTHS", "VICREG_FORMS"]

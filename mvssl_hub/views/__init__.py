"""Views: the multi-view augmentation and the evaluation transform, as batched tensor ops on the images' device.

One job per module:

- :mod:`.presets`: each dataset's augmentation and evaluation settings (:class:`ViewPreset`, ``VIEW_PRESETS``);
- :mod:`.params`: the views' random parameters, drawn on the CPU (crop boxes, flips, jitter factors, masks);
- :mod:`.packing`: those parameters packed into one tensor, so that they reach the device in one copy;
- :mod:`.ops`: input checks, sync-free transfers and cached constants, the colour ops, the normalisation;
- :mod:`.augment`: :class:`MultiViewAugment` (M views of a batch) and :func:`views_for_probe`;
- :mod:`.eval_transform`: :class:`EvalTransform` and :func:`eval_transform_from` (a checkpoint's record).

Every public name stays importable from ``mvssl_hub.views``.
"""

from .augment import MultiViewAugment, views_for_probe
from .eval_transform import EvalTransform, eval_transform_from
from .params import ViewParams, sample_crop_boxes
from .presets import IMAGENET_MEAN, IMAGENET_STD, VIEW_PRESETS, ViewPreset, get_view_preset  # noqa: F401 (module-level constants views.py had)

__all__ = [
    "VIEW_PRESETS",
    "EvalTransform",
    "eval_transform_from",
    "MultiViewAugment",
    "ViewParams",
    "ViewPreset",
    "get_view_preset",
    "sample_crop_boxes",
    "views_for_probe",
]

"""Decode + resize encoded images one at a time straight into a preallocated uint8 tensor, on worker threads.

Peak memory is the output tensor plus a bounded working set (a few chunks of encoded bytes and one
full-size image per worker), never the full-size split. torchvision's decoders and ``F.interpolate``
release the GIL, so threads decode in parallel without pickling anything between processes.
"""

from __future__ import annotations

import io
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# fetch(start, stop) -> the encoded images of rows [start, stop): dicts {"bytes", "path"} or raw bytes
Fetch = Callable[[int, int], Sequence[Any]]


def _decode(item: dict[str, Any] | bytes | Any, index: int) -> torch.Tensor:
    """One encoded image -> uint8 (3, H, W). torchvision's decoder first (fast), PIL for other formats."""
    from torchvision.io import ImageReadMode, decode_image

    data = item if isinstance(item, (bytes, bytearray)) else None
    if isinstance(item, dict):
        data = item.get("bytes")
        if data is None and item.get("path"):
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


def decode_one(item: Any, index: int, size: int | None) -> torch.Tensor:
    """Decode row ``index`` and, when ``size`` is set, resize + centre-crop it: uint8 (3, H, W)."""
    image = _decode(item, index)
    return resize_center_crop(image, size) if size is not None else image


def _fill(out: torch.Tensor, start: int, items: Sequence[Any], size: int | None, where: str) -> None:
    for offset, item in enumerate(items):
        image = decode_one(item, start + offset, size)
        if image.shape != out.shape[1:]:
            raise ValueError(
                f"{where}: row {start + offset} has shape {tuple(image.shape)} but row 0 has "
                f"{tuple(out.shape[1:])}; pass size= to resize every image"
            )
        out[start + offset] = image


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar (tqdm comes with the ``train`` extra), or a stand-in whose update() does nothing."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False)
        except ImportError:
            pass

    class _Quiet:
        def update(self, n: int) -> None: ...
        def close(self) -> None: ...

    return _Quiet()


def decode_into(
    out: torch.Tensor, fetch: Fetch, size: int | None, *, workers: int = 1, chunk: int = 64, where: str = "dataset",
    progress: bool = False,
) -> torch.Tensor:
    """Fill ``out`` uint8 (N, 3, H, W) with rows 0..N-1 of ``fetch``, decoded (and resized to ``size``).

    workers > 1 decodes chunks of ``chunk`` rows on that many threads; at most ``2 * workers`` chunks of
    encoded bytes are held at once. Rows whose decoded shape differs from ``out``'s raise a ValueError.
    ``progress`` shows a bar (decoding ImageNet-100 takes minutes).
    """
    n = out.shape[0]
    bar = _progress_bar(n, f"decoding {where}", progress)
    try:
        return _decode_all(out, fetch, size, workers, chunk, where, bar)
    finally:
        bar.close()


def _decode_all(out: torch.Tensor, fetch: Fetch, size: int | None, workers: int, chunk: int, where: str,
                bar: Any) -> torch.Tensor:
    n = out.shape[0]
    with warnings.catch_warnings():  # torchvision 0.29 flags its decoders as deprecated; PIL is the fallback
        warnings.simplefilter("ignore", DeprecationWarning)
        if workers <= 1:
            for start in range(0, n, chunk):
                _fill(out, start, fetch(start, min(start + chunk, n)), size, where)
                bar.update(min(chunk, n - start))
            return out
        pending: deque[Future[None]] = deque()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mvssl-decode") as pool:
            try:
                for start in range(0, n, chunk):
                    if len(pending) >= 2 * workers:
                        pending.popleft().result()
                        bar.update(chunk)
                    pending.append(pool.submit(_fill, out, start, fetch(start, min(start + chunk, n)), size, where))
                while pending:
                    pending.popleft().result()
                    bar.update(chunk)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return out


def first_image_shape(fetch: Fetch, size: int | None) -> tuple[int, int, int]:
    """(3, H, W) of row 0 after decoding (and resizing): the shape the output tensor is allocated with."""
    if size is not None:
        return (3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tuple(_decode(fetch(0, 1)[0], 0).shape)  # type: ignore[return-value]

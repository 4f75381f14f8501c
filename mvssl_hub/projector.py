"""The projector MLP from a spec string such as ``"512-256-256"``.

Each hidden layer is Linear (no bias) -> BatchNorm1d -> ReLU; the last layer is a plain Linear
(no bias), as in Barlow Twins / VICReg and the reference code of the multi-view paper.
"""

from __future__ import annotations

import torch.nn as nn


def parse_projector_spec(spec: str) -> list[int]:
    """``"512-256-256"`` -> ``[512, 256, 256]``; ValueError names the spec at fault."""
    parts = spec.split("-") if isinstance(spec, str) else []
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(
            f"projector spec must be positive ints joined by '-', input first (e.g. '512-256-256'), got {spec!r}"
        )
    return dims


def projector_spec(in_dim: int, out_dim: int, hidden: int | None = None, layers: int = 2) -> str:
    """The spec of a ``layers``-layer projector; hidden width defaults to ``out_dim`` (the paper's choice)."""
    hidden = out_dim if hidden is None else hidden
    return "-".join(str(d) for d in [in_dim] + [hidden] * (layers - 1) + [out_dim])


class Projector(nn.Sequential):
    """MLP head. forward: (N, dims[0]) -> (N, dims[-1])."""

    def __init__(self, spec: str) -> None:
        dims = parse_projector_spec(spec)
        layers: list[nn.Module] = []
        for i in range(len(dims) - 2):
            layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
        super().__init__(*layers)
        self.spec = spec
        self.in_dim, self.out_dim = dims[0], dims[-1]

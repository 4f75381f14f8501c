"""Barlow Twins and VICReg for M >= 2 views (Agrawal et al., NeurIPS 2024; see docs/method.md).

Shapes: ``z`` is the projector output of every view, a tensor (M, N, d) or a sequence of M tensors
(N, d): M views, batch N, embedding dim d. ``beta`` is the orthogonality (decorrelation) weight.

Forms
-----
Barlow Twins:
- ``"classic"``: the two-view loss (M must be 2).
- ``"mean"``: the paper's O(M) form, invariance of each view to the per-image mean over views and
  decorrelation of that mean; one d x d matmul per step whatever M is.
- ``"all_pairs"``: the classic loss averaged over all M(M-1)/2 pairs (the O(M^2) baseline).
- ``"auto"``: classic at M = 2, mean at M > 2 (what the authors' code does).
VICReg:
- ``"classic"``: the two-view loss (M must be 2).
- ``"leave_one_out"``: for each view, the two-view loss against the mean of the other M-1 views,
  averaged over views; equals classic at M = 2.
- ``"all_pairs"``: the classic loss averaged over all pairs (the O(M^2) baseline).
- ``"auto"``: classic at M = 2 (same value as leave_one_out, half the work), leave_one_out at M > 2.

All statistics are computed in float32 with autocast disabled (float64 inputs stay float64, for
gradcheck). With ``distributed=True`` and an initialised process group of world size > 1, the views
are gathered across ranks along the batch dim (autograd-aware) before any batch statistic, so each
rank computes the loss of the global batch. The gather's backward sums the gradients of all ranks,
hence the local input gradient is world_size times the gradient of the global loss; DDP's averaging
of parameter gradients divides that factor out again, so parameter gradients equal the
single-process gradients on the global batch.

The loss functions never read a tensor's value on the host (no ``.item()``, ``bool()``, ``.tolist()``), so
on CUDA the loss never blocks the CPU: non-finite inputs give a non-finite loss (checked once per
step by the training loop, see :mod:`mvssl_hub.train.step_guard`), and the distributed batch-size check
(:func:`check_same_batch_size`) runs once per (world size, N), not per step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal, overload

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .distributed import CHECKED_BATCH_SIZES, check_same_batch_size, world_size
from .vocabulary import BT_FORMS, METHODS, VICREG_FORMS

__all__ = ["BarlowTwinsLoss", "VICRegLoss", "barlow_twins_loss", "build_loss", "recommended_beta", "vicreg_loss"]

ViewsLike = Tensor | Sequence[Tensor]


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------

def _as_views(z: ViewsLike, name: str) -> Tensor:
    """Validate ``z`` and return it as one (M, N, d) tensor (not yet cast)."""
    if isinstance(z, Tensor):
        if z.ndim != 3:
            raise ValueError(
                f"{name}: expected z of shape (M views, N batch, d dim), got shape {tuple(z.shape)}"
            )
        views = z
    elif isinstance(z, Sequence) and not isinstance(z, (str, bytes)):
        items = list(z)
        for i, t in enumerate(items):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: view {i} is a {type(t).__name__}, expected a Tensor (N, d)")
            if t.ndim != 2:
                raise ValueError(f"{name}: view {i} must have shape (N, d), got shape {tuple(t.shape)}")
        if len(items) < 2:
            raise ValueError(f"{name}: need M >= 2 views, got a sequence of {len(items)} view(s)")
        shapes = [tuple(t.shape) for t in items]
        if len(set(shapes)) != 1:
            listing = ", ".join(f"view {i}: {s}" for i, s in enumerate(shapes))
            raise ValueError(f"{name}: all views must have the same shape (N, d), got {listing}")
        dtype = items[0].dtype
        for t in items[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        views = torch.stack([t.to(dtype) for t in items])
    else:
        raise TypeError(f"{name}: z must be a Tensor (M, N, d) or a sequence of (N, d) tensors, "
                        f"got {type(z).__name__}")
    m, n, d = views.shape
    if m < 2:
        raise ValueError(f"{name}: need M >= 2 views, got z of shape {tuple(views.shape)}")
    if n < 1 or d < 1:
        raise ValueError(f"{name}: need N >= 1 and d >= 1, got z of shape {tuple(views.shape)}")
    if not views.is_floating_point():
        raise TypeError(f"{name}: z must be a floating-point tensor, got dtype {views.dtype}")
    # Values are not checked here: that would read the device (a host sync on CUDA) on every call.
    # Non-finite inputs give a non-finite loss; training loops test it once per step
    # (mvssl_hub.train.step_guard.finite_flag) and mvssl_hub.train.step_guard.nonfinite_views names the views.
    return views


def _check_beta(beta: float, name: str) -> None:
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{name}: beta must be a finite number >= 0, got {beta!r}")


def _check_form(form: str, valid: tuple[str, ...], name: str) -> None:
    if form not in valid:
        raise ValueError(f"{name}: unknown form {form!r}; valid forms are {', '.join(valid)}")


def _gather_batch(z: Tensor, name: str) -> Tensor:
    """All-gather (M, N, d) along the batch dim across ranks, keeping autograd (no-op at world 1)."""
    world = world_size()
    if world == 1:
        return z
    from torch.distributed.nn.functional import all_gather

    # The autograd all_gather needs equal shapes: a batch size not yet seen is checked across ranks
    # first (one host sync, once per run in a training loop), so a mismatch is an error, not a hang.
    if (world, z.shape[1]) not in CHECKED_BATCH_SIZES:
        check_same_batch_size(z.shape[1], z.device, name)
    return torch.cat([_ContiguousGrad.apply(t) for t in all_gather(z.contiguous())], dim=1)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    The gloo backward of torch.distributed.nn.functional.all_gather receives into
    ``empty_like(grad)`` buffers; with a dense but permuted gradient layout (e.g. from einsum's
    backward) the received values land in the wrong order (seen with torch 2.14 + gloo).
    """

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()


def _device_type(z: ViewsLike) -> str:
    if isinstance(z, Tensor):
        return z.device.type
    first = next(iter(z), None) if isinstance(z, Sequence) else None
    return first.device.type if isinstance(first, Tensor) else "cpu"


@contextlib.contextmanager
def _no_autocast(device_type: str) -> Iterator[None]:
    """Disable autocast so every statistic is computed in the dtype we cast to."""
    if torch.amp.is_autocast_available(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def _prepare(z: ViewsLike, distributed: bool, name: str) -> Tensor:
    """Validated (M, N_global, d) views in float32 (float64 kept), gathered if asked."""
    views = _as_views(z, name)
    views = views.to(torch.float64 if views.dtype == torch.float64 else torch.float32)
    if distributed:
        views = _gather_batch(views, name)
    if views.shape[1] < 2:
        raise ValueError(f"{name}: batch statistics need N > 1 samples per view, got z of shape "
                         f"{tuple(views.shape)}")
    return views


def _offdiag_sq_sum(c: Tensor) -> Tensor:
    """Sum of squared off-diagonal entries of (..., d, d) matrices -> (...).

    The diagonal is masked out rather than subtracted: sum(c^2) - sum(diag^2) cancels
    catastrophically in float32 when the diagonal is ~1 and the off-diagonals are small.
    """
    eye = torch.eye(c.shape[-1], dtype=torch.bool, device=c.device)
    return c.masked_fill(eye, 0.0).pow(2).sum(dim=(-2, -1))


def _pairs(m: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(m) for b in range(a + 1, m)]


# --------------------------------------------------------------------------------------------
# Barlow Twins
# --------------------------------------------------------------------------------------------

def _standardise(z: Tensor, eps: float) -> Tensor:
    """Per view, per feature: (z - batch mean) / sqrt(biased batch var + eps). (M, N, d) -> same."""
    centred = z - z.mean(dim=1, keepdim=True)
    var = centred.pow(2).mean(dim=1, keepdim=True)  # two plain passes: var_mean over the middle dim is ~3x slower on CPU
    return centred * torch.rsqrt(var + eps)


def _bt_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Classic Barlow Twins terms of two standardised (N, d) views: (sum_k (1-C_kk)^2, sum_offdiag C^2)."""
    c = a.T @ b / a.shape[0]
    inv = (1.0 - torch.diagonal(c)).pow(2).sum()
    return inv, _offdiag_sq_sum(c)


def _bt_mean(zs: Tensor) -> tuple[Tensor, Tensor]:
    """Mean-form terms of standardised (M, N, d) views; one d x d matmul."""
    m, n, _ = zs.shape
    zbar = zs.mean(dim=0)                                   # (N, d)
    c = (zs * zbar).sum(dim=1) / n                          # (M, d): c_vk, no d x d matrix (einsum lowers to d tiny bmm copies)
    inv = (1.0 - c).pow(2).sum() / m
    a = zbar.T @ zbar / n                                   # (d, d)
    return inv, _offdiag_sq_sum(a)


@overload
def barlow_twins_loss(z: ViewsLike, beta: float = ..., *, form: str = ..., distributed: bool = ...,
                      eps: float = ..., return_terms: Literal[False] = ...) -> Tensor: ...
@overload
def barlow_twins_loss(z: ViewsLike, beta: float = ..., *, form: str = ..., distributed: bool = ...,
                      eps: float = ..., return_terms: Literal[True]) -> tuple[Tensor, dict[str, Tensor]]: ...


def barlow_twins_loss(
    z: ViewsLike,
    beta: float = 0.0051,
    *,
    form: str = "auto",
    distributed: bool = False,
    eps: float = 1e-5,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Barlow Twins loss of M >= 2 views.

    Args:
        z: (M, N, d) tensor or sequence of M (N, d) tensors.
        beta: orthogonality weight (>= 0) on the squared off-diagonal correlations.
        form: "auto" | "classic" | "mean" | "all_pairs" (module docstring).
        distributed: gather the batch across ranks first (no-op without a process group).
        eps: added to the biased batch variance in the standardisation.
        return_terms: also return detached {"invariance", "orthogonality"};
            loss = invariance + beta * orthogonality.
    Returns:
        Scalar loss, float32 (float64 for float64 inputs).
    """
    name = "barlow_twins_loss"
    _check_beta(beta, name)
    _check_form(form, BT_FORMS, name)
    with _no_autocast(_device_type(z)):
        views = _prepare(z, distributed, name)
        m = views.shape[0]
        if form == "classic" and m != 2:
            raise ValueError(f"{name}: form='classic' needs M == 2 views, got z of shape {tuple(views.shape)}; "
                             f"use form='mean' or 'all_pairs'")
        zs = _standardise(views, eps)
        chosen = ("classic" if m == 2 else "mean") if form == "auto" else form
        if chosen == "classic":
            inv, orth = _bt_pair(zs[0], zs[1])
        elif chosen == "mean":
            inv, orth = _bt_mean(zs)
        else:
            terms = [_bt_pair(zs[a], zs[b]) for a, b in _pairs(m)]
            inv = torch.stack([t[0] for t in terms]).mean()
            orth = torch.stack([t[1] for t in terms]).mean()
        loss = inv + beta * orth
    if return_terms:
        return loss, {"invariance": inv.detach(), "orthogonality": orth.detach()}
    return loss


# --------------------------------------------------------------------------------------------
# VICReg
# --------------------------------------------------------------------------------------------

def _vic_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per tensor of (K, N, d): variance hinge mean_k relu(1 - std_k) and off-diag cov^2 sum / d -> (K,), (K,)."""
    _, n, d = x.shape
    xc = x - x.mean(dim=1, keepdim=True)
    cov = torch.bmm(xc.transpose(1, 2), xc) / (n - 1)                       # (K, d, d), unbiased
    var = torch.diagonal(cov, dim1=-2, dim2=-1)                             # (K, d)
    hinge = torch.relu(1.0 - torch.sqrt(var + eps)).mean(dim=-1)            # (K,)
    return hinge, _offdiag_sq_sum(cov) / d


def _vic_classic(a: Tensor, b: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Two-view VICReg terms of (N, d) views: (mse, 0.5*(hinge_a+hinge_b), cov_a+cov_b)."""
    inv = F.mse_loss(a, b)
    hinge, cov = _vic_stats(torch.stack([a, b]), eps)
    return inv, 0.5 * hinge.sum(), cov.sum()


def _vic_leave_one_out(z: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Leave-one-out terms of (M, N, d) views, averaged over views; O(M) work."""
    m = z.shape[0]
    others = (z.sum(dim=0, keepdim=True) - z) / (m - 1)                    # (M, N, d): mean of the others
    inv = F.mse_loss(z, others)
    hinge_z, cov_z = _vic_stats(z, eps)                                     # (M,) each
    hinge_o, cov_o = _vic_stats(others, eps)
    var_term = 0.5 * (hinge_z + hinge_o).mean()
    cov_term = (cov_z + cov_o).mean()
    return inv, var_term, cov_term


def _vicreg_weights(beta: float, inv_weight: float | None, var_weight: float | None,
                    cov_weight: float, name: str) -> tuple[float, float, float]:
    for key, val in (("inv_weight", inv_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        if val is not None and (not math.isfinite(val) or val < 0):
            raise ValueError(f"{name}: {key} must be a finite number >= 0, got {val!r}")
    if inv_weight is None:
        if var_weight is not None:
            inv_weight = var_weight
        else:
            if beta <= 0:
                raise ValueError(f"{name}: beta must be > 0 to derive inv_weight = var_weight = 1/beta, "
                                 f"got beta={beta!r}; pass inv_weight/var_weight explicitly")
            inv_weight = 1.0 / beta
    if var_weight is None:
        var_weight = inv_weight
    return float(inv_weight), float(var_weight), float(cov_weight)


@overload
def vicreg_loss(z: ViewsLike, beta: float = ..., *, form: str = ..., distributed: bool = ...,
                inv_weight: float | None = ..., var_weight: float | None = ..., cov_weight: float = ...,
                eps: float = ..., return_terms: Literal[False] = ...) -> Tensor: ...
@overload
def vicreg_loss(z: ViewsLike, beta: float = ..., *, form: str = ..., distributed: bool = ...,
                inv_weight: float | None = ..., var_weight: float | None = ..., cov_weight: float = ...,
                eps: float = ..., return_terms: Literal[True]) -> tuple[Tensor, dict[str, Tensor]]: ...


def vicreg_loss(
    z: ViewsLike,
    beta: float = 0.04,
    *,
    form: str = "auto",
    distributed: bool = False,
    inv_weight: float | None = None,
    var_weight: float | None = None,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """VICReg loss of M >= 2 views: inv_weight*inv + var_weight*var + cov_weight*cov.

    Parametrisation (docs/method.md): beta = nu / lambda with lambda = mu, so by default
    inv_weight = var_weight = 1/beta and cov_weight = 1 (beta = 0.04 gives the classic 25/25/1).
    Explicit weights override: if inv_weight is given, beta is not used for the weights and
    var_weight defaults to inv_weight (and vice versa).

    Args:
        z: (M, N, d) tensor or sequence of M (N, d) tensors.
        beta: orthogonality strength nu/lambda (> 0 unless inv_weight/var_weight are given).
        form: "auto" | "classic" | "leave_one_out" | "all_pairs" (module docstring).
        distributed: gather the batch across ranks first (no-op without a process group).
        eps: added to the unbiased variance under the square root of the variance hinge.
        return_terms: also return detached unweighted {"invariance", "variance", "covariance"}.
    Returns:
        Scalar loss, float32 (float64 for float64 inputs).
    """
    name = "vicreg_loss"
    _check_beta(beta, name)
    _check_form(form, VICREG_FORMS, name)
    w_inv, w_var, w_cov = _vicreg_weights(beta, inv_weight, var_weight, cov_weight, name)
    with _no_autocast(_device_type(z)):
        views = _prepare(z, distributed, name)
        m = views.shape[0]
        if form == "classic" and m != 2:
            raise ValueError(f"{name}: form='classic' needs M == 2 views, got z of shape {tuple(views.shape)}; "
                             f"use form='leave_one_out' or 'all_pairs'")
        chosen = ("classic" if m == 2 else "leave_one_out") if form == "auto" else form
        if chosen == "classic":
            inv, var, cov = _vic_classic(views[0], views[1], eps)
        elif chosen == "leave_one_out":
            inv, var, cov = _vic_leave_one_out(views, eps)
        else:
            terms = [_vic_classic(views[a], views[b], eps) for a, b in _pairs(m)]
            inv, var, cov = (torch.stack([t[i] for t in terms]).mean() for i in range(3))
        loss = w_inv * inv + w_var * var + w_cov * cov
    if return_terms:
        return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
    return loss


# --------------------------------------------------------------------------------------------
# Modules and helpers
# --------------------------------------------------------------------------------------------

class BarlowTwinsLoss(nn.Module):
    """nn.Module over :func:`barlow_twins_loss`; forward(z (M, N, d)) -> scalar."""

    def __init__(self, beta: float = 0.0051, form: str = "auto", distributed: bool = False,
                 eps: float = 1e-5) -> None:
        super().__init__()
        _check_beta(beta, "BarlowTwinsLoss")
        _check_form(form, BT_FORMS, "BarlowTwinsLoss")
        self.beta, self.form, self.distributed, self.eps = float(beta), form, distributed, eps

    def forward(self, z: ViewsLike) -> Tensor:
        return barlow_twins_loss(z, self.beta, form=self.form, distributed=self.distributed, eps=self.eps)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, form={self.form!r}, distributed={self.distributed}"


class VICRegLoss(nn.Module):
    """nn.Module over :func:`vicreg_loss`; forward(z (M, N, d)) -> scalar. Weights as in vicreg_loss."""

    def __init__(self, beta: float = 0.04, form: str = "auto", distributed: bool = False, *,
                 inv_weight: float | None = None, var_weight: float | None = None,
                 cov_weight: float = 1.0, eps: float = 1e-4) -> None:
        super().__init__()
        _check_beta(beta, "VICRegLoss")
        _check_form(form, VICREG_FORMS, "VICRegLoss")
        self.inv_weight, self.var_weight, self.cov_weight = _vicreg_weights(
            beta, inv_weight, var_weight, cov_weight, "VICRegLoss")
        self.beta, self.form, self.distributed, self.eps = float(beta), form, distributed, eps

    def forward(self, z: ViewsLike) -> Tensor:
        return vicreg_loss(z, self.beta, form=self.form, distributed=self.distributed,
                           inv_weight=self.inv_weight, var_weight=self.var_weight,
                           cov_weight=self.cov_weight, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"beta={self.beta}, form={self.form!r}, distributed={self.distributed}, weights="
                f"({self.inv_weight:g}, {self.var_weight:g}, {self.cov_weight:g})")


def _check_method(method: str, name: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{name}: unknown method {method!r}; known methods are {', '.join(METHODS)}")


def build_loss(method: str, beta: float, form: str = "auto", distributed: bool = False) -> nn.Module:
    """Loss module for ``method`` in {"barlowtwins", "vicreg"}."""
    _check_method(method, "build_loss")
    if method == "barlowtwins":
        return BarlowTwinsLoss(beta, form, distributed)
    return VICRegLoss(beta, form, distributed)


# Tuned VICReg lambda (= mu, nu = 1) per projector width, CIFAR-10 ResNet-50 (docs/method.md, from the
# authors' run scripts in kumarkrishna/fastssl).
_VICREG_LAMBDA: tuple[tuple[int, float], ...] = (
    (64, 20.0), (256, 25.0), (1024, 25.0), (2048, 75.0), (4096, 200.0), (8192, 800.0))
_BT_BETA_TIMES_D = 5.12
_BT_BETA_MAX = 0.04  # docs/method.md: tuned beta is 0.04 at both d = 64 and d = 128


def recommended_beta(method: str, proj_dim: int, num_views: int = 2) -> float:
    """A starting value of beta for a projector of output width ``proj_dim`` (then tune it).

    Source: docs/method.md, tables read from the run scripts of Agrawal et al. (NeurIPS 2024).
    - Barlow Twins: beta = min(5.12 / d, 0.04), which reproduces the tuned 0.04 / 0.04 / 0.02 / 0.01 at
      d = 64 / 128 / 256 / 512 (the cap keeps d <= 128 at the tuned 0.04; the authors' tuned values at
      d >= 1024 are lower than this rule). For num_views >= 4 the value is then halved: the authors
      retuned 0.02 -> 0.01 at d = 256 for 4 and 8 views.
    - VICReg: beta = 1 / lambda, lambda interpolated linearly in log2(d) between the tuned table
      (d: lambda = 64: 20, 256: 25, 1024: 25, 2048: 75, 4096: 200, 8192: 800), clamped at its ends;
      num_views does not change it (no multi-view VICReg tuning is reported).
    """
    _check_method(method, "recommended_beta")
    if isinstance(proj_dim, bool) or not isinstance(proj_dim, int) or proj_dim < 1:
        raise ValueError(f"recommended_beta: proj_dim must be an int >= 1, got {proj_dim!r}")
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"recommended_beta: num_views must be an int >= 2, got {num_views!r}")
    if method == "barlowtwins":
        beta = min(_BT_BETA_TIMES_D / proj_dim, _BT_BETA_MAX)
        return beta / 2 if num_views >= 4 else beta
    dims = [d for d, _ in _VICREG_LAMBDA]
    lams = [lam for _, lam in _VICREG_LAMBDA]
    if proj_dim <= dims[0]:
        lam = lams[0]
    elif proj_dim >= dims[-1]:
        lam = lams[-1]
    else:
        i = next(j for j in range(1, len(dims)) if proj_dim <= dims[j])
        t = (math.log2(proj_dim) - math.log2(dims[i - 1])) / (math.log2(dims[i]) - math.log2(dims[i - 1]))
        lam = lams[i - 1] + t * (lams[i] - lams[i - 1])
    return 1.0 / lam

"""Label-free representation monitors: RankMe, alpha-ReQ and LiDAR, on a fixed held-out sample.

Each measure takes embeddings (float tensors of any float dtype, any device), copies them to the CPU in
float64 and returns a small frozen dataclass whose ``to_record()`` is a JSON-ready dict holding the value,
the definition used (name, centring, fit range, constants) and the sample size, so that two numbers are
only compared when they were measured the same way.

Measures (N images, D dims, M views):

- :func:`rankme` (Garrido et al., ICML 2023), embeddings Z (N, D):
  ``RankMe(Z) = exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum_j s_j + eps`` over the min(N, D) singular
  values s_k of Z. Not centred by default (the paper does not centre); ``center=True`` subtracts the
  column means first. Range [~1, min(N, D)]; higher = less collapsed.
- :func:`alpha_req` (Agrawal et al., NeurIPS 2022), embeddings Z (N, D): the eigenvalues
  lambda_1 >= lambda_2 >= ... of the (centred, 1/(N-1)) covariance of Z follow ``lambda_k ~ k^-alpha``;
  alpha is minus the least-squares slope of log(lambda_k) on log(k) over k in [k_min, k_max], with the
  fit's R^2. Smaller alpha = flatter spectrum (alpha -> 0 isotropic, large alpha = collapse).
- :func:`lidar` (Thilak et al., ICLR 2024), views (M, N, D): every image is its own class and its M
  augmented views are the class's samples. ``Sb`` = covariance of the per-image means, ``Sw`` = pooled
  covariance of the views around their image mean + delta * I; LiDAR is the RankMe-style effective rank
  of the eigenvalues of ``Sw^{-1/2} Sb Sw^{-1/2}``. Higher = more directions that tell images apart
  beyond the augmentation noise.

:func:`monitor_embeddings` computes all three on backbone features and projector outputs;
:func:`embed_sample` / :func:`monitor_model` produce those embeddings from an SSL model, a fixed uint8
image sample, a :class:`~mvssl_hub.views.MultiViewAugment` and a seed, in inference mode and in batches.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ..device import bf16_is_fast
from ..views import EvalTransform, MultiViewAugment, ViewParams
from .probes import _is_channels_last, _module_device

__all__ = [
    "LIDAR_DELTA",
    "LIDAR_EPS",
    "RANKME_EPS",
    "AlphaReQResult",
    "LiDARResult",
    "MonitorReport",
    "RankMeResult",
    "SampleEmbeddings",
    "alpha_req",
    "default_fit_range",
    "embed_sample",
    "lidar",
    "monitor_embeddings",
    "monitor_model",
    "rankme",
]

# Garrido et al.'s reference implementation adds eps = 1e-7 to every p_k.
RANKME_EPS = 1e-7
# LiDAR's regulariser of the within-class covariance and the entropy's eps, the values given for Thilak et
# al.'s paper in this project's issue (not re-read from the paper here; public re-implementations differ,
# e.g. 1e-5 or 1e-6). Both are recorded with every result, so a change of constants stays visible.
LIDAR_DELTA = 1e-4
LIDAR_EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# Input checks


def _as_float64(x: Any, name: str, where: str, ndim: int, layout: str) -> torch.Tensor:
    """Validate a float tensor of ``ndim`` dims (``layout`` names them) -> float64 CPU copy."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{where}: {name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must be a float tensor {layout}, got {x.dtype} of shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{where}: {name} is empty, shape {tuple(x.shape)} {layout}")
    out = x.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{where}: {name} of shape {tuple(x.shape)} contains NaN or Inf")
    return out


def _check_eps(value: float, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")


def _entropy_rank(values: torch.Tensor, eps: float) -> float:
    """exp(-sum p log p), p = v / sum(v) + eps, for non-negative float64 ``values``; 0.0 when all are 0."""
    total = values.sum()
    if not bool(total > 0):
        return 0.0  # the zero matrix has rank 0 (a fully collapsed, centred embedding)
    p = values / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------------
# RankMe


@dataclass(frozen=True)
class RankMeResult:
    """RankMe of an (N, D) embedding matrix. ``value`` in [~1, min(N, D)] (0.0 for an all-zero matrix)."""

    value: float
    center: bool
    eps: float
    num_samples: int
    dim: int

    def to_record(self) -> dict[str, Any]:
        return {
            "name": "rankme", "value": _json_float(self.value),
            "definition": {
                "paper": "Garrido et al., ICML 2023",
                "formula": "exp(-sum_k p_k log p_k), p_k = s_k / sum(s) + eps, s = singular values of Z",
                "centered": self.center, "eps": self.eps,
            },
            "sample": {"N": self.num_samples, "D": self.dim},
        }


def rankme(z: torch.Tensor, *, center: bool = False, eps: float = RANKME_EPS) -> RankMeResult:
    """RankMe (Garrido et al., ICML 2023) of embeddings ``z`` (N, D), computed in float64.

    ``RankMe(Z) = exp(-sum_{k=1}^{min(N, D)} p_k log p_k)`` with ``p_k = s_k(Z) / sum_j s_j(Z) + eps``,
    s_k the singular values of Z. The paper uses Z as it is (``center=False``, the default); with
    ``center=True`` the column means are subtracted first (then the constant direction no longer counts).
    An all-zero Z gives 0.0.
    """
    where = "rankme"
    x = _as_float64(z, "z", where, 2, "(N, D)")
    _check_eps(eps, "eps", where)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    return RankMeResult(_entropy_rank(s, float(eps)), bool(center), float(eps), x.shape[0], x.shape[1])


# --------------------------------------------------------------------------------------------------
# alpha-ReQ


def default_fit_range(num_samples: int, dim: int) -> tuple[int, int]:
    """Default alpha-ReQ fit range ``(k_min, k_max)`` (1-based, inclusive): ``(1, max(2, r // 2))``.

    r = min(D, N - 1) is the most non-zero eigenvalues a centred covariance of N samples can have. The
    upper half of the sample spectrum is left out: finite-sample eigenvalues near index r are pushed down
    (the Marchenko-Pastur edge) and would bend the log-log line.
    """
    r = min(dim, num_samples - 1)
    return 1, max(2, r // 2)


@dataclass(frozen=True)
class AlphaReQResult:
    """Power-law exponent of the covariance eigenspectrum, lambda_k ~ k^-alpha, with the fit's R^2.

    ``k_min``/``k_max`` are the requested 1-based inclusive index range; ``num_fit_points`` how many of
    those eigenvalues were positive (above float64 round-off) and entered the fit. ``alpha``/``r2`` are NaN
    when fewer than 2 did (``to_record`` writes None).
    """

    alpha: float
    r2: float
    k_min: int
    k_max: int
    num_fit_points: int
    num_samples: int
    dim: int

    @property
    def value(self) -> float:
        return self.alpha

    def to_record(self) -> dict[str, Any]:
        return {
            "name": "alpha_req", "value": _json_float(self.alpha), "r2": _json_float(self.r2),
            "definition": {
                "paper": "Agrawal et al., NeurIPS 2022",
                "formula": "log lambda_k = c - alpha log k, least squares over k in [k_min, k_max]; "
                           "lambda = eigenvalues of the centred covariance (1/(N-1)), descending",
                "centered": True, "fit_range": [self.k_min, self.k_max], "num_fit_points": self.num_fit_points,
            },
            "sample": {"N": self.num_samples, "D": self.dim},
        }


def _covariance_eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """Descending eigenvalues of the centred covariance (1/(N-1)) of float64 x (N, D): min(N, D) values."""
    xc = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(xc)  # descending; s^2 / (N-1) are the covariance eigenvalues
    return s.square() / max(1, x.shape[0] - 1)


def alpha_req(z: torch.Tensor, *, k_min: int | None = None, k_max: int | None = None) -> AlphaReQResult:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022) of embeddings ``z`` (N, D), computed in float64.

    Eigenvalues lambda_1 >= ... of the centred sample covariance ``Zc^T Zc / (N - 1)`` (from the singular
    values of the centred Z) are fitted by ``log lambda_k = c - alpha log k`` with ordinary least squares
    over the 1-based indices ``k_min <= k <= k_max`` (defaults: :func:`default_fit_range`, i.e. 1 to
    min(D, N-1) // 2). Eigenvalues <= lambda_1 * D * 2.2e-16 (float64 round-off) are left out of the fit.
    R^2 = 1 - SS_res / SS_tot of that fit in log-log.
    """
    where = "alpha_req"
    x = _as_float64(z, "z", where, 2, "(N, D)")
    n, d = x.shape
    if n < 2:
        raise ValueError(f"{where}: need N >= 2 samples for a covariance, got z of shape {tuple(x.shape)}")
    lo, hi = default_fit_range(n, d)
    lo = lo if k_min is None else k_min
    hi = hi if k_max is None else k_max
    for name, v in (("k_min", lo), ("k_max", hi)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}: {name} must be an int >= 1, got {v!r}")
    if hi <= lo or hi > min(n, d):
        raise ValueError(
            f"{where}: need 1 <= k_min < k_max <= min(N, D) = {min(n, d)}, got k_min={lo}, k_max={hi} "
            f"for z of shape {tuple(x.shape)}"
        )
    lam = _covariance_eigenvalues(x)
    k = torch.arange(1, lam.shape[0] + 1, dtype=torch.float64)
    floor = float(lam[0]) * d * torch.finfo(torch.float64).eps
    keep = (k >= lo) & (k <= hi) & (lam > floor)
    count = int(keep.sum())
    if count < 2:
        nan = float("nan")
        return AlphaReQResult(nan, nan, lo, hi, count, n, d)
    lx, ly = torch.log(k[keep]), torch.log(lam[keep])
    lx_c, ly_c = lx - lx.mean(), ly - ly.mean()
    slope = float((lx_c * ly_c).sum() / lx_c.square().sum())
    resid = ly_c - slope * lx_c
    ss_tot = float(ly_c.square().sum())
    r2 = 1.0 - float(resid.square().sum()) / ss_tot if ss_tot > 0 else 1.0
    return AlphaReQResult(-slope, r2, lo, hi, count, n, d)


# --------------------------------------------------------------------------------------------------
# LiDAR


@dataclass(frozen=True)
class LiDARResult:
    """LiDAR of (M, N, D) view embeddings. ``value`` in [~1, min(N - 1, D)] (0.0 when all means coincide)."""

    value: float
    delta: float
    eps: float
    num_views: int
    num_samples: int
    dim: int

    def to_record(self) -> dict[str, Any]:
        return {
            "name": "lidar", "value": _json_float(self.value),
            "definition": {
                "paper": "Thilak et al., ICLR 2024",
                "formula": "exp(-sum p log p), p = lambda / sum(lambda) + eps, lambda = eigenvalues of "
                           "Sw^-1/2 Sb Sw^-1/2; classes = images, samples = their views",
                "Sb": "covariance of the per-image means, 1/(N-1)",
                "Sw": "views around their image mean, 1/(N(M-1)), + delta * I",
                "delta": self.delta, "eps": self.eps,
            },
            "sample": {"N": self.num_samples, "D": self.dim, "M": self.num_views},
        }


def lidar(views: torch.Tensor, *, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> LiDARResult:
    """LiDAR (Thilak et al., ICLR 2024) of embeddings of M views of N images, ``views`` (M, N, D), in float64.

    Each image is a class. With mu_n = mean over views of image n and mu = mean of the mu_n:
    ``Sb = sum_n (mu_n - mu)(mu_n - mu)^T / (N - 1)``,
    ``Sw = sum_{m,n} (z_mn - mu_n)(z_mn - mu_n)^T / (N (M - 1)) + delta * I``,
    ``LiDAR = exp(-sum_k p_k log p_k)``, ``p_k = lambda_k / sum_j lambda_j + eps``, lambda the eigenvalues
    of ``Sw^{-1/2} Sb Sw^{-1/2}`` (Sw^{-1/2} from the eigendecomposition of Sw; negative round-off
    eigenvalues clamped to 0). delta is absolute, so LiDAR depends on the embeddings' scale when their
    within-image variance is comparable to delta. Defaults: delta = 1e-4, eps = 1e-8.

    LiDAR is a rank, not a signal-to-noise ratio: views that are iid noise give Sb ~ Sw / M, a flat
    spectrum and a value near D; it is low when images differ along few directions relative to the view
    noise (e.g. all image means on one line).
    """
    where = "lidar"
    x = _as_float64(views, "views", where, 3, "(M views, N images, D)")
    _check_eps(delta, "delta", where)
    _check_eps(eps, "eps", where)
    m, n, d = x.shape
    if m < 2 or n < 2:
        raise ValueError(
            f"{where}: need M >= 2 views and N >= 2 images, got views of shape {tuple(x.shape)} (M, N, D)"
        )
    means = x.mean(dim=0)  # (N, D)
    between = means - means.mean(dim=0, keepdim=True)
    sb = between.T @ between / (n - 1)
    within = (x - means).reshape(m * n, d)
    sw = within.T @ within / (n * (m - 1)) + delta * torch.eye(d, dtype=torch.float64)
    w, q = torch.linalg.eigh(sw)
    if not bool(w.min() > 0):
        raise ValueError(
            f"{where}: the within-image covariance of views {tuple(x.shape)} is singular; use delta > 0 "
            f"(got delta={delta!r})"
        )
    inv_sqrt = (q * w.rsqrt()) @ q.T
    lam = torch.linalg.eigvalsh(inv_sqrt @ sb @ inv_sqrt).clamp_(min=0.0)
    return LiDARResult(_entropy_rank(lam, float(eps)), float(delta), float(eps), m, n, d)


# --------------------------------------------------------------------------------------------------
# All three, on backbone features and projector outputs


@dataclass(frozen=True)
class MonitorReport:
    """The three measures on backbone features and on projector outputs, plus how the sample was made.

    ``results[space][name]`` with space in ("backbone", "projector") and name in ("rankme", "alpha_req",
    "lidar"); ``protocol`` (JSON-able) says which images/views/seed produced the embeddings.
    """

    results: dict[str, dict[str, RankMeResult | AlphaReQResult | LiDARResult]]
    protocol: dict[str, Any]

    def values(self) -> dict[str, float]:
        """Flat ``{"backbone/rankme": value, ...}`` (alpha-ReQ also as ``.../alpha_req_r2``) for loggers."""
        out: dict[str, float] = {}
        for space, res in self.results.items():
            for name, r in res.items():
                out[f"{space}/{name}"] = r.value
                if isinstance(r, AlphaReQResult):
                    out[f"{space}/{name}_r2"] = r.r2
        return out

    def to_record(self) -> dict[str, Any]:
        return {
            "protocol": dict(self.protocol),
            **{space: {name: r.to_record() for name, r in res.items()} for space, res in self.results.items()},
        }


def _monitor_space(
    clean: torch.Tensor, views: torch.Tensor | None, *, center: bool, k_min: int | None, k_max: int | None,
    delta: float, eps: float,
) -> dict[str, RankMeResult | AlphaReQResult | LiDARResult]:
    out: dict[str, RankMeResult | AlphaReQResult | LiDARResult] = {
        "rankme": rankme(clean, center=center),
        "alpha_req": alpha_req(clean, k_min=k_min, k_max=k_max),
    }
    if views is not None:
        out["lidar"] = lidar(views, delta=delta, eps=eps)
    return out


def monitor_embeddings(
    features: torch.Tensor,
    projections: torch.Tensor,
    *,
    feature_views: torch.Tensor | None = None,
    projection_views: torch.Tensor | None = None,
    center: bool = False,
    k_min: int | None = None,
    k_max: int | None = None,
    delta: float = LIDAR_DELTA,
    eps: float = LIDAR_EPS,
    protocol: dict[str, Any] | None = None,
) -> MonitorReport:
    """RankMe and alpha-ReQ of ``features`` (N, D_b) and ``projections`` (N, d) (one view per image,
    e.g. the clean centre view), and LiDAR of ``feature_views`` (M, N, D_b) / ``projection_views`` (M, N, d)
    when given. alpha-ReQ's default fit range is :func:`default_fit_range` of each space's (N, D)."""
    where = "monitor_embeddings"
    pairs = (("features", features, "feature_views", feature_views),
             ("projections", projections, "projection_views", projection_views))
    for cname, clean, vname, views in pairs:
        if isinstance(clean, torch.Tensor) and isinstance(views, torch.Tensor) and clean.dim() == 2 \
                and views.dim() == 3 and views.shape[1:] != clean.shape:
            raise ValueError(
                f"{where}: {vname} has shape {tuple(views.shape)} but {cname} has shape {tuple(clean.shape)}; "
                "expected (M, N, D) views of the same N images and D dims"
            )
    if isinstance(features, torch.Tensor) and isinstance(projections, torch.Tensor) and features.dim() == 2 \
            and projections.dim() == 2 and features.shape[0] != projections.shape[0]:
        raise ValueError(
            f"{where}: features {tuple(features.shape)} and projections {tuple(projections.shape)} "
            "must hold the same N images"
        )
    results = {
        space: _monitor_space(clean, views, center=center, k_min=k_min, k_max=k_max, delta=delta, eps=eps)
        for space, clean, views in (("backbone", features, feature_views),
                                    ("projector", projections, projection_views))
    }
    return MonitorReport(results, dict(protocol or {}))


# --------------------------------------------------------------------------------------------------
# From a model and a fixed image sample


@dataclass(frozen=True)
class SampleEmbeddings:
    """Embeddings of a fixed sample, float32 on the CPU: clean ``features`` (N, D_b) and ``projections``
    (N, d), and the M augmented views ``feature_views`` (M, N, D_b) and ``projection_views`` (M, N, d)."""

    features: torch.Tensor
    projections: torch.Tensor
    feature_views: torch.Tensor
    projection_views: torch.Tensor
    protocol: dict[str, Any]


def _slice_params(prm: ViewParams, lo: int, hi: int) -> ViewParams:
    """The params of images [lo, hi) out of view-major params drawn for the whole sample."""
    m, n = prm.num_views, prm.batch_size
    sliced: dict[str, Any] = {}
    for f in fields(prm):
        value = getattr(prm, f.name)
        if isinstance(value, torch.Tensor):
            sliced[f.name] = value.view(m, n)[:, lo:hi].reshape(-1)
    return replace(prm, batch_size=hi - lo, **sliced)


def embed_sample(
    model: nn.Module,
    images: torch.Tensor,
    augment: MultiViewAugment,
    *,
    num_views: int = 4,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bf16: bool | None = None,
    channels_last: bool = True,
) -> SampleEmbeddings:
    """Backbone features and projector outputs of uint8 ``images`` (N, 3, H, W) under ``model`` (an SSLModel:
    ``.backbone`` (B, 3, s, s) -> (B, D_b), ``.projector`` (B, D_b) -> (B, d)).

    Clean view: ``EvalTransform(augment.preset)``; augmented views: ``augment`` with every random parameter
    drawn up front for the whole sample from ``torch.Generator().manual_seed(seed)``, so the views depend
    on the seed and N only, not on ``batch_size`` (which counts network inputs per step: each step takes
    ``max(1, batch_size // (num_views + 1))`` images). Runs in ``torch.inference_mode`` with the model in
    eval mode (BatchNorm running statistics; the training flag, device and memory format are restored),
    bf16 autocast where :func:`~mvssl_hub.device.bf16_is_fast` (or as ``bf16`` says) and channels_last inputs.
    """
    n = _check_sample(model, images, augment, num_views, batch_size)
    orig_device = _module_device(model)
    dev = torch.device(device) if device is not None else orig_device
    use_bf16 = bf16_is_fast(dev) if bf16 is None else bool(bf16)
    was_training, was_cl = model.training, _is_channels_last(model)
    eval_tf = EvalTransform(augment.preset)
    gen = torch.Generator().manual_seed(seed)
    params = augment.sample_params(n, num_views, images.shape[2], images.shape[3], gen)
    step = max(1, batch_size // (num_views + 1))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    feats, projs = [], []
    model.eval()
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                batch = images[lo:hi].to(dev)
                clean = eval_tf(batch).unsqueeze(0)
                views = augment.apply(batch, _slice_params(params, lo, hi))
                f, p = _embed_views(model, clean, views, ctx, fmt)
                feats.append(f)
                projs.append(p)
    finally:
        model.train(was_training)
        model.to(orig_device)
        if channels_last and was_cl is False:
            model.to(memory_format=torch.contiguous_format)
    f_all, p_all = torch.cat(feats, dim=1), torch.cat(projs, dim=1)
    protocol = {
        "num_images": n, "num_views": num_views, "seed": seed, "image_size": list(images.shape[2:]),
        "clean_view": "EvalTransform(preset): RankMe and alpha-ReQ",
        "augmented_views": f"MultiViewAugment(crop {augment.preset.crop_size}): LiDAR",
        "model_mode": "eval (BatchNorm running statistics)", "bf16_autocast": use_bf16,
    }
    return SampleEmbeddings(f_all[0], p_all[0], f_all[1:], p_all[1:], protocol)


def _check_sample(model: nn.Module, images: Any, augment: Any, num_views: Any, batch_size: Any) -> int:
    """The number of images N, once :func:`embed_sample`'s arguments are checked (TypeError / ValueError naming
    the one at fault)."""
    where = "embed_sample"
    for part in ("backbone", "projector"):
        if not isinstance(getattr(model, part, None), nn.Module):
            raise TypeError(f"{where}: model must have a .{part} module (an SSLModel), got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}: images must be a uint8 tensor (N, 3, H, W), got {shape}")
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"{where}: need N >= 2 images, got images of shape {tuple(images.shape)}")
    if not isinstance(augment, MultiViewAugment):
        raise TypeError(f"{where}: augment must be a MultiViewAugment, got {type(augment).__name__}")
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"{where}: num_views must be an int >= 2 (LiDAR needs views), got {num_views!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    return n


def _embed_views(model: nn.Module, clean: torch.Tensor, views: torch.Tensor, ctx: Any,
                 fmt: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features and projector outputs, float32 on the CPU, (M + 1, b, D) each, of one batch's clean view
    (1, b, 3, S, S) and its M augmented views (M, b, 3, s, s): one forward pass, or two when the sizes differ."""
    if views.shape[2:] != clean.shape[2:]:  # e.g. STL-10: 96 px eval, 64 px crops
        inputs = [clean.flatten(0, 1), views.flatten(0, 1)]
    else:
        inputs = [torch.cat((clean, views.to(clean.dtype))).flatten(0, 1)]
    f_parts, p_parts = [], []
    for x in inputs:
        with ctx():
            f = model.backbone(x.contiguous(memory_format=fmt))
            p = model.projector(f)
        f_parts.append(f.float().cpu())
        p_parts.append(p.float().cpu())
    m1, b = views.shape[0] + 1, clean.shape[1]
    return torch.cat(f_parts).view(m1, b, -1), torch.cat(p_parts).view(m1, b, -1)


def monitor_model(
    model: nn.Module,
    images: torch.Tensor,
    augment: MultiViewAugment,
    *,
    num_views: int = 4,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bf16: bool | None = None,
    channels_last: bool = True,
    center: bool = False,
    k_min: int | None = None,
    k_max: int | None = None,
    delta: float = LIDAR_DELTA,
    eps: float = LIDAR_EPS,
) -> MonitorReport:
    """:func:`embed_sample` then :func:`monitor_embeddings`: RankMe and alpha-ReQ of the clean view, LiDAR
    of the ``num_views`` augmented views, on backbone features and projector outputs of uint8 ``images``
    (N, 3, H, W). Keep ``images``, ``num_views`` and ``seed`` fixed across a run to compare checkpoints."""
    emb = embed_sample(model, images, augment, num_views=num_views, seed=seed, batch_size=batch_size,
                       device=device, bf16=bf16, channels_last=channels_last)
    return monitor_embeddings(
        emb.features, emb.projections, feature_views=emb.feature_views, projection_views=emb.projection_views,
        center=center, k_min=k_min, k_max=k_max, delta=delta, eps=eps, protocol=emb.protocol,
    )

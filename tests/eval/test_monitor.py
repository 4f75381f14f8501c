"""Monitors against independent float64 numpy references on embeddings with a known spectrum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mvssl_hub import build_ssl_model, get_view_preset
from mvssl_hub.eval.monitor import (
    LIDAR_DELTA,
    LIDAR_EPS,
    RANKME_EPS,
    alpha_req,
    default_fit_range,
    embed_sample,
    lidar,
    monitor_embeddings,
    monitor_model,
    rankme,
)
from mvssl_hub.views import MultiViewAugment

# --------------------------------------------------------------------------------------------------
# Independent references (numpy, through eigvalsh of Gram / covariance matrices instead of an SVD)


def ref_rankme(z: np.ndarray, center: bool = False, eps: float = RANKME_EPS) -> float:
    z = np.asarray(z, dtype=np.float64)
    if center:
        z = z - z.mean(axis=0)
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    s = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def ref_alpha(z: np.ndarray, k_min: int, k_max: int) -> tuple[float, float]:
    lam = np.sort(np.linalg.eigvalsh(np.cov(np.asarray(z, dtype=np.float64), rowvar=False)))[::-1]
    k = np.arange(1, lam.size + 1)
    sel = (k >= k_min) & (k <= k_max)
    x, y = np.log(k[sel]), np.log(lam[sel])
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return float(-slope), float(r2)


def ref_lidar(views: np.ndarray, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> float:
    v = np.asarray(views, dtype=np.float64)
    m, n, d = v.shape
    means = v.mean(axis=0)
    sb = np.cov(means, rowvar=False, ddof=1)
    sw = np.zeros((d, d))
    for i in range(n):  # loop over classes, as the textbook writes it
        dev = v[:, i, :] - means[i]
        sw += dev.T @ dev
    sw = sw / (n * (m - 1)) + delta * np.eye(d)
    # Generalised eigenproblem Sb x = lambda Sw x through the Cholesky factor of Sw (not Sw^-1/2).
    chol = np.linalg.cholesky(sw)
    a = np.linalg.solve(chol, np.linalg.solve(chol, sb).T)
    lam = np.clip(np.linalg.eigvalsh((a + a.T) / 2), 0.0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def orthonormal(rows: int, cols: int, seed: int, centred: bool = False) -> np.ndarray:
    """(rows, cols) with orthonormal columns; with ``centred`` also orthogonal to the all-ones vector."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, cols + 1))
    if centred:
        a[:, 0] = 1.0
        q, _ = np.linalg.qr(a)
        return q[:, 1:]
    q, _ = np.linalg.qr(a[:, :cols])
    return q


def power_law_embeddings(n: int, d: int, alpha: float, seed: int = 0) -> np.ndarray:
    """Z (n, d) whose centred covariance has eigenvalues exactly k^-alpha, k = 1..d."""
    u = orthonormal(n, d, seed, centred=True)
    v = orthonormal(d, d, seed + 1)
    lam = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    return (u * np.sqrt((n - 1) * lam)) @ v.T


def t(x: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


# --------------------------------------------------------------------------------------------------
# RankMe


def test_rankme_collapsed_is_about_one() -> None:
    rng = np.random.default_rng(0)
    z = np.outer(rng.standard_normal(512), rng.standard_normal(64)) + 1e-6 * rng.standard_normal((512, 64))
    r = rankme(t(z))
    assert 1.0 <= r.value < 1.05
    # the Gram route squares the tiny singular values (~1e-6 of the top one): round-off ~1e-8 relative
    assert r.value == pytest.approx(ref_rankme(z), rel=1e-7)


def test_rankme_isotropic_is_about_d() -> None:
    z = orthonormal(300, 48, seed=1) * 3.0  # all 48 singular values equal
    r = rankme(t(z))
    assert r.value == pytest.approx(48.0, rel=1e-4)  # eps shifts it by ~1e-5
    assert r.value == pytest.approx(ref_rankme(z), rel=1e-9)
    gauss = np.random.default_rng(2).standard_normal((8192, 32))
    assert 0.97 * 32 < rankme(t(gauss, torch.float32)).value <= 32.0


def test_rankme_center_flag_and_record() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2000, 16)) + 20.0  # a large common offset dominates the uncentred spectrum
    plain, centred = rankme(t(z)), rankme(t(z), center=True)
    assert plain.value < 4.0
    assert centred.value > 15.0
    assert plain.value == pytest.approx(ref_rankme(z), rel=1e-9)
    assert centred.value == pytest.approx(ref_rankme(z, center=True), rel=1e-9)
    rec = centred.to_record()
    assert rec["definition"]["centered"] is True and plain.to_record()["definition"]["centered"] is False
    assert rec["sample"] == {"N": 2000, "D": 16} and rec["definition"]["eps"] == RANKME_EPS
    json.dumps(rec, allow_nan=False)


def test_rankme_wide_matrix_and_zero_matrix() -> None:
    z = np.random.default_rng(4).standard_normal((20, 100))  # N < D: min(N, D) = 20 singular values
    assert rankme(t(z)).value == pytest.approx(ref_rankme(z), rel=1e-9)
    assert rankme(t(z)).value <= 20.0
    assert rankme(torch.ones(10, 5), center=True).value == 0.0


# --------------------------------------------------------------------------------------------------
# alpha-ReQ


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_exact_power_law(alpha: float) -> None:
    z = power_law_embeddings(400, 64, alpha)
    r = alpha_req(t(z))
    assert (r.k_min, r.k_max, r.num_fit_points) == (1, 32, 32)
    assert r.alpha == pytest.approx(alpha, abs=1e-8)
    assert r.r2 == pytest.approx(1.0, abs=1e-10)
    ref_a, ref_r2 = ref_alpha(z, 1, 32)
    assert r.alpha == pytest.approx(ref_a, abs=1e-9) and r.r2 == pytest.approx(ref_r2, abs=1e-9)


def test_alpha_req_sampled_gaussian_power_law() -> None:
    rng = np.random.default_rng(5)
    d, alpha = 64, 1.0
    basis = orthonormal(d, d, seed=6)
    z = (rng.standard_normal((8000, d)) * np.arange(1, d + 1) ** (-alpha / 2)) @ basis.T
    r = alpha_req(t(z, torch.float32))
    assert r.alpha == pytest.approx(alpha, abs=0.1) and r.r2 > 0.98


def test_alpha_req_fit_range_matches_reference() -> None:
    z = np.random.default_rng(7).standard_normal((300, 40)) * np.linspace(3.0, 0.1, 40)
    r = alpha_req(t(z), k_min=3, k_max=25)
    ref_a, ref_r2 = ref_alpha(z, 3, 25)
    assert (r.k_min, r.k_max, r.num_fit_points) == (3, 25, 23)
    assert r.alpha == pytest.approx(ref_a, rel=1e-9) and r.r2 == pytest.approx(ref_r2, rel=1e-9)
    rec = r.to_record()
    assert rec["definition"]["fit_range"] == [3, 25] and rec["definition"]["centered"] is True
    assert rec["r2"] == pytest.approx(ref_r2) and rec["sample"] == {"N": 300, "D": 40}


def test_alpha_req_collapse_is_steep_and_default_range() -> None:
    assert default_fit_range(1000, 256) == (1, 128)
    assert default_fit_range(50, 256) == (1, 24)  # N - 1 = 49 bounds the rank
    flat = alpha_req(t(orthonormal(500, 32, seed=8, centred=True)))
    assert abs(flat.alpha) < 1e-8  # isotropic: flat spectrum
    rng = np.random.default_rng(9)
    # rank-1 embedding: only one eigenvalue above round-off -> no fit, NaN, recorded as None
    z = np.outer(rng.standard_normal(200), rng.standard_normal(16))
    r = alpha_req(t(z))
    assert r.num_fit_points == 1 and math.isnan(r.alpha)
    assert r.to_record()["value"] is None
    json.dumps(r.to_record(), allow_nan=False)


# --------------------------------------------------------------------------------------------------
# LiDAR


def test_lidar_matches_reference_and_separates_signal_from_collapse() -> None:
    rng = np.random.default_rng(10)
    m, n, d = 4, 300, 16
    means = rng.standard_normal((n, d))
    good = means + 0.01 * rng.standard_normal((m, n, d))  # images spread in all d directions
    r = lidar(t(good, torch.float32))
    assert r.value > 0.9 * d
    assert r.value == pytest.approx(ref_lidar(good.astype(np.float32)), rel=1e-6)
    # images told apart along one direction only, the other d - 1 are view noise
    line = np.zeros((n, d))
    line[:, 0] = 10.0 * rng.standard_normal(n)
    collapsed = line + 0.1 * rng.standard_normal((m, n, d))
    low = lidar(t(collapsed))
    assert low.value < 1.5
    assert low.value == pytest.approx(ref_lidar(collapsed), rel=1e-6)
    rec = r.to_record()
    assert rec["sample"] == {"N": n, "D": d, "M": m}
    assert rec["definition"]["delta"] == LIDAR_DELTA and rec["definition"]["eps"] == LIDAR_EPS
    json.dumps(rec, allow_nan=False)


def test_lidar_pure_noise_is_flat_not_low() -> None:
    """LiDAR is a rank, not a signal-to-noise ratio: iid views make Sw^-1/2 Sb Sw^-1/2 ~ I / M (flat)."""
    noise = np.random.default_rng(11).standard_normal((4, 3000, 16))
    r = lidar(t(noise))
    assert r.value > 0.95 * 16
    assert r.value == pytest.approx(ref_lidar(noise), rel=1e-6)


def test_lidar_invariant_to_linear_maps_without_delta() -> None:
    rng = np.random.default_rng(12)
    views = rng.standard_normal((3, 200, 8)) + 2.0 * rng.standard_normal((200, 8)) * np.linspace(1, 0.1, 8)
    a = rng.standard_normal((8, 8)) + 3 * np.eye(8)
    base = lidar(t(views), delta=0.0)
    assert lidar(t(views @ a.T), delta=0.0).value == pytest.approx(base.value, rel=1e-8)
    assert base.value == pytest.approx(ref_lidar(views, delta=0.0), rel=1e-8)
    assert lidar(t(views), delta=0.5, eps=1e-3).value == pytest.approx(ref_lidar(views, 0.5, 1e-3), rel=1e-8)


# --------------------------------------------------------------------------------------------------
# Input validation: errors name the shapes


@pytest.mark.parametrize("fn", [rankme, alpha_req])
def test_two_d_measures_reject_bad_input(fn) -> None:
    with pytest.raises(ValueError, match=r"\(N, D\), got shape \(4, 5, 6\)"):
        fn(torch.zeros(4, 5, 6))
    with pytest.raises(ValueError, match=r"got shape \(7,\)"):
        fn(torch.zeros(7))
    with pytest.raises(TypeError, match=r"float tensor .* torch.int64 of shape \(3, 2\)"):
        fn(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(np.zeros((3, 2)))
    bad = torch.randn(5, 3)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"shape \(5, 3\) contains NaN"):
        fn(bad)
    with pytest.raises(ValueError, match=r"empty, shape \(0, 3\)"):
        fn(torch.zeros(0, 3))


def test_measure_specific_errors() -> None:
    with pytest.raises(ValueError, match=r"k_max <= min\(N, D\) = 8, got k_min=1, k_max=9 for z of shape \(20, 8\)"):
        alpha_req(torch.randn(20, 8), k_max=9)
    with pytest.raises(ValueError, match="k_min must be an int >= 1"):
        alpha_req(torch.randn(20, 8), k_min=0)
    with pytest.raises(ValueError, match=r"N >= 2 samples .* shape \(1, 8\)"):
        alpha_req(torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"\(M views, N images, D\), got shape \(10, 4\)"):
        lidar(torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"M >= 2 views .* got views of shape \(1, 10, 4\)"):
        lidar(torch.randn(1, 10, 4))
    with pytest.raises(ValueError, match="delta must be a finite number >= 0"):
        lidar(torch.randn(2, 10, 4), delta=-1.0)
    with pytest.raises(ValueError, match="singular"):
        lidar(torch.randn(2, 3, 8), delta=0.0)  # N(M-1) = 3 < D = 8
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got nan"):
        rankme(torch.randn(4, 3), eps=float("nan"))


def test_monitor_embeddings_shapes_and_record() -> None:
    rng = np.random.default_rng(13)
    fv, pv = t(rng.standard_normal((3, 50, 12))), t(rng.standard_normal((3, 50, 6)))
    rep = monitor_embeddings(fv[0], pv[0], feature_views=fv, projection_views=pv, protocol={"seed": 0})
    assert set(rep.results) == {"backbone", "projector"}
    assert rep.results["backbone"]["rankme"].value == pytest.approx(ref_rankme(fv[0].numpy()), rel=1e-9)
    assert rep.results["projector"]["lidar"].value == pytest.approx(ref_lidar(pv.numpy()), rel=1e-6)
    vals = rep.values()
    assert set(vals) == {f"{s}/{k}" for s in ("backbone", "projector")
                         for k in ("rankme", "alpha_req", "alpha_req_r2", "lidar")}
    rec = json.loads(json.dumps(rep.to_record(), allow_nan=False))
    assert rec["protocol"] == {"seed": 0} and rec["projector"]["lidar"]["sample"]["M"] == 3
    assert "lidar" not in monitor_embeddings(fv[0], pv[0]).results["backbone"]
    with pytest.raises(ValueError, match=r"feature_views has shape \(3, 50, 12\) but features has shape \(49, 12\)"):
        monitor_embeddings(fv[0, :49], pv[0, :49], feature_views=fv)
    with pytest.raises(ValueError, match=r"features \(50, 12\) and projections \(49, 6\)"):
        monitor_embeddings(fv[0], pv[0, :49])


# --------------------------------------------------------------------------------------------------
# From a model


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.Tensor, MultiViewAugment]:
    torch.manual_seed(0)
    model = build_ssl_model("resnet18", small_images=True, width=8, proj_dim=16)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    return model, images, MultiViewAugment(get_view_preset("cifar10"))


def test_embed_sample_matches_direct_forward_and_ignores_batch_size(tiny) -> None:
    model, images, aug = tiny
    model.train()
    a = embed_sample(model, images, aug, num_views=3, seed=5, batch_size=8, bf16=False)  # 2 images per step
    b = embed_sample(model, images, aug, num_views=3, seed=5, batch_size=1000, bf16=False)
    assert model.training  # training flag restored
    assert a.features.shape == (10, 64) and a.projections.shape == (10, 16)
    assert a.feature_views.shape == (3, 10, 64) and a.projection_views.shape == (3, 10, 16)
    torch.testing.assert_close(a.feature_views, b.feature_views, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.projections, b.projections, rtol=1e-4, atol=1e-5)
    # reference: the same views drawn by the augmentation itself for the whole sample, one forward in eval
    from mvssl_hub.views import EvalTransform

    views = aug(images, 3, torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        ref = model(views)
        ref_clean = model.backbone(EvalTransform(aug.preset)(images))
    model.train()
    torch.testing.assert_close(a.projection_views, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.features, ref_clean, rtol=1e-4, atol=1e-5)
    c = embed_sample(model, images, aug, num_views=3, seed=6, batch_size=8, bf16=False)
    assert not torch.allclose(c.feature_views, a.feature_views)


def test_monitor_model_end_to_end(tiny) -> None:
    model, images, aug = tiny
    rep = monitor_model(model, images, aug, num_views=2, seed=0, batch_size=64, bf16=False, k_max=4)
    rec = json.loads(json.dumps(rep.to_record(), allow_nan=False))
    assert rec["protocol"]["num_images"] == 10 and rec["protocol"]["num_views"] == 2
    assert rec["backbone"]["lidar"]["sample"] == {"N": 10, "D": 64, "M": 2}
    assert rec["projector"]["alpha_req"]["definition"]["fit_range"] == [1, 4]
    assert 1.0 <= rep.results["projector"]["rankme"].value <= 10.0


def test_embed_sample_input_errors(tiny) -> None:
    model, images, aug = tiny
    with pytest.raises(ValueError, match=r"uint8 tensor \(N, 3, H, W\), got \(10, 3, 32\)"):
        embed_sample(model, images[..., 0], aug)
    with pytest.raises(ValueError, match="num_views must be an int >= 2"):
        embed_sample(model, images, aug, num_views=1)
    with pytest.raises(TypeError, match=r"\.backbone module"):
        embed_sample(model.backbone, images, aug)
    with pytest.raises(TypeError, match="MultiViewAugment"):
        embed_sample(model, images, None)  # type: ignore[arg-type]

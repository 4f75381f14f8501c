"""Tests of mvssl_hub.losses against independent float64 reference computations."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mvssl_hub.losses import BarlowTwinsLoss, VICRegLoss, barlow_twins_loss, build_loss, recommended_beta, vicreg_loss

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Independent references (float64, plain loops / formulas; no library helpers)
# ---------------------------------------------------------------------------------------------

def ref_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    n = z.shape[0]
    mean = z.sum(0) / n
    var = ((z - mean) ** 2).sum(0) / n
    return (z - mean) / torch.sqrt(var + eps)


def ref_bt_classic(z1: torch.Tensor, z2: torch.Tensor, beta: float) -> float:
    a, b = ref_standardise(z1), ref_standardise(z2)
    n, d = a.shape
    loss = 0.0
    for k in range(d):
        for l in range(d):
            c_kl = float(sum(a[i, k] * b[i, l] for i in range(n))) / n
            loss += (1.0 - c_kl) ** 2 if k == l else beta * c_kl**2
    return loss


def ref_bt_mean(z: torch.Tensor, beta: float) -> float:
    m, n, d = z.shape
    zs = [ref_standardise(z[v]) for v in range(m)]
    zbar = sum(zs) / m
    inv = 0.0
    for v in range(m):
        for k in range(d):
            c_vk = float(sum(zs[v][i, k] * zbar[i, k] for i in range(n))) / n
            inv += (1.0 - c_vk) ** 2
    orth = 0.0
    for k in range(d):
        for l in range(d):
            if k != l:
                orth += (float(sum(zbar[i, k] * zbar[i, l] for i in range(n))) / n) ** 2
    return inv / m + beta * orth


def ref_vicreg_classic(z1: torch.Tensor, z2: torch.Tensor, lam: float, mu: float, nu: float,
                       eps: float = 1e-4) -> float:
    n, d = z1.shape
    inv = float(((z1 - z2) ** 2).sum()) / (n * d)

    def var_and_cov(z: torch.Tensor) -> tuple[float, float]:
        zc = z - z.sum(0) / n
        hinge, off = 0.0, 0.0
        for k in range(d):
            hinge += max(0.0, 1.0 - math.sqrt(float((zc[:, k] ** 2).sum()) / (n - 1) + eps))
            for l in range(d):
                if k != l:
                    off += (float((zc[:, k] * zc[:, l]).sum()) / (n - 1)) ** 2
        return hinge / d, off / d

    v1, c1 = var_and_cov(z1)
    v2, c2 = var_and_cov(z2)
    return lam * inv + mu * 0.5 * (v1 + v2) + nu * (c1 + c2)


def random_views(m: int, n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Correlated views with per-feature scales in [0.2, 1.6] (so the VICReg hinge is active)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.3 + torch.eye(d, dtype=torch.float64)
    scale = torch.linspace(0.2, 1.6, d, dtype=torch.float64)
    views = [(base + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)) @ mix * scale + 0.3 * v
             for v in range(m)]
    return torch.stack(views).to(dtype)


# ---------------------------------------------------------------------------------------------
# Values against the references
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.0051, 0.02, 0.5])
def test_bt_classic_matches_reference(beta: float) -> None:
    z = random_views(2, 12, 5, seed=1)
    got = barlow_twins_loss(z, beta, form="classic")
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref_bt_classic(z[0], z[1], beta), rel=1e-10)
    # float32 inputs give a float32 result close to the float64 reference
    got32 = barlow_twins_loss(z.float(), beta)
    assert got32.dtype == torch.float32 and got32.ndim == 0
    assert got32.item() == pytest.approx(ref_bt_classic(z[0], z[1], beta), rel=1e-4)


@pytest.mark.parametrize("beta", [0.01, 0.04, 0.2])
def test_vicreg_classic_matches_reference(beta: float) -> None:
    z = random_views(2, 10, 5, seed=2)
    lam = 1.0 / beta
    want = ref_vicreg_classic(z[0], z[1], lam, lam, 1.0)
    assert vicreg_loss(z, beta, form="classic").item() == pytest.approx(want, rel=1e-10)
    assert vicreg_loss(z, beta).item() == pytest.approx(want, rel=1e-10)
    # the hinge must actually be active in this data, or the test would not check it
    _, terms = vicreg_loss(z, beta, return_terms=True)
    assert terms["variance"].item() > 0.01


def test_vicreg_explicit_weights_override_beta() -> None:
    z = random_views(2, 10, 4, seed=3)
    want = ref_vicreg_classic(z[0], z[1], 3.0, 7.0, 0.5)
    got = vicreg_loss(z, 0.04, inv_weight=3.0, var_weight=7.0, cov_weight=0.5)
    assert got.item() == pytest.approx(want, rel=1e-10)
    # var_weight defaults to inv_weight when only inv_weight is given
    got = vicreg_loss(z, 123.0, inv_weight=3.0)
    assert got.item() == pytest.approx(ref_vicreg_classic(z[0], z[1], 3.0, 3.0, 1.0), rel=1e-10)
    assert VICRegLoss(0.04).inv_weight == pytest.approx(25.0)


def test_all_pairs_mean_identity() -> None:
    g = torch.Generator().manual_seed(4)
    for m in (2, 3, 5, 8):
        z = torch.randn(m, 7, dtype=torch.float64, generator=g)
        zbar = z.mean(0)
        lhs = sum(float(((z[a] - z[b]) ** 2).sum()) for a, b in itertools.combinations(range(m), 2))
        rhs = m * sum(float(((z[a] - zbar) ** 2).sum()) for a in range(m))
        assert lhs == pytest.approx(rhs, rel=1e-12)


def test_vicreg_leave_one_out_equals_classic_at_two_views() -> None:
    z = random_views(2, 16, 6, seed=5)
    loo, t_loo = vicreg_loss(z, 0.04, form="leave_one_out", return_terms=True)
    cls, t_cls = vicreg_loss(z, 0.04, form="classic", return_terms=True)
    assert loo.item() == pytest.approx(cls.item(), rel=1e-12)
    for key in t_cls:
        assert t_loo[key].item() == pytest.approx(t_cls[key].item(), rel=1e-12, abs=1e-15)


def test_vicreg_leave_one_out_matches_reference() -> None:
    m, beta = 4, 0.05
    z = random_views(m, 9, 4, seed=6)
    per_view = []
    for v in range(m):
        others = sum(z[u] for u in range(m) if u != v) / (m - 1)
        per_view.append(ref_vicreg_classic(z[v], others, 1 / beta, 1 / beta, 1.0))
    want = sum(per_view) / m
    assert vicreg_loss(z, beta, form="leave_one_out").item() == pytest.approx(want, rel=1e-10)
    assert vicreg_loss(z, beta).item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("beta", [0.0, 0.02, 0.3])
def test_bt_mean_form_matches_reference(beta: float) -> None:
    z = random_views(4, 10, 5, seed=7)
    want = ref_bt_mean(z, beta)
    assert barlow_twins_loss(z, beta, form="mean").item() == pytest.approx(want, rel=1e-10)
    assert barlow_twins_loss(z, beta).item() == pytest.approx(want, rel=1e-10)  # auto at M > 2


def test_all_pairs_forms_match_loop_over_pairs() -> None:
    m = 4
    z = random_views(m, 8, 4, seed=8)
    pairs = list(itertools.combinations(range(m), 2))
    want_bt = sum(ref_bt_classic(z[a], z[b], 0.05) for a, b in pairs) / len(pairs)
    assert barlow_twins_loss(z, 0.05, form="all_pairs").item() == pytest.approx(want_bt, rel=1e-10)
    want_vic = sum(ref_vicreg_classic(z[a], z[b], 25.0, 25.0, 1.0) for a, b in pairs) / len(pairs)
    assert vicreg_loss(z, 0.04, form="all_pairs").item() == pytest.approx(want_vic, rel=1e-10)
    # at M = 2 every form of Barlow Twins is the classic loss
    z2 = z[:2]
    classic = barlow_twins_loss(z2, 0.05, form="classic").item()
    assert barlow_twins_loss(z2, 0.05, form="all_pairs").item() == pytest.approx(classic, rel=1e-12)


def test_return_terms_recombine_to_loss() -> None:
    z = random_views(3, 12, 5, seed=9)
    for form in ("mean", "all_pairs"):
        loss, t = barlow_twins_loss(z, 0.1, form=form, return_terms=True)
        assert set(t) == {"invariance", "orthogonality"}
        assert loss.item() == pytest.approx((t["invariance"] + 0.1 * t["orthogonality"]).item(), rel=1e-12)
        assert not t["invariance"].requires_grad
    loss, t = vicreg_loss(z.float(), 0.04, return_terms=True)
    assert set(t) == {"invariance", "variance", "covariance"}
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in t.values())
    recombined = 25 * t["invariance"] + 25 * t["variance"] + t["covariance"]
    assert loss.item() == pytest.approx(recombined.item(), rel=1e-5)


def test_sequence_input_and_modules() -> None:
    z = random_views(3, 10, 4, seed=10)
    assert barlow_twins_loss(list(z), 0.02).item() == pytest.approx(barlow_twins_loss(z, 0.02).item(), rel=1e-12)
    assert vicreg_loss(tuple(z), 0.04).item() == pytest.approx(vicreg_loss(z, 0.04).item(), rel=1e-12)
    bt = build_loss("barlowtwins", 0.02, form="all_pairs")
    assert isinstance(bt, BarlowTwinsLoss)
    assert bt(z).item() == pytest.approx(barlow_twins_loss(z, 0.02, form="all_pairs").item(), rel=1e-12)
    vic = build_loss("vicreg", 0.05)
    assert isinstance(vic, VICRegLoss)
    assert vic(z).item() == pytest.approx(vicreg_loss(z, 0.05).item(), rel=1e-12)
    assert VICRegLoss(0.05, inv_weight=2.0)(z).item() == pytest.approx(
        vicreg_loss(z, 0.05, inv_weight=2.0).item(), rel=1e-12)


def test_perfect_invariance_gives_zero_invariance_term() -> None:
    n, d = 32, 6
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    q, _ = torch.linalg.qr(x - x.mean(0))     # zero-mean orthonormal columns
    z = q * math.sqrt(n)                      # standardised (biased var 1) and decorrelated
    _, t = barlow_twins_loss(torch.stack([z, z]), 0.02, return_terms=True)
    assert t["invariance"].item() < 1e-8 and t["orthogonality"].item() < 1e-20
    _, t = barlow_twins_loss(torch.stack([z] * 4), 0.02, return_terms=True)   # mean form
    assert t["invariance"].item() < 1e-8 and t["orthogonality"].item() < 1e-20
    # and a different (shuffled) second view is clearly not invariant
    _, t = barlow_twins_loss(torch.stack([z, z[torch.randperm(n, generator=g)]]), 0.02, return_terms=True)
    assert t["invariance"].item() > 1.0


# ---------------------------------------------------------------------------------------------
# Gradients, precision
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fn", "form", "m"), [
    (barlow_twins_loss, "classic", 2), (barlow_twins_loss, "mean", 3), (barlow_twins_loss, "all_pairs", 3),
    (barlow_twins_loss, "auto", 3), (vicreg_loss, "classic", 2), (vicreg_loss, "leave_one_out", 3),
    (vicreg_loss, "all_pairs", 3), (vicreg_loss, "auto", 3),
])
def test_gradcheck(fn, form: str, m: int) -> None:
    z = random_views(m, 6, 3, seed=12).requires_grad_(True)
    beta = 0.3 if fn is barlow_twins_loss else 0.1
    assert torch.autograd.gradcheck(lambda t: fn(t, beta, form=form), (z,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn", [barlow_twins_loss, vicreg_loss])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_autocast_low_precision_inputs_give_fp32(fn, m: int, half: torch.dtype) -> None:
    z = random_views(m, 64, 32, seed=13).to(half)
    want = fn(z.float(), 0.02)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(z, 0.02)
        got_seq = fn(list(z), 0.02)
    assert got.dtype == torch.float32 and got_seq.dtype == torch.float32
    # computed in float32 on the same (rounded) values: agrees to float32 accuracy
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got_seq.item() == pytest.approx(want.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [barlow_twins_loss, vicreg_loss])
def test_input_errors_name_the_shapes(fn) -> None:
    with pytest.raises(ValueError, match=r"M >= 2.*\(1, 8, 4\)"):
        fn(torch.randn(1, 8, 4))
    with pytest.raises(ValueError, match=r"N > 1.*\(2, 1, 4\)"):
        fn(torch.randn(2, 1, 4))
    with pytest.raises(ValueError, match=r"\(M views, N batch, d dim\).*\(8, 4\)"):
        fn(torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"view 0: \(8, 4\), view 1: \(8, 4\), view 2: \(7, 4\)"):
        fn([torch.randn(8, 4), torch.randn(8, 4), torch.randn(7, 4)])
    with pytest.raises(ValueError, match=r"view 1 must have shape \(N, d\), got shape \(8,\)"):
        fn([torch.randn(8, 4), torch.randn(8)])
    with pytest.raises(ValueError, match=r"M >= 2.*1 view"):
        fn([torch.randn(8, 4)])
    with pytest.raises(ValueError, match=r"beta must be .*>= 0, got -0\.1"):
        fn(torch.randn(2, 8, 4), -0.1)
    with pytest.raises(ValueError, match=r"form='classic' needs M == 2.*\(3, 8, 4\)"):
        fn(torch.randn(3, 8, 4), form="classic")
    with pytest.raises(TypeError, match=r"floating-point.*int64"):
        fn(torch.ones(2, 8, 4, dtype=torch.int64))


def test_unknown_form_lists_valid_forms() -> None:
    with pytest.raises(ValueError, match=r"unknown form 'leave_one_out'.*auto, classic, mean, all_pairs"):
        barlow_twins_loss(torch.randn(2, 8, 4), form="leave_one_out")
    with pytest.raises(ValueError, match=r"unknown form 'mean'.*auto, classic, leave_one_out, all_pairs"):
        vicreg_loss(torch.randn(2, 8, 4), form="mean")
    with pytest.raises(ValueError, match=r"unknown form 'bogus'"):
        BarlowTwinsLoss(0.02, form="bogus")
    with pytest.raises(ValueError, match=r"beta must be > 0 .*got beta=0"):
        vicreg_loss(torch.randn(2, 8, 4), 0.0)
    with pytest.raises(ValueError, match=r"inv_weight must be .*-1"):
        VICRegLoss(0.04, inv_weight=-1.0)
    with pytest.raises(ValueError, match=r"unknown method 'simclr'.*barlowtwins, vicreg"):
        build_loss("simclr", 0.1)


# ---------------------------------------------------------------------------------------------
# recommended_beta (docs/docs/method.md tables as data)
# ---------------------------------------------------------------------------------------------

BT_TUNED_TWO_VIEWS = {64: 0.04, 128: 0.04, 256: 0.02, 512: 0.01}  # min(5.12 / d, 0.04) reproduces these
BT_TUNED_MULTI_VIEW = {(256, 4): 0.01, (256, 8): 0.01, (256, 2): 0.02}
VICREG_TUNED_LAMBDA = {64: 20, 256: 25, 1024: 25, 2048: 75, 4096: 200, 8192: 800}


def test_recommended_beta_reproduces_tables() -> None:
    for d, beta in BT_TUNED_TWO_VIEWS.items():
        assert recommended_beta("barlowtwins", d) == pytest.approx(beta, rel=1e-9)
    for (d, m), beta in BT_TUNED_MULTI_VIEW.items():
        assert recommended_beta("barlowtwins", d, num_views=m) == pytest.approx(beta, rel=1e-9)
    for d, lam in VICREG_TUNED_LAMBDA.items():
        assert recommended_beta("vicreg", d) == pytest.approx(1 / lam, rel=1e-9)
    assert recommended_beta("vicreg", 256) == pytest.approx(0.04)
    # Barlow Twins is capped at 0.04 for small projectors, before the multi-view halving
    assert recommended_beta("barlowtwins", 8) == pytest.approx(0.04)
    assert recommended_beta("barlowtwins", 32, num_views=4) == pytest.approx(0.02)
    # clamped outside the table; monotone and between neighbours inside it
    assert recommended_beta("vicreg", 16) == pytest.approx(1 / 20)
    assert recommended_beta("vicreg", 16384) == pytest.approx(1 / 800)
    lam_128 = 1 / recommended_beta("vicreg", 128)
    assert lam_128 == pytest.approx(22.5)                      # halfway in log2 d between 64 and 256
    lam_3000 = 1 / recommended_beta("vicreg", 3000)
    assert 75 < lam_3000 < 200


def test_recommended_beta_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'byol'.*barlowtwins, vicreg"):
        recommended_beta("byol", 256)
    with pytest.raises(ValueError, match=r"proj_dim must be an int >= 1, got 0"):
        recommended_beta("vicreg", 0)
    with pytest.raises(ValueError, match=r"proj_dim must be an int >= 1, got 256.0"):
        recommended_beta("barlowtwins", 256.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"num_views must be an int >= 2, got 1"):
        recommended_beta("barlowtwins", 256, num_views=1)


# ---------------------------------------------------------------------------------------------
# Distributed: 2 gloo processes on 127.0.0.1 == one process on the global batch
# ---------------------------------------------------------------------------------------------

def test_distributed_without_process_group_is_noop() -> None:
    z = random_views(3, 8, 4, seed=14)
    assert barlow_twins_loss(z, 0.02, distributed=True).item() == barlow_twins_loss(z, 0.02).item()
    assert vicreg_loss(z, 0.04, distributed=True).item() == vicreg_loss(z, 0.04).item()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_two_ranks_match_single_process(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from _dist_helpers import CASES, make_linear
    finally:
        sys.path.pop(0)
    world, n_global, k, d = 2, 12, 5, 4
    g = torch.Generator().manual_seed(15)
    tensors = {
        "x": torch.randn(3, n_global, k, dtype=torch.float64, generator=g),
        "weight": torch.randn(d, k, dtype=torch.float64, generator=g),
        "bias": torch.randn(d, dtype=torch.float64, generator=g),
    }
    save_file(tensors, str(tmp_path / "inputs.safetensors"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).parent / "_dist_helpers.py"), str(r),
                               str(world), str(port), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outputs = [p.communicate(timeout=90)[0] for p in procs]
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{outputs[r]}"

    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(world)]
    for name, (fn, kwargs, m) in CASES.items():
        lin = make_linear(tensors)
        x = tensors["x"][:m].clone().requires_grad_(True)
        loss = fn(lin(x), **kwargs)
        loss.backward()
        for r in range(world):
            torch.testing.assert_close(ranks[r][f"{name}.loss"], loss.detach().reshape(1), rtol=1e-10, atol=0)
            # DDP averages parameter grads over ranks: equal to the single-process grads
            torch.testing.assert_close(ranks[r][f"{name}.weight_grad"], lin.weight.grad, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(ranks[r][f"{name}.bias_grad"], lin.bias.grad, rtol=1e-9, atol=1e-12)
        # raw input grads: the all_gather backward sums over ranks, each rank having the same global
        # loss, so the local grad is world_size x the single-process grad of the global loss
        x_grad = torch.cat([ranks[r][f"{name}.x_grad"] for r in range(world)], dim=1)
        torch.testing.assert_close(x_grad, world * x.grad, rtol=1e-9, atol=1e-12)

    for r in range(world):
        info = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert "rank 0: N=4, rank 1: N=5" in info["unequal_n_error"]
        assert info["host_reads"] == {name: "" for name in CASES}


# ------------------------------------------------------------------------------------------ host syncs

_ALL_FORMS = [(barlow_twins_loss, f, {"beta": 0.02}) for f in ("auto", "classic", "mean", "all_pairs")] + [
    (vicreg_loss, f, {"beta": 0.04}) for f in ("auto", "classic", "leave_one_out", "all_pairs")]


@pytest.mark.parametrize("fn,form,kw", _ALL_FORMS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("as_list", [False, True])
def test_loss_reads_no_tensor_value_on_the_host(fn, form, kw, as_list, forbid_host_reads) -> None:
    """Forward and backward of every form, tensor or list input, read nothing back to the host:
    on CUDA the loss adds no sync to the step."""
    m = 2 if form == "classic" else 3
    z = torch.randn(m, 8, 5, requires_grad=True)
    with forbid_host_reads():
        loss = fn(list(z.unbind(0)) if as_list else z, form=form, **kw)
        loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with forbid_host_reads(), pytest.raises(AssertionError, match="host read"):
        bool(loss > 0)  # the guard is live


@pytest.mark.parametrize("fn", [barlow_twins_loss, vicreg_loss])
def test_non_finite_inputs_give_a_non_finite_loss(fn) -> None:
    """No check inside the loss: nan/inf propagate, so one finiteness test of the loss per step sees them."""
    from mvssl_hub.train.step_guard import nonfinite_views

    for value in (float("nan"), float("inf"), float("-inf")):
        bad = torch.randn(3, 8, 4)
        bad[2, 5, 1] = value
        assert not torch.isfinite(fn(bad)).item()
        assert nonfinite_views(bad) == [2]

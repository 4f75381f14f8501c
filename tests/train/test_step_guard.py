"""Tests of mvssl_hub.train.step_guard: one finiteness flag per step, skipped steps leave no trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mvssl_hub.train.step_guard as sg
from mvssl_hub.losses import barlow_twins_loss
from mvssl_hub.train.step_guard import BufferSnapshot, StepGuard, finite_flag, nonfinite_views, supports_device_skip


def test_finite_flag_combines_every_tensor(forbid_host_reads) -> None:
    good, nan, inf = torch.ones(3), torch.tensor([1.0, float("nan")]), torch.tensor(float("-inf"))
    with forbid_host_reads():
        flags = [finite_flag(good), finite_flag(good, nan), finite_flag(inf, good), finite_flag(good, good)]
    assert [f.shape for f in flags] == [torch.Size([])] * 4 and all(f.dtype == torch.bool for f in flags)
    assert [bool(f) for f in flags] == [True, False, False, True]
    with pytest.raises(ValueError, match="at least one"):
        finite_flag()


def test_finite_flag_reduces_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP a finite rank must learn that another rank was not (MIN all-reduce of an int flag)."""
    import torch.distributed as dist

    calls = []

    def fake_all_reduce(t: torch.Tensor, op=None) -> None:  # the other rank saw a nan
        calls.append((t.dtype, op))
        t.zero_()

    monkeypatch.setattr(sg.distributed_mod, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    assert not bool(finite_flag(torch.ones(2), distributed=True))
    assert calls == [(torch.int32, dist.ReduceOp.MIN)]
    assert bool(finite_flag(torch.ones(2), distributed=False)) and len(calls) == 1


def test_nonfinite_views_names_the_views() -> None:
    z = torch.randn(4, 5, 3)
    z[1, 2, 0], z[3, 0, 2] = float("nan"), float("inf")
    assert nonfinite_views(z) == [1, 3]
    assert nonfinite_views(torch.randn(2, 3, 3)) == []


def test_buffer_snapshot_restore_unless() -> None:
    b = [torch.zeros(3), torch.zeros((), dtype=torch.int64)]
    snap = BufferSnapshot(b)
    snap.take()
    b[0].add_(1.0), b[1].add_(1)
    snap.restore_unless(torch.tensor(True))
    assert b[0].tolist() == [1.0, 1.0, 1.0] and int(b[1]) == 1
    snap.restore_unless(torch.tensor(False))
    assert b[0].tolist() == [0.0, 0.0, 0.0] and int(b[1]) == 0


# ------------------------------------------------------------------------------------------- the guard

def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for name, b in model.named_buffers() if "running" in name or "num_batches" in name]


def _run(device_skip: bool, nan_steps: set[int], steps: int = 6, fused: bool = True) -> tuple[nn.Module, StepGuard, list]:
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-6, fused=fused)
    guard = StepGuard(opt, _bn_buffers(model), device_skip=device_skip)
    flags = []
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(2, 16, 6, generator=g)
        if step in nan_steps:
            x[0, 3, 1] = float("nan")
        guard.before_forward()
        z = model(x.flatten(0, 1)).view(2, 16, 4)
        loss = barlow_twins_loss(z, 0.02)
        loss.backward()
        flags.append(bool(guard.step(opt, loss)))
        opt.zero_grad(set_to_none=True)
    return model, guard, flags


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("device_skip", [False, True])
def test_skipped_steps_leave_parameters_optimizer_and_bn_untouched(device_skip: bool) -> None:
    """A run with non-finite batches at steps 2 and 3 ends exactly where the run without those steps'
    updates would: same parameters, BN statistics and Adam step counts."""
    model, guard, flags = _run(device_skip, {2, 3})
    assert flags == [True, True, False, False, True, True]
    assert guard.poll() == sg.StepCounts(skipped=2, streak=0, max_streak=2)
    # reference: the same batches, but steps 2 and 3 are dropped entirely (forward included)
    ref = _model().train()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=1e-6, fused=True)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(2, 16, 6, generator=g)
        if step in {2, 3}:
            continue
        barlow_twins_loss(ref(x.flatten(0, 1)).view(2, 16, 4), 0.02).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    got, want = _state(model), _state(ref)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    steps = [int(s["step"]) for s in guard.optimizer.state.values()]
    assert steps == [4] * len(steps)


def test_streak_counts_and_resume() -> None:
    _, guard, flags = _run(False, {3, 4, 5})
    assert flags[-3:] == [False, False, False]
    assert guard.poll() == sg.StepCounts(skipped=3, streak=3, max_streak=3)
    _, dev_guard, _ = _run(True, {3, 4, 5})
    assert dev_guard.poll() == guard.poll()
    dev_guard.load_counts(skipped=7, streak=2)
    assert dev_guard.poll() == sg.StepCounts(7, 2, 2)


def test_device_skip_step_reads_nothing_on_the_host(forbid_host_reads) -> None:
    """With a fused Adam the whole step (snapshot, forward, loss, backward, guarded step) reads no
    tensor value back: zero host syncs per step on CUDA."""
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    guard = StepGuard(opt, _bn_buffers(model))
    assert guard.device_skip
    x = torch.randn(32, 6)
    before = _state(model)
    for bad in (False, True):
        xb = x.clone()
        if bad:
            xb[0, 0] = float("inf")
        with forbid_host_reads():
            guard.before_forward()
            loss = barlow_twins_loss(model(xb).view(2, 16, 4), 0.02)
            loss.backward()
            guard.step(opt, loss)
            opt.zero_grad(set_to_none=True)
        if not bad:
            after_good = _state(model)
    assert not torch.equal(after_good["0.weight"], before["0.weight"])
    for k, v in _state(model).items():
        assert torch.equal(v, after_good[k]), k
    assert guard.poll() == sg.StepCounts(1, 1, 1)


def test_device_skip_needs_a_fused_adam() -> None:
    p = [nn.Parameter(torch.ones(2))]
    assert supports_device_skip(torch.optim.Adam(p, fused=True))
    assert supports_device_skip(torch.optim.AdamW(p, fused=True))
    assert not supports_device_skip(torch.optim.Adam(p, foreach=True))
    assert not supports_device_skip(torch.optim.SGD(p, lr=0.1))
    assert not StepGuard(torch.optim.Adam(p, foreach=True)).device_skip
    with pytest.raises(ValueError, match="fused"):
        StepGuard(torch.optim.SGD(p, lr=0.1), device_skip=True)

    class Wrapped:  # an accelerate AcceleratedOptimizer keeps the torch optimizer as .optimizer
        def __init__(self, opt: torch.optim.Optimizer, scaler: object = None) -> None:
            self.optimizer, self.scaler = opt, scaler

    assert supports_device_skip(Wrapped(torch.optim.Adam(p, fused=True)))
    assert not supports_device_skip(Wrapped(torch.optim.Adam(p, fused=True), scaler=object()))


def test_the_guard_steps_its_own_optimizer_and_the_old_call_still_works() -> None:
    """guard.step(optimizer, loss) reads like GradScaler.step(optimizer); another optimizer is refused, and the
    call of mvssl-hub 0.1 (guard.step(loss)) still steps, with a DeprecationWarning."""
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    guard = StepGuard(opt, _bn_buffers(model))
    loss = barlow_twins_loss(model(torch.randn(32, 6)).view(2, 16, 4), 0.02)
    loss.backward()
    with pytest.raises(ValueError, match="not the optimizer this guard was made for"):
        guard.step(torch.optim.Adam(model.parameters()), loss)
    before = model[0].weight.detach().clone()
    with pytest.warns(DeprecationWarning, match=r"step\(optimizer, loss\)"):
        assert bool(guard.step(loss))
    assert not torch.equal(model[0].weight, before)

"""Tests of mvssl_hub.train.backends' flags and optimizer (CPU; the CUDA-only parts run in gpu_check.sh)."""

from __future__ import annotations

import os

import pytest
import torch

from mvssl_hub.train.backends import configure_backends, make_adam


def test_cuda_speed_settings_applied_and_restored(restore_backends) -> None:
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    prev = configure_backends("cuda", deterministic=False)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert not torch.are_deterministic_algorithms_enabled()
    assert (prev.cudnn_benchmark, prev.matmul_fp32_precision, prev.conv_fp32_precision) == (False, "ieee", "ieee")
    prev.restore()
    assert not torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "ieee"
    configure_backends("cuda:0", deterministic=False, tf32=False)
    assert torch.backends.cuda.matmul.fp32_precision == "ieee" == torch.backends.cudnn.conv.fp32_precision


def test_deterministic_settings_applied_and_restored(restore_backends, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    prev = configure_backends(torch.device("cuda"), deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert prev.cublas_workspace_config is None and prev.cudnn_benchmark
    configure_backends("cpu", deterministic=True, strict=True)
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    prev.restore()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()


def test_cpu_leaves_cuda_flags_alone(restore_backends) -> None:
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    configure_backends("cpu", deterministic=False)
    assert not torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_make_adam_fused_on_cuda_foreach_elsewhere() -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    cpu, cuda = make_adam(params, 1e-3, 1e-6, "cpu"), make_adam(params, 1e-3, 1e-6, torch.device("cuda"))
    assert cpu.defaults["foreach"] and not cpu.defaults["fused"]
    assert cuda.defaults["fused"] and not cuda.defaults["foreach"]
    for opt in (cpu, cuda):
        assert (opt.defaults["lr"], opt.defaults["weight_decay"]) == (1e-3, 1e-6)
        assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)


def test_make_lars_adapts_and_decays_weights_but_not_biases_or_batchnorm() -> None:
    """One step of make_lars against the update written out by hand (Zbontar et al., 2021; timm's trust ratio):
    a weight moves by lr * eta |w| / (|g| + wd |w|) * (g + wd w); a bias or BN parameter by lr_bias * g."""
    pytest.importorskip("timm")
    from mvssl_hub.train.backends import make_lars

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2, bias=False))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model(torch.randn(8, 6)).square().sum().backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    lr, lr_bias, wd, eta = 0.1, 0.0024, 1e-2, 1e-3
    opt = make_lars(model, lr, wd, lr_bias=lr_bias, momentum=0.9, trust_coeff=eta)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 3]  # two weight matrices; bias, BN weight and bias
    opt.step()
    for name, p in model.named_parameters():
        w, g = before[name], grads[name]
        if p.ndim > 1:
            trust = eta * w.norm() / (g.norm() + wd * w.norm())
            expected = w - lr * trust * (g + wd * w)
        else:
            expected = w - lr_bias * g
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)

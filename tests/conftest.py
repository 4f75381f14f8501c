"""Shared fixtures: no network except 127.0.0.1, and a loopback Hub server with a per-test HF cache."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/: hub_server, _standins, _dist_helpers (subfolders too)

from hub_server import LoopbackHub

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: `recipes` (the scripts' loader)
from recipes import RECIPES, load_recipe  # noqa: F401  (tests import load_recipe from here)


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse TCP/UDP connections to anything but loopback; unix sockets (DataLoader workers) stay allowed."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may not use the network (tried to connect to {address!r})")

    def connect(self: socket.socket, address: object) -> None:
        guard(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        guard(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME / HF_HUB_CACHE for this test, online, Xet disabled (set in env and in the client's constants)."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_loopback_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture
def hub(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackHub]:
    """A loopback Hub on a free 127.0.0.1 port; HF_ENDPOINT (env and client constants) points at it."""
    from huggingface_hub import constants

    server = LoopbackHub(tmp_path / "hub_storage").start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    # hf_hub_url formats this template, which embedded the endpoint when huggingface_hub was imported
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------ checkpoint fixtures

TINY_METRICS = [
    {"task": "knn", "metric": "top1", "value": 41.5, "random_init": 30.25, "dataset": "uoft-cs/cifar10",
     "split": "test", "protocol": "k=200, T=0.1, cosine", "date": "2026-11-21"},
    {"task": "linear_probe", "metric": "top1", "value": 45.0, "random_init": 33.5, "dataset": "uoft-cs/cifar10",
     "split": "test", "protocol": "Adam 1e-3, 200 epochs, label smoothing 0.1", "date": "2026-11-21"},
]
TINY_SAVE_KWARGS = dict(
    method="barlowtwins", beta=0.02, num_views=4,
    train_config={"config": "recipes/configs/demo.yaml", "lr": 1e-3, "batch_size": 64, "recipe_version": "v1"},
    dataset={"id": "uoft-cs/cifar10", "revision": "0b2714987fa478483af9968de7c934580d0bb9a2", "split": "train",
             "fraction": 0.5},
    transforms={"preset": "cifar10", "eval_size": 32, "eval_resize": 32, "mean": [0.4914, 0.4822, 0.4465],
                "std": [0.247, 0.2435, 0.2616]},
    metrics=TINY_METRICS,
    training={"hardware": "2 CPU cores (test)", "wall_clock_s": 12.5, "images_per_s": 800.0, "steps": 10, "epochs": 1},
)


@pytest.fixture
def tiny_model():
    """A tiny SSL model (ResNet-18 at width 8, projector 64-32-32) in eval mode, fixed seed."""
    import torch

    from mvssl_hub.models import build_ssl_model

    torch.manual_seed(0)
    model = build_ssl_model("resnet18", small_images=True, width=8, proj_dim=32)
    # non-trivial BatchNorm statistics and affine parameters, so that a wrong buffer changes the outputs
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def same_state(a, b) -> bool:
    """True if two modules have the same state-dict keys and bit-identical tensors."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def tiny_ckpt(tiny_model, tmp_path: Path) -> Path:
    """The tiny model saved (with projector) into tmp_path/ckpt."""
    from mvssl_hub.hub.format import save_pretrained

    return save_pretrained(tiny_model, tmp_path / "ckpt", include_projector=True, **TINY_SAVE_KWARGS)


@pytest.fixture
def pushed(hub, tiny_model, tiny_ckpt):
    """The tiny checkpoint pushed to the loopback Hub as org/bt-r18-tiny with tag v1: (model, folder, repo, commit)."""
    from mvssl_hub.hub.loading import push_to_hub

    repo = "org/bt-r18-tiny"
    commit = push_to_hub(tiny_ckpt, repo, revision_tag="v1")
    return tiny_model, tiny_ckpt, repo, commit


@pytest.fixture
def published(pushed):
    """The pushed tiny checkpoint registered as BarlowTwins_ResNet18_Weights.CIFAR10_TINY_V1 (also DEFAULT).

    Yields (enum, model, repo, commit); the shipped (empty) enum is restored afterwards.
    """
    from mvssl_hub.hub.weights import make_weights_enum, weights_entry_from_checkpoint
    from mvssl_hub.zoo import register_weights

    model, _, repo, commit = pushed
    entry = weights_entry_from_checkpoint(repo, "v1", builder="barlowtwins_resnet18")
    enum = make_weights_enum("BarlowTwins_ResNet18_Weights", {"CIFAR10_TINY_V1": entry})
    previous = register_weights("barlowtwins_resnet18", enum)
    try:
        yield enum, model, repo, commit
    finally:
        register_weights("barlowtwins_resnet18", previous)


_HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def forbid_host_reads(monkeypatch: pytest.MonkeyPatch):
    """A context manager inside which reading a tensor's value on the host (``.item()``, ``.tolist()``,
    ``.numpy()``, ``bool``/``float``/``int``/index) raises: on CUDA each of these is a device sync."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def forbid():
        with monkeypatch.context() as m:
            for name in _HOST_READS:
                def read(self, *args, _name=name, **kwargs):
                    raise AssertionError(f"host read of a tensor: Tensor.{_name}")
                m.setattr(torch.Tensor, name, read)
            yield

    return forbid


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state, so that the next in-process recipe run builds a fresh Accelerator."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """Each in-process recipe run builds its own Accelerator; accelerate keeps process-wide state between them."""
    yield
    reset_accelerate_state()


@pytest.fixture
def restore_backends():
    """Put back the global backend flags (deterministic algorithms, cuDNN, TF32) a test changed."""
    from mvssl_hub.train.backends import current_backends

    before = current_backends()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield before
    before.restore()  # the flags and CUBLAS_WORKSPACE_CONFIG
    assert current_backends() == before and os.environ.get("CUBLAS_WORKSPACE_CONFIG") == env


# Tests that time the machine or wait for it to be quiet run alone, after the rest (`make test` runs the rest on two
# workers): a second worker's load would stall quiet_run's pause test and stretch the timed limits of the others.
SERIAL_FILES = {"test_quiet_run.py", "test_multinode.py", "test_offline_repo_id.py"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)

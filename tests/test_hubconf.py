"""hubconf.py: torch.hub list/help/load with source="local", cheap imports, no logic."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
BUILDERS = ["barlowtwins_resnet18", "barlowtwins_resnet18_cifar10", "barlowtwins_resnet18_w16", "barlowtwins_resnet50",
            "from_pretrained", "vicreg_resnet18", "vicreg_resnet18_w16", "vicreg_resnet50"]


def test_importing_hubconf_imports_neither_accelerate_nor_datasets():
    code = ("import json, sys, hubconf; print(json.dumps({'heavy': sorted(m for m in ('accelerate', 'datasets', 'timm') "
            "if m in sys.modules), 'deps': hubconf.dependencies}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "deps": ["torch", "torchvision", "safetensors", "huggingface_hub"]}


def test_hubconf_has_no_logic():
    tree = ast.parse((ROOT / "hubconf.py").read_text())
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds[0] == "Expr" and isinstance(tree.body[0].value, ast.Constant)  # module docstring
    assert sorted(set(kinds[1:])) == ["Assign", "ImportFrom"]
    imported = sorted(a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names)
    assert imported == BUILDERS


def test_torch_hub_list_and_help_on_the_local_checkout():
    """What torch.hub.list / torch.hub.help compute, run on the local checkout.

    (torch 2.14's list() and help() accept only GitHub repos, no source="local", so this drives the same
    torch.hub helpers they call: _import_module, _check_dependencies, _load_entry_from_hubconf.)
    """
    with torch.hub._add_to_sys_path(str(ROOT)):
        module = torch.hub._import_module(torch.hub.MODULE_HUBCONF, str(ROOT / torch.hub.MODULE_HUBCONF))
    torch.hub._check_dependencies(module)
    entrypoints = [f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_")]
    assert sorted(entrypoints) == BUILDERS
    for name in BUILDERS:
        doc = torch.hub._load_entry_from_hubconf(module, name).__doc__
        assert "backbone" in doc and "(N, 3, H, W)" in doc


def test_torch_hub_load_without_weights():
    model = torch.hub.load(str(ROOT), "vicreg_resnet18", source="local", width=8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_torch_hub_load_with_published_weights_through_loopback_hub(published):
    enum, model, _, _ = published
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    loaded = torch.hub.load(str(ROOT), "barlowtwins_resnet18", source="local", weights="DEFAULT")
    assert torch.equal(loaded(x), model.backbone(x))
    again = torch.hub.load(str(ROOT), "barlowtwins_resnet18", source="local", weights=enum.CIFAR10_TINY_V1, width=8)
    assert torch.equal(again(x), model.backbone(x))

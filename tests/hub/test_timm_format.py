"""A timm backbone's checkpoint: timm's own key names and Hub keys in config.json, so that it loads strictly four
ways with equal features (timm from the file, timm from the loopback Hub, mvssl_hub.from_pretrained,
torch.hub.load), and a config whose timm kwargs disagree with the weights is refused before anything is allocated.
A ResNet that timm builds as it is (torchvision's stem at full width, as the zoo's flagship) carries the same keys
and loads in timm alone with our features."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mvssl_hub
from mvssl_hub.errors import CheckpointError, UnknownModelError
from mvssl_hub.hub.format import save_pretrained
from mvssl_hub.hub.loading import from_pretrained, push_to_hub
from mvssl_hub.models import SSLModel
from mvssl_hub.timm_backbone import TimmBackbone

timm = pytest.importorskip("timm")
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
NAME = "vit_tiny_patch16_224"
KW = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2}
TRANSFORMS = {"preset": "cifar10", "eval_size": 32, "eval_resize": 32, "mean": [0.4914, 0.4822, 0.4465],
              "std": [0.247, 0.2435, 0.2616]}
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def vit_ckpt(tmp_path: Path) -> tuple[SSLModel, Path]:
    torch.manual_seed(0)
    model = mvssl_hub.build_ssl_model(f"timm:{NAME}", arch_kwargs=KW, proj_dim=16).eval()
    folder = save_pretrained(model, tmp_path / "vit", include_projector=True, method="barlowtwins", beta=0.1,
                             num_views=4, transforms=TRANSFORMS)
    return model, folder


class _TimmLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load_strictly(make) -> torch.nn.Module:
    """``make()`` with timm's loader log captured: no missing or unexpected key may be reported."""
    log, logger = _TimmLog(), logging.getLogger("timm")
    logger.addHandler(log)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        model = make()
    finally:
        logger.removeHandler(log)
        logger.setLevel(old)
    assert not [m for m in log.messages if "Missing keys" in m or "Unexpected keys" in m], log.messages
    return model.eval()


def _assert_same(model: torch.nn.Module, ours: torch.nn.Module) -> None:
    """The same tensors under the same names, and the same features (eval mode: BatchNorm's running statistics)."""
    ours = getattr(ours, "backbone", ours)
    sa, sb = model.state_dict(), ours.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(model.eval()(X), ours.eval()(X), atol=1e-6, rtol=0)


def test_config_json_carries_our_record_and_the_keys_timm_reads(vit_ckpt) -> None:
    _, folder = vit_ckpt
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["backbone"] == {"arch": f"timm:{NAME}", "kwargs": KW, "timm_version": timm.__version__}
    assert cfg["architecture"] == NAME and cfg["model_args"] == KW and cfg["num_features"] == cfg["feature_dim"] == 24
    pc = cfg["pretrained_cfg"]
    assert pc["input_size"] == [3, 32, 32] and pc["mean"] == TRANSFORMS["mean"] and pc["std"] == TRANSFORMS["std"]
    assert pc["num_classes"] == 0 and "num_classes" not in cfg  # timm builds no classifier
    keys = list(load_file(str(folder / "model.safetensors")))
    assert "cls_token" in keys and not any(k.startswith(("backbone.", "model.")) for k in keys)
    assert "timm.create_model(" in (folder / "README.md").read_text()


def test_timm_loads_the_file_strictly(vit_ckpt) -> None:
    ours, folder = vit_ckpt
    model = _load_strictly(lambda: timm.create_model(
        NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")), num_classes=0,
        **KW))
    _assert_same(model, ours)


def test_timm_loads_from_the_loopback_hub(vit_ckpt, hub) -> None:
    ours, folder = vit_ckpt
    push_to_hub(folder, "org/bt-vit-tiny", revision_tag="v1")
    model = _load_strictly(lambda: timm.create_model("hf-hub:org/bt-vit-tiny", pretrained=True))
    assert model.num_classes == 0 and model.pretrained_cfg["input_size"] == (3, 32, 32)
    _assert_same(model, ours)
    again = from_pretrained("org/bt-vit-tiny", revision="v1")  # and ours from the same repo
    _assert_same(again, ours)


def test_from_pretrained_and_torch_hub_load(vit_ckpt) -> None:
    ours, folder = vit_ckpt
    backbone = mvssl_hub.from_pretrained(str(folder))
    assert isinstance(backbone, TimmBackbone)
    _assert_same(backbone, ours)
    ssl = mvssl_hub.from_pretrained(str(folder), with_projector=True, arch=f"timm:{NAME}", arch_kwargs=KW)
    torch.testing.assert_close(ssl(X[None]), ours(X[None]), atol=1e-6, rtol=0)
    hubbed = torch.hub.load(str(ROOT), "from_pretrained", str(folder), source="local")
    _assert_same(hubbed, ours)


def test_a_convnext_round_trips(tmp_path: Path) -> None:
    kw = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}
    backbone = mvssl_hub.build_backbone("timm:convnext_atto", arch_kwargs=kw).eval()
    folder = save_pretrained(backbone, tmp_path / "cnx")
    plain = _load_strictly(lambda: timm.create_model(
        "convnext_atto", pretrained=True, pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")),
        num_classes=0, **kw))
    torch.testing.assert_close(plain(X), backbone(X), atol=1e-6, rtol=0)
    torch.testing.assert_close(mvssl_hub.from_pretrained(str(folder))(X), backbone(X), atol=1e-6, rtol=0)


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def test_kwargs_that_disagree_with_the_weights_are_refused_before_allocating(tmp_path: Path) -> None:
    backbone = mvssl_hub.build_backbone(f"timm:{NAME}", arch_kwargs=KW)
    folder = save_pretrained(backbone, tmp_path / "bb")
    # a 65,536-wide ViT: ~100 G parameters if anything were allocated; the meta device only shapes it
    huge = {**KW, "embed_dim": 65536}
    _edit_config(folder, **{"backbone.kwargs": huge, "model_args": huge, "feature_dim": 65536, "num_features": 65536})
    with pytest.raises(CheckpointError, match=r"(?s)do not match the model .*'cls_token': expected shape \[1, 1, 65536\], "
                                              r"found \[1, 1, 24\]"):
        from_pretrained(str(folder))
    _edit_config(folder, **{"backbone.kwargs": KW, "model_args": KW, "feature_dim": 25, "num_features": 24})
    with pytest.raises(CheckpointError, match=r"feature_dim = 25 but backbone .* gives 24 features"):
        from_pretrained(str(folder))


def test_bad_timm_configs_are_refused_naming_the_field(tmp_path: Path) -> None:
    folder = save_pretrained(mvssl_hub.build_backbone(f"timm:{NAME}", arch_kwargs=KW), tmp_path / "bb")
    good = json.loads((folder / "config.json").read_text())

    def refused(match: str, error: type[Exception] = CheckpointError, **changes) -> None:
        (folder / "config.json").write_text(json.dumps(good))
        _edit_config(folder, **changes)
        with pytest.raises(error, match=match):
            from_pretrained(str(folder))

    refused(r"unknown timm model .vit_tiny_patch16_24.", UnknownModelError,
            **{"backbone.arch": "timm:vit_tiny_patch16_24", "architecture": "vit_tiny_patch16_24"})
    refused(r"field architecture = 'resnet50': must be the backbone's timm model", architecture="resnet50")
    refused(r"field model_args = .*must equal the backbone's timm arguments", model_args={**KW, "depth": 3})
    refused(r"does not take the keyword argument 'patch_sise'",
            **{"backbone.kwargs": {**KW, "patch_sise": 4}, "model_args": {**KW, "patch_sise": 4}})
    refused(r"pretrained_cfg.num_classes = 1000: must be 0", **{"pretrained_cfg.num_classes": 1000})
    refused(r"pretrained_cfg has unknown key\(s\) \['url'\]", **{"pretrained_cfg.url": "https://example.com/w.pth"})
    refused(r"needs field\(s\) \['pretrained_cfg'\]", pretrained_cfg=None)


def test_a_resnet_timm_cannot_build_may_not_carry_timm_keys(tiny_ckpt: Path) -> None:
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert "architecture" not in cfg  # width 8, small-image stem: nothing for timm
    _edit_config(tiny_ckpt, architecture="resnet18")
    with pytest.raises(CheckpointError, match=r"\['architecture'\] are what timm reads, but timm cannot build"):
        from_pretrained(str(tiny_ckpt))


# --------------------------------------------------- the zoo's ResNets with torchvision's stem, in timm

def test_a_full_width_standard_stem_resnet_carries_timms_keys_and_loads_in_timm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = mvssl_hub.build_backbone("resnet18", small_images=False).eval()
    folder = save_pretrained(backbone, tmp_path / "r18", transforms=TRANSFORMS)
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["architecture"], cfg["num_features"], cfg["model_args"]) == ("resnet18", 512, {})
    assert cfg["pretrained_cfg"]["mean"] == TRANSFORMS["mean"] and "num_classes" not in cfg
    plain = _load_strictly(lambda: timm.create_model(f"local-dir:{folder}", pretrained=True))
    _assert_same(plain, backbone)
    good = dict(cfg)
    for changes, match in (({"architecture": "resnet34"}, r"field architecture = 'resnet34': must be the backbone's"),
                           ({"model_args": {"drop_rate": 0.1}}, r"field model_args = .*must equal the backbone's"),
                           ({"pretrained_cfg": None}, r"needs field\(s\) \['pretrained_cfg'\]"),
                           ({"num_classes": None}, r"num_classes .*must be left out")):
        (folder / "config.json").write_text(json.dumps(good))
        _edit_config(folder, **changes)
        with pytest.raises(CheckpointError, match=match):
            from_pretrained(str(folder))


def test_the_flagship_loads_in_timm_from_the_loopback_hub_with_our_features(hub) -> None:
    weights = mvssl_hub.get_model_weights("barlowtwins_resnet18_cifar10").DEFAULT
    ours = mvssl_hub.get_model("barlowtwins_resnet18_cifar10", weights=weights)
    push_to_hub(weights.value.bundled_path(), "org/flagship", revision_tag="v1")  # the bundled repo, as published
    plain = _load_strictly(lambda: timm.create_model("hf-hub:org/flagship", pretrained=True))
    assert type(plain).__module__.startswith("timm.") and tuple(plain.pretrained_cfg["input_size"]) == (3, 32, 32)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = weights.transforms()(images)
    assert torch.equal(plain.eval()(x), ours(x))

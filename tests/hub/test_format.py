"""The local checkpoint format: round trips, torchvision compatibility, atomic saves, and every bad input."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mvssl_hub
from mvssl_hub import safe_io
from mvssl_hub.backbones import ResNetBackbone, build_backbone, torchvision_compatible
from mvssl_hub.errors import CheckpointError, IntegrityError, UnknownModelError
from mvssl_hub.hub.format import refresh_checkpoint, save_pretrained, update_metrics
from mvssl_hub.hub.loading import from_pretrained
from mvssl_hub.hub.schema import load_config
from mvssl_hub.models import SSLModel

from conftest import same_state

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _rewrite_model(folder: Path, tensors: dict[str, torch.Tensor], name: str = "model.safetensors") -> None:
    """Replace a weights file and record its new sha256/size, so only the intended defect remains."""
    save_file(tensors, str(folder / name))
    _rehash(folder, name)


def _rehash(folder: Path, name: str = "model.safetensors") -> None:
    cfg = json.loads((folder / "config.json").read_text())
    data = (folder / name).read_bytes()
    cfg["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (folder / "config.json").write_text(json.dumps(cfg))


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


# ----------------------------------------------------------------------------------------- round trips

def test_save_load_round_trip(tiny_model, tiny_ckpt):
    assert sorted(p.name for p in tiny_ckpt.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "projector.safetensors"]
    backbone = from_pretrained(tiny_ckpt)
    assert isinstance(backbone, ResNetBackbone) and not backbone.training
    assert torch.equal(backbone(X), tiny_model.backbone(X))
    full = from_pretrained(tiny_ckpt, with_projector=True)
    assert isinstance(full, SSLModel)
    views = X.unsqueeze(0).expand(2, -1, -1, -1, -1)
    assert torch.equal(full(views), tiny_model(views))
    assert backbone.mvssl_config == load_config(tiny_ckpt)


def test_config_records_everything(tiny_ckpt):
    cfg = load_config(tiny_ckpt)
    assert cfg["backbone"] == {"arch": "resnet18", "small_images": True, "width": 8}
    assert cfg["feature_dim"] == 64 and cfg["projector"] == "64-32-32"
    assert (cfg["method"], cfg["beta"], cfg["num_views"], cfg["dtype"]) == ("barlowtwins", 0.02, 4, "float32")
    assert cfg["dataset"]["id"] == "uoft-cs/cifar10" and cfg["transforms"]["preset"] == "cifar10"
    assert cfg["library_version"] == mvssl_hub.__version__
    assert cfg["train_config"]["lr"] == 1e-3 and cfg["training"]["images_per_s"] == 800.0
    for name in ("model.safetensors", "projector.safetensors"):
        data = (tiny_ckpt / name).read_bytes()
        assert cfg["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    # torchvision key names, float32, no wrapper prefixes
    state = load_file(str(tiny_ckpt / "model.safetensors"))
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


def test_full_width_backbone_loads_strictly_into_plain_torchvision():
    torch.manual_seed(0)
    ours = build_backbone("resnet18", small_images=True, width=64).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_pretrained(ours, Path(d) / "ckpt")
        plain = torchvision_compatible("resnet18", small_images=True).eval()
        result = plain.load_state_dict(load_file(str(Path(d) / "ckpt" / "model.safetensors")), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(plain(x), ours(x))


def test_bfloat16_save_declares_dtype_and_loads(tiny_model, tmp_path):
    d = save_pretrained(tiny_model, tmp_path / "bf16", dtype=torch.bfloat16)
    assert load_config(d)["dtype"] == "bfloat16"
    assert load_file(str(d / "model.safetensors"))["conv1.weight"].dtype == torch.bfloat16
    loaded = from_pretrained(d)
    assert loaded.conv1.weight.dtype == torch.float32
    ref = {k: v.to(torch.bfloat16).float() if v.is_floating_point() else v
           for k, v in tiny_model.backbone.state_dict().items()}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ref.items())


def test_wrapper_prefixes_are_stripped(tiny_model, tiny_ckpt):
    state = load_file(str(tiny_ckpt / "model.safetensors"))
    _rewrite_model(tiny_ckpt, {f"module._orig_mod.{k}": v for k, v in state.items()})
    assert same_state(from_pretrained(tiny_ckpt), tiny_model.backbone)
    wrapped = torch.nn.DataParallel(tiny_model.backbone)
    d = save_pretrained(wrapped, tiny_ckpt.parent / "from_wrapped")
    assert "conv1.weight" in load_file(str(d / "model.safetensors"))


def test_card_parses_and_matches_config(tiny_ckpt):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_ckpt / "README.md")
    cfg = load_config(tiny_ckpt)
    assert card.data.library_name == "mvssl-hub" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.datasets == ["uoft-cs/cifar10"]
    results = {r.metric_config: r for r in card.data.eval_results}
    assert len(results) == len(cfg["metrics"]) == 2
    for m in cfg["metrics"]:
        r = results[f"{m['task']}/{m['metric']}"]
        assert (r.metric_value, r.dataset_type, r.dataset_split) == (m["value"], m["dataset"], m["split"])
        assert r.metric_args["random_init"] == m["random_init"]
    body = card.text
    for needle in ("mvssl_hub.from_pretrained(", "get_model(\"barlowtwins_resnet18\"", "torch.hub.load(",
                   "accelerate launch recipes/pretrain.py --config recipes/configs/demo.yaml", "800.0 images/s",
                   "+11.25", "## Limitations", cfg["files"]["model.safetensors"]["sha256"]):
        assert needle in body, needle


def test_card_names_the_zoo_builder_it_is_published_under(tiny_ckpt):
    from mvssl_hub.hub.card import builder_name, render_card

    cfg = load_config(tiny_ckpt)
    generic = render_card(cfg, repo_id="org/name")
    bb = cfg["backbone"]
    kwargs = f", small_images={bb['small_images']}, width={bb['width']}"
    assert f'get_model("{builder_name(cfg)}", weights="DEFAULT"{kwargs})' in generic
    named = render_card(cfg, repo_id="org/name", builder="barlowtwins_resnet18_cifar10")  # it fixes stem and width
    assert 'get_model("barlowtwins_resnet18_cifar10", weights="DEFAULT")' in named
    assert '"barlowtwins_resnet18_cifar10", source="local", weights="DEFAULT")' in named
    assert render_card(cfg, repo_id="org/name", builder=builder_name(cfg)) == generic
    assert "mvssl_hub.weights" not in generic  # the old module path


def test_card_gives_a_reproduction_from_the_checkout_root_and_names_its_clock(tiny_ckpt):
    from mvssl_hub.hub.card import render_card, reproduction_command

    cfg = load_config(tiny_ckpt)
    chunk = ("accelerate launch recipes/pretrain.py --config barlowtwins_resnet18_cifar10.yaml --output_dir out "
             "--time_budget 440.0 --clock wall --epochs 45 --resume")
    cfg["train_config"] = {**cfg["train_config"], "command": chunk, "epochs": 45, "clock": "wall"}
    cfg["training"] = {**cfg["training"], "epochs": 45.0, "wall_clock_s": 407.5}
    # the preset by its path from the root; the chunk's --resume and (the schedule having ended) its budget left out
    assert reproduction_command(cfg) == ("accelerate launch recipes/pretrain.py --config "
                                         "recipes/configs/zoo/barlowtwins_resnet18_cifar10.yaml --output_dir out "
                                         "--clock wall --epochs 45")
    assert "| training time | 408 s of training, wall clock (evaluation and saving excluded) |" in render_card(cfg)
    cfg["training"]["epochs"] = 38.2  # stopped by its budget: the budget is part of what the run was
    assert "--time_budget 440.0" in reproduction_command(cfg) and "--resume" not in reproduction_command(cfg)
    cfg["train_config"]["clock"] = "process"
    assert "| training time | 408 CPU-seconds of training (the process's CPU time; evaluation and saving excluded) |" \
        in render_card(cfg)


def test_refresh_adds_what_this_version_derives_and_keeps_the_weights(tmp_path):
    torch.manual_seed(0)
    folder = save_pretrained(build_backbone("resnet18", small_images=False), tmp_path / "r18")
    old = json.loads((folder / "config.json").read_text())
    for key in ("architecture", "num_features", "model_args", "pretrained_cfg"):
        del old[key]
    old["num_classes"] = None  # as a checkpoint written before ResNets carried timm's keys
    (folder / "config.json").write_text(json.dumps(old))
    weights = (folder / "model.safetensors").read_bytes()
    assert refresh_checkpoint(folder) is True
    cfg = load_config(folder)
    assert cfg["architecture"] == "resnet18" and "num_classes" not in cfg
    assert {k: v for k, v in cfg.items() if k in old} == {k: v for k, v in old.items() if k != "num_classes"}
    assert (folder / "model.safetensors").read_bytes() == weights
    assert "timm.create_model(\"hf-hub:" in (folder / "README.md").read_text()
    assert refresh_checkpoint(folder) is False  # nothing left to bring up to date


def test_update_metrics_merges_and_regenerates_card(tiny_ckpt):
    from huggingface_hub import ModelCard

    weights_before = (tiny_ckpt / "model.safetensors").read_bytes()
    update_metrics(tiny_ckpt, [
        {"task": "knn", "metric": "top1", "value": 50.0, "random_init": 30.25, "dataset": "uoft-cs/cifar10",
         "split": "test", "protocol": "k=200, T=0.1, cosine", "date": "2026-11-22"},
        {"task": "knn", "metric": "top5", "value": 90.0, "random_init": None, "dataset": "uoft-cs/cifar10",
         "split": "test", "protocol": "k=200, T=0.1, cosine", "date": "2026-11-22"},
    ])
    cfg = load_config(tiny_ckpt)
    by_key = {(m["task"], m["metric"]): m["value"] for m in cfg["metrics"]}
    assert by_key == {("knn", "top1"): 50.0, ("linear_probe", "top1"): 45.0, ("knn", "top5"): 90.0}
    card = ModelCard.load(tiny_ckpt / "README.md")
    assert {r.metric_config: r.metric_value for r in card.data.eval_results} == {
        "knn/top1": 50.0, "linear_probe/top1": 45.0, "knn/top5": 90.0}
    assert "+19.75" in card.text
    assert (tiny_ckpt / "model.safetensors").read_bytes() == weights_before
    with pytest.raises(CheckpointError, match="task='kmeans'"):
        update_metrics(tiny_ckpt, [{"task": "kmeans", "metric": "top1", "value": 1.0, "dataset": "d", "split": "s"}])


# -------------------------------------------------------------------------------------------- atomicity

def test_failed_save_leaves_previous_checkpoint_intact(tiny_model, tiny_ckpt, monkeypatch):
    before = {p.name: p.read_bytes() for p in tiny_ckpt.iterdir()}
    real_write, calls = safe_io.write_file, []

    def failing_write(path, data):
        calls.append(path.name)
        if len(calls) == 2:  # the first file is written, the crash hits the second
            real_write(path, data[: len(data) // 2])
            raise OSError("disk full (injected)")
        real_write(path, data)

    monkeypatch.setattr(safe_io, "write_file", failing_write)
    other = build_backbone("resnet18", width=8)
    with pytest.raises(OSError, match="injected"):
        save_pretrained(other, tiny_ckpt)
    assert {p.name: p.read_bytes() for p in tiny_ckpt.iterdir()} == before
    assert [p.name for p in tiny_ckpt.parent.iterdir() if p.name.startswith(".ckpt")] == []
    assert same_state(from_pretrained(tiny_ckpt), tiny_model.backbone)


def test_overwrite_keeps_foreign_files_and_replaces_checkpoint(tiny_ckpt):
    (tiny_ckpt / "train_log.txt").write_text("step 1\n")
    other = build_backbone("resnet18", width=8).eval()
    save_pretrained(other, tiny_ckpt)
    assert (tiny_ckpt / "train_log.txt").read_text() == "step 1\n"
    assert not (tiny_ckpt / "projector.safetensors").exists()  # the new checkpoint has no projector
    assert same_state(from_pretrained(tiny_ckpt), other)
    assert [p.name for p in tiny_ckpt.parent.iterdir() if p.name.startswith(".ckpt")] == []


# ------------------------------------------------------------------------------------------- bad inputs

# a 9-element float32 tensor that claims 4 bytes of data
_BAD_ENTRY = json.dumps({"conv1.weight": {"dtype": "F32", "shape": [9], "data_offsets": [0, 4]}}).encode()

def test_truncated_file(tiny_ckpt):
    data = (tiny_ckpt / "model.safetensors").read_bytes()
    (tiny_ckpt / "model.safetensors").write_bytes(data[:-1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated.*describes \d+ bytes"):
        from_pretrained(tiny_ckpt)


@pytest.mark.parametrize("content, message", [
    (struct.pack("<Q", 2**40) + b"{}", "declares a 1099511627776-byte header"),
    (struct.pack("<Q", 8) + b"not json" + b"\0" * 16, "not JSON"),
    (b"", "0 bytes, too short"),
    (struct.pack("<Q", 2) + b"[]", "expected a JSON object"),
    (struct.pack("<Q", len(_BAD_ENTRY)) + _BAD_ENTRY + b"\0" * 4, "bad entry for tensor 'conv1.weight'"),
])
def test_corrupted_header(tiny_ckpt, content, message):
    (tiny_ckpt / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(tiny_ckpt)


def test_flipped_data_byte_is_caught_by_sha256(tiny_ckpt):
    path = tiny_ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    load_file(str(path))  # safetensors alone accepts the corrupted file
    with pytest.raises(IntegrityError, match=r"model\.safetensors: sha256 [0-9a-f]{64} does not match"):
        from_pretrained(tiny_ckpt)


def test_wrong_shapes_listed_with_expected_and_found(tiny_ckpt):
    wide = build_backbone("resnet18", width=16).state_dict()
    _rewrite_model(tiny_ckpt, wide)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(tiny_ckpt)
    msg = str(info.value)
    assert "'conv1.weight': expected shape [8, 3, 3, 3], found [16, 3, 3, 3]" in msg
    assert "'layer4.1.bn2.running_var': expected shape [64], found [128]" in msg
    assert "width=8" in msg  # what the config said


def test_wrong_dtypes(tiny_ckpt):
    state = load_file(str(tiny_ckpt / "model.safetensors"))
    state["conv1.weight"] = state["conv1.weight"].half()
    state["bn1.num_batches_tracked"] = state["bn1.num_batches_tracked"].int()
    _rewrite_model(tiny_ckpt, state)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(tiny_ckpt)
    msg = str(info.value)
    assert "2 tensor(s)" in msg
    assert "'conv1.weight': expected dtype torch.float32, found F16" in msg
    assert "'bn1.num_batches_tracked': expected dtype torch.int64, found I32" in msg


def test_missing_and_unexpected_keys_in_one_error(tiny_ckpt):
    state = load_file(str(tiny_ckpt / "model.safetensors"))
    del state["layer1.0.conv1.weight"]
    state["fc.weight"] = torch.zeros(10, 64)
    _rewrite_model(tiny_ckpt, state)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(tiny_ckpt)
    msg = str(info.value)
    assert "missing key 'layer1.0.conv1.weight': expected shape [8, 8, 3, 3]" in msg
    assert "unexpected key 'fc.weight': found shape [10, 64]" in msg


def test_nan_and_inf_rejected(tiny_ckpt):
    state = load_file(str(tiny_ckpt / "model.safetensors"))
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    state["layer2.0.bn1.running_var"][3] = float("inf")
    _rewrite_model(tiny_ckpt, state)
    with pytest.raises(CheckpointError, match=r"NaN/Inf in 2 tensor\(s\): 'conv1.weight' \(1 values\), "
                                              r"'layer2.0.bn1.running_var' \(1 values\)"):
        from_pretrained(tiny_ckpt)


def test_unknown_architecture_suggests_close_matches(tiny_ckpt):
    _edit_config(tiny_ckpt, backbone={"arch": "resnet19", "small_images": True, "width": 8})
    with pytest.raises(UnknownModelError, match=r"config\.json: field 'backbone': unknown architecture 'resnet19'; "
                                                r"did you mean 'resnet18'"):
        from_pretrained(tiny_ckpt)


def test_missing_config(tiny_ckpt):
    (tiny_ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json: missing"):
        from_pretrained(tiny_ckpt)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.write_text("{not json"), "invalid JSON"),
    (lambda p: _edit_config(p.parent, learning_rate=0.1), r"unknown field\(s\) \['learning_rate'\]"),
    (lambda p: _edit_config(p.parent, num_views="four"), "field 'num_views' = 'four' has type str, expected int"),
    (lambda p: _edit_config(p.parent, feature_dim=512), "feature_dim = 512 disagrees"),
    (lambda p: _edit_config(p.parent, dtype="int8"), "dtype = 'int8'"),
    (lambda p: _edit_config(p.parent, method="simclr"), "method = 'simclr'"),
])
def test_invalid_config(tiny_ckpt, mutate, message):
    mutate(tiny_ckpt / "config.json")
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(tiny_ckpt)


def test_config_arch_disagreeing_with_weights(tiny_ckpt):
    _edit_config(tiny_ckpt, backbone={"arch": "resnet34", "small_images": True, "width": 8}, feature_dim=64)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(tiny_ckpt)
    msg = str(info.value)
    assert "arch=resnet34" in msg and "missing key 'layer3.5.conv1.weight'" in msg


@pytest.mark.parametrize("kwargs, message", [
    ({"proj_dim": 128}, "proj_dim=128 was asked for, but the checkpoint .* has proj_dim=32"),
    ({"small_images": False}, "small_images=False was asked for, but the checkpoint .* has small_images=True"),
    ({"width": 64}, "width=64 was asked for, but .* has width=8"),
    ({"method": "vicreg"}, "method='vicreg' was asked for, but .* has method='barlowtwins'"),
])
def test_kwargs_contradicting_weights(tiny_ckpt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        from_pretrained(tiny_ckpt, **kwargs)


def test_agreeing_kwargs_and_unknown_kwarg(tiny_model, tiny_ckpt):
    assert same_state(from_pretrained(tiny_ckpt, width=8, proj_dim=32, arch="resnet18"), tiny_model.backbone)
    with pytest.raises(TypeError, match="colour"):
        from_pretrained(tiny_ckpt, colour="red")


def test_projector_not_saved(tiny_model, tmp_path):
    d = save_pretrained(tiny_model, tmp_path / "noproj")
    with pytest.raises(CheckpointError, match="projector.safetensors was not saved.*include_projector=True"):
        from_pretrained(d, with_projector=True)


@pytest.fixture
def no_unpickling(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)


def test_pickle_files_refused_unread(tiny_ckpt, tmp_path, no_unpickling):
    # a folder with only a pickle checkpoint
    pick = tmp_path / "pickled"
    pick.mkdir()
    (pick / "pytorch_model.bin").write_bytes(b"\x80\x04\x95 whatever")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refusing a \.bin file"):
        from_pretrained(pick)
    # a .pt file given directly
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(CheckpointError, match=r"model\.pt: refusing a \.pt file"):
        from_pretrained(tmp_path / "model.pt")
    # a torch.save zip archive / pickle stream renamed to model.safetensors: caught by magic bytes
    with zipfile.ZipFile(tiny_ckpt / "model.safetensors", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    _rehash(tiny_ckpt)
    with pytest.raises(CheckpointError, match=r"zip archive \(torch\.save format\).*refusing to unpickle"):
        from_pretrained(tiny_ckpt)
    (tiny_ckpt / "model.safetensors").write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00.")
    _rehash(tiny_ckpt)
    with pytest.raises(CheckpointError, match="a pickle stream"):
        from_pretrained(tiny_ckpt)


def test_projector_512_round_trip_not_mistaken_for_pickle(tmp_path):
    # a 512-512-512 projector's safetensors header is 640 bytes: the file starts b"\x80\x02", like a pickle
    model = mvssl_hub.build_ssl_model("resnet18", proj_dim=512)
    d = save_pretrained(model, tmp_path / "p512", include_projector=True)
    assert (d / "projector.safetensors").read_bytes()[:2] == b"\x80\x02"
    loaded = from_pretrained(d, with_projector=True)
    assert same_state(loaded.projector, model.projector)


@pytest.mark.parametrize("header_len", [640, 896, 1152, 1408])
def test_safetensors_with_pickle_like_header_length_accepted(tmp_path, header_len, no_unpickling):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (header_len - len(header))
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + header + struct.pack("<2f", 1.0, 2.0))
    assert path.read_bytes()[0] == 0x80 and 2 <= path.read_bytes()[1] <= 5
    safe_io.refuse_pickle(path)  # does not raise
    assert list(safe_io.read_safetensors_header(path).tensors) == ["w"]
    assert load_file(str(path))["w"].tolist() == [1.0, 2.0]


def test_nonexistent_source(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"nope/deeper': no such folder"):
        from_pretrained(str(tmp_path / "nope" / "deeper"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^'runs/typo': no such folder"):  # no Hub request for it
        from_pretrained("runs/typo")
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a Hub repo id"):
        from_pretrained("not an id")


def test_save_rejects_bad_metadata(tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match=r"value=140\.0 must be an accuracy in percent"):
        save_pretrained(tiny_model, tmp_path / "x", metrics=[
            {"task": "knn", "metric": "top1", "value": 140.0, "dataset": "d", "split": "test"}])
    with pytest.raises(ValueError, match="include_projector=True needs an SSLModel"):
        save_pretrained(tiny_model.backbone, tmp_path / "y", include_projector=True)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_transforms_from_a_view_preset_round_trip_and_bad_nested_types(tmp_path: Path) -> None:
    from mvssl_hub.views import get_view_preset

    preset = get_view_preset("cifar10")
    transforms = {"preset": "cifar10", "eval_size": preset.eval_size, "eval_resize": preset.eval_resize,
                  "mean": list(preset.mean), "std": list(preset.std)}
    assert transforms["eval_resize"] is None  # CIFAR is evaluated at its own size: no resize
    folder = save_pretrained(build_backbone("resnet18", width=8), tmp_path / "ok", transforms=transforms)
    assert load_config(folder)["transforms"]["eval_resize"] is None
    with pytest.raises(CheckpointError, match=r"transforms.eval_size = '32' has type str, expected int"):
        save_pretrained(build_backbone("resnet18", width=8), tmp_path / "bad", transforms={**transforms, "eval_size": "32"})
    assert not (tmp_path / "bad").exists()

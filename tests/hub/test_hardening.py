"""Malformed checkpoints, one test per hardening rule: every parser error wrapped, config.json bounded and
range-checked, file metadata agreeing with config.json, shapes checked before any allocation, no bad bytes
left in the Hub cache, exact reports for directories and FIFOs where files should be."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from mvssl_hub.errors import CheckpointError, IntegrityError
from mvssl_hub.hub.loading import from_pretrained
from mvssl_hub.hub.schema import load_config
from mvssl_hub.safe_io import sha256_file

from conftest import same_state

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def _rewrite_config(ckpt: Path, mutate) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    mutate(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def _replace_weights(ckpt: Path, name: str, raw: bytes) -> None:
    """Put ``raw`` in place of a weights file and record its sha256/size, so only the content is at fault."""
    (ckpt / name).write_bytes(raw)
    _rewrite_config(ckpt, lambda c: c["files"][name].update(sha256=sha256_file(ckpt / name), size=len(raw)))


def _safetensors(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


# ------------------------------------------------------------------------- every parser error is wrapped

@pytest.mark.parametrize("header, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, r"tensor 'b' at bytes \[4, 12\) overlaps"),
    ({"__metadata__": {"format": 3}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
     "__metadata__ must map strings to strings"),
    ({"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, "bad entry for tensor 'a'"),
    ({"a": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, "bad entry for tensor 'a'"),
])
def test_safetensors_header_errors_are_checkpoint_errors(tiny_ckpt, header, message):
    _replace_weights(tiny_ckpt, "model.safetensors", _safetensors(header, b"\0" * 12))
    with pytest.raises(CheckpointError, match=message) as info:
        from_pretrained(tiny_ckpt)
    assert "model.safetensors" in str(info.value)


def test_duplicate_keys_in_a_safetensors_header(tiny_ckpt):
    h = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    _replace_weights(tiny_ckpt, "model.safetensors", struct.pack("<Q", len(h)) + h + b"\0")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*duplicate key 'a'"):
        from_pretrained(tiny_ckpt)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply|nested .* levels deep"),
    ('{"beta": 1e999}', "overflows"),
    ('{"beta": ' + "9" * 5000 + "}", "invalid JSON"),
    ('{"beta": NaN}', "not a finite number"),
    ('{"format": "mvssl-hub", "format": "other"}', "duplicate key 'format'"),
    ('{"a": ' * 40 + "1" + "}" * 40, "40 levels deep"),
])
def test_pathological_config_json_is_a_checkpoint_error(tiny_ckpt, text, message):
    (tiny_ckpt / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message) as info:
        from_pretrained(tiny_ckpt)
    assert "config.json" in str(info.value)


def test_oversized_config_json_is_refused_unread(tiny_ckpt):
    (tiny_ckpt / "config.json").write_bytes(b" " * (5 << 20) + b"{}")
    with pytest.raises(CheckpointError, match=r"config\.json: 5242882 bytes, over the 4194304-byte limit"):
        from_pretrained(tiny_ckpt)


# ------------------------------------------------------------------------------------------ range checks

@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(beta=-0.5), "field beta = -0.5: must be a finite number in"),
    (lambda c: c.update(beta=1e30), "field beta = 1e\\+30"),
    (lambda c: c.update(num_views=0), "field num_views = 0: must be in 2..1024"),
    (lambda c: c["backbone"].update(width=0), "field backbone.width = 0: must be an int in 1..1024"),
    (lambda c: c["backbone"].update(width=100_000), "field backbone.width = 100000"),
    (lambda c: c["dataset"].update(fraction=2.0), "field dataset.fraction = 2.0: must be in \\(0, 1\\]"),
    (lambda c: c["transforms"].update(eval_size=0), "field transforms.eval_size = 0"),
    (lambda c: c["transforms"].update(std=[0.2, 0.0, 0.2]), "field transforms.std .* must be > 0"),
    (lambda c: c["transforms"].update(mean=[0.5, 0.5]), "field transforms.mean .* must be 3 finite numbers"),
    (lambda c: c["training"].update(wall_clock_s=-3), "field training.wall_clock_s = -3"),
    (lambda c: c["files"]["model.safetensors"].update(size=-1), "needs a 64-hex 'sha256' and an int 'size' >= 0"),
])
def test_config_values_are_range_checked(tiny_ckpt, mutate, message):
    _rewrite_config(tiny_ckpt, mutate)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(tiny_ckpt)


# ----------------------------------------------------------------------------- file metadata must agree

def test_weights_metadata_disagreeing_with_config_is_refused(tiny_ckpt):
    from safetensors import safe_open

    path = tiny_ckpt / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    save_file(tensors, str(path), metadata={**meta, "arch": "resnet50"})
    _replace_weights(tiny_ckpt, "model.safetensors", path.read_bytes())
    with pytest.raises(CheckpointError, match=r"metadata says arch='resnet50' but .*config\.json says arch='resnet18'"):
        from_pretrained(tiny_ckpt)


# ------------------------------------------------------------------------ shapes before any allocation

def test_tiny_file_with_a_huge_config_is_refused_without_allocating(tiny_ckpt):
    """A 1 KB config asking for the widest network allowed (ResNet-50 x16: ~6 G parameters, ~24 GB) next to a
    tiny weights file: refused from the header in under a second, peak RSS up by less than 100 MB."""
    _rewrite_config(tiny_ckpt, lambda c: (c["backbone"].update(arch="resnet50", width=1024),
                                          c.update(feature_dim=8 * 1024 * 4, projector=None),
                                          c["files"].pop("projector.safetensors")))
    code = textwrap.dedent(f"""
        import json, resource, sys, time
        import torch, mvssl_hub
        from mvssl_hub.errors import CheckpointError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            mvssl_hub.from_pretrained({str(tiny_ckpt)!r})
            outcome = "loaded"
        except CheckpointError as e:
            outcome = str(e)
        print(json.dumps({{"seconds": time.perf_counter() - t, "outcome": outcome,
                          "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "tensor(s) do not match the model" in result["outcome"] and "width=1024" in result["outcome"]
    assert result["seconds"] < 1.0, result
    assert result["grew_mb"] < 100, result


# ---------------------------------------------------------------------------- no bad bytes in the cache

def test_a_bad_download_leaves_nothing_in_the_cache(pushed, hub):
    """The Hub first serves a corrupted file (content-derived ETag), then the right one: the second load works."""
    model, _, repo, commit = pushed
    hub.state.content_etags = True
    hub.state.tamper(repo, "model.safetensors")
    with pytest.raises(IntegrityError, match="removed from the cache"):
        from_pretrained(repo, "v1")
    with pytest.raises(LocalEntryNotFoundError):  # neither the snapshot link nor the blob is left behind
        hf_hub_download(repo, "model.safetensors", revision=commit, local_files_only=True)
    hub.state.tamper(repo, "model.safetensors")  # the same byte flipped back: the server is fixed
    assert same_state(from_pretrained(repo, "v1"), model.backbone)


# ------------------------------------------------------------------------------------------ exact reports

def test_a_directory_where_the_weights_file_should_be(tiny_ckpt):
    (tiny_ckpt / "model.safetensors").unlink()
    (tiny_ckpt / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: is a directory, not a regular file"):
        from_pretrained(tiny_ckpt)


def test_a_fifo_where_config_json_should_be(tiny_ckpt):
    (tiny_ckpt / "config.json").unlink()
    os.mkfifo(tiny_ckpt / "config.json")
    with pytest.raises(CheckpointError, match=r"config\.json: is a FIFO \(named pipe\), not a regular file"):
        from_pretrained(tiny_ckpt)


def test_a_fifo_where_the_weights_file_should_be(tiny_ckpt):
    cfg = load_config(tiny_ckpt)
    assert "model.safetensors" in cfg["files"]
    (tiny_ckpt / "model.safetensors").unlink()
    os.mkfifo(tiny_ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: is a FIFO"):
        from_pretrained(tiny_ckpt)


def test_meta_device_shapes_match_a_real_model():
    from mvssl_hub.hub.format import expected_state, expected_tensors
    from mvssl_hub.models import build_ssl_model

    model = build_ssl_model("resnet18", width=8, proj_dim=32)
    cfg = {"dtype": "float32", "backbone": {"arch": "resnet18", "small_images": True, "width": 8},
           "projector": model.projector.spec}
    expected = expected_tensors({**cfg, "feature_dim": 64, "num_classes": 7})
    assert expected["model.safetensors"] == expected_state(model.backbone, torch.float32)
    assert expected["projector.safetensors"] == expected_state(model.projector, torch.float32)
    assert expected["head.safetensors"] == {"weight": ((7, 64), torch.float32), "bias": ((7,), torch.float32)}

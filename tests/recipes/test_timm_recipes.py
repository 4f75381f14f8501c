"""The recipes with a timm backbone: pretrain a tiny ViT (--arch timm:<name> --arch_kwargs JSON) for a few steps,
resume it, export a folder that plain timm loads strictly with our features; evaluate and fine-tune the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import load_recipe, reset_accelerate_state

timm = pytest.importorskip("timm")
pytest.importorskip("accelerate")
pytestmark = [pytest.mark.usefixtures("fresh_accelerate_state"),
              pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")]
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "data" / "cifar10-5k"
NAME = "vit_tiny_patch16_224"
KW = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2}


def tiny_vit(out: Path, *extra: str) -> list[str]:
    """64 images, batch 16, a 2-block ViT (24 wide, 8x8 patches), 16-d projector, 3 views, fp32."""
    return ["--data", str(DATA), "--limit", "64", "--eval_limit", "40", "--knn_k", "10",
            "--arch", f"timm:{NAME}", "--arch_kwargs", json.dumps(KW), "--proj_dim", "16", "--num_views", "3",
            "--batch_size", "16", "--epochs", "10", "--precision", "fp32", "--output_dir", str(out),
            "--progress", "false", "--log_every", "1", "--run_state_every", "0", *extra]


def test_pretrain_a_timm_vit_and_timm_loads_the_export(tmp_path: Path, hub) -> None:
    import mvssl_hub

    pretrain = load_recipe("pretrain", "pretrain_recipe_timm")
    out = tmp_path / "run"
    summary = pretrain.main(tiny_vit(out, "--max_steps", "2"))
    assert summary["state"]["global_step"] == 2
    reset_accelerate_state()
    resumed = pretrain.main(tiny_vit(out, "--max_steps", "3", "--resume"))  # resume works unchanged
    assert resumed["state"]["global_step"] == 3
    export = out / "export"
    ours = mvssl_hub.from_pretrained(str(export))
    plain = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(export / "model.safetensors")),
                              num_classes=0, **KW).eval()
    sa, sb = plain.state_dict(), ours.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain(x), ours(x), atol=1e-6, rtol=0)
    # published by the recipe to the loopback Hub: timm alone loads it by repo id
    publish = load_recipe("publish", "publish_recipe_timm")
    published = publish.main([str(out), "--repo_id", "org/bt-vit-tiny"])
    assert published["entry"] is None and len(published["commit"]) == 40  # no zoo builder for a timm backbone
    from_hub = timm.create_model("hf-hub:org/bt-vit-tiny", pretrained=True).eval()
    torch.testing.assert_close(from_hub(x), ours(x), atol=1e-6, rtol=0)
    cfg = json.loads((export / "config.json").read_text())
    assert cfg["backbone"]["kwargs"] == cfg["model_args"] == KW and cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert cfg["train_config"]["arch_kwargs"] == json.dumps(KW) and cfg["metrics"][0]["task"] == "knn"

    # evaluate (kNN beside the same ViT at random init) and fine-tune the export
    evaluate = load_recipe("evaluate", "evaluate_recipe_timm")
    result = evaluate.main([str(out), "--data", str(DATA), "--limit", "100", "--protocol", "knn", "--k", "10",
                            "--bf16", "off", "--no-progress", "--no-monitors"])
    assert json.dumps(result)  # ran and reported
    reset_accelerate_state()
    finetune = load_recipe("finetune", "finetune_recipe_timm")
    finetune.main(["--model", str(export), "--data", str(DATA), "--limit", "32", "--eval_limit", "16",
                   "--batch_size", "16", "--epochs", "1", "--precision", "fp32", "--output_dir", str(tmp_path / "ft"),
                   "--progress", "false"])
    classifier = mvssl_hub.from_pretrained(str(tmp_path / "ft" / "export"))
    assert classifier(x).shape == (4, 10)


@pytest.mark.parametrize("extra, match", [
    (["--arch", "timm:vit_tiny_patch16_24"], r"config key 'arch' = 'timm:vit_tiny_patch16_24': unknown timm model "
                                            r"'vit_tiny_patch16_24'; closest: .*vit_tiny_patch16_224"),
    (["--arch", f"timm:{NAME}", "--arch_kwargs", '{"patch_sise": 4}'], r"config key 'arch_kwargs' .* does not take "
                                                                        r"the keyword argument 'patch_sise'"),
    (["--arch", f"timm:{NAME}", "--arch_kwargs", "{img_size: 32}"], r"config key 'arch_kwargs' .*not valid JSON"),
    (["--arch_kwargs", '{"img_size": 32}'], r"only timm:<name> architectures take arch_kwargs"),
    (["--arch", "resnet81"], r"unknown architecture; known: .* or timm:<name>"),
])
def test_bad_arch_flags_are_one_clear_error(extra: list[str], match: str) -> None:
    from mvssl_hub.train.config import parse_config

    pretrain = load_recipe("pretrain", "pretrain_recipe_timm")
    with pytest.raises(pretrain.ConfigError, match=match):
        parse_config(pretrain.PretrainConfig, extra)

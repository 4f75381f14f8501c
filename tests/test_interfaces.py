"""What a user of timm / torchvision / transformers expects: --help and one command-line dialect in every recipe,
packaging that never downgrades torch, published artifacts without local paths, Hub and torchvision conventions,
logs without duplicated steps and a curves figure in every run's card."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import mvssl_hub
from mvssl_hub.device import isa_capped_below_bf16
from mvssl_hub.errors import ConfigError
from mvssl_hub.train.backends import choose_precision
from mvssl_hub.train.config import parse_config

from conftest import load_recipe, reset_accelerate_state

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data" / "cifar10-5k"
RECIPES = ["pretrain", "evaluate", "finetune", "publish"]
pytestmark = [pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"), pytest.mark.usefixtures("fresh_accelerate_state")]




# ------------------------------------------------------------------------------------------- command line

@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_answers_help_with_every_key(name):
    out = subprocess.run([sys.executable, f"recipes/{name}.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: recipes/{name}.py")
    module = load_recipe(name, f"help_{name}")
    config_cls = next(v for k, v in vars(module).items() if k.endswith("Config") and isinstance(v, type))
    for field in config_cls.__dataclass_fields__:
        flag = field.upper() if field in getattr(config_cls, "POSITIONAL", ()) else f"--{field}"
        assert re.search(rf"^  {re.escape(flag)} +\S", out.stdout, re.M), f"{flag} missing from {name} --help"
    assert "-h, --help" in out.stdout


def test_help_groups_keys_by_section_with_type_default_and_description():
    text = subprocess.run([sys.executable, "recipes/pretrain.py", "-h"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120).stdout
    assert "\nmodel:\n" in text and "\nmethod:\n" in text
    lines = text.splitlines()
    i = lines.index(next(line for line in lines if line.startswith("  --num_views ")))
    assert "int; default 4" in lines[i]
    j = lines.index(next(line for line in lines if line.startswith("  --data ")))
    assert "str; default 'uoft-cs/cifar10'" in lines[j] and "Hub id" in lines[j + 1]


def test_bare_boolean_flags_and_their_negation():
    pretrain = load_recipe("pretrain", "flags_pretrain")
    cfg = parse_config(pretrain.PretrainConfig, ["--resume", "--no-progress", "--cpu", "--channels_last", "false"])
    assert (cfg.resume, cfg.progress, cfg.cpu, cfg.channels_last) == (True, False, True, False)
    evaluate = load_recipe("evaluate", "flags_evaluate")
    cfg = parse_config(evaluate.EvaluateConfig, ["runs/x", "--record", "--no-baseline"])
    assert (cfg.model, cfg.record, cfg.baseline) == ("runs/x", True, False)


def test_a_bad_loss_form_is_rejected_before_any_data_is_loaded(tmp_path):
    out = subprocess.run([sys.executable, "recipes/pretrain.py", "--data", str(tmp_path / "missing"),
                          "--loss_form", "leave_one_out"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1  # one line, no traceback
    assert "'loss_form' = 'leave_one_out': not a barlowtwins form" in out.stderr and "missing" not in out.stderr


def test_precision_follows_accelerate_launch_and_offers_fp16():
    assert choose_precision("auto", "cpu", env={"ACCELERATE_MIXED_PRECISION": "fp16"}) == "fp16"
    assert choose_precision("auto", "cpu", env={"ACCELERATE_MIXED_PRECISION": "bf16"}) == "bf16"
    assert choose_precision("fp16", "cpu", env={"ACCELERATE_MIXED_PRECISION": "fp16"}) == "fp16"
    with pytest.raises(ConfigError, match="'fp32' contradicts `accelerate launch --mixed_precision bf16`"):
        choose_precision("fp32", "cpu", env={"ACCELERATE_MIXED_PRECISION": "bf16"})
    assert choose_precision("auto", "cpu", env={"ACCELERATE_MIXED_PRECISION": "no", "ONEDNN_MAX_CPU_ISA": "AVX2"}) == "fp32"
    assert isa_capped_below_bf16({"ATEN_CPU_CAPABILITY": "avx2"}) and not isa_capped_below_bf16({})


# ---------------------------------------------------------------------------------------------- packaging

def test_packaging_never_downgrades_torch_and_declares_its_licence_and_urls(tiny_ckpt):
    from huggingface_hub import ModelCard

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0].lower(): d for d in project["dependencies"]}
    for name in ("torch", "torchvision"):
        assert "<" not in deps[name] and "==" not in deps[name], deps[name]  # lower bounds only
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert ModelCard.load(tiny_ckpt / "README.md").data.license == "apache-2.0"  # the cards declare the same
    assert {"Homepage", "Repository", "Issues"} <= set(project["urls"])
    from importlib.metadata import version

    # the lower bounds are versions this suite runs with (never above what is installed)
    for name, pin in (("huggingface_hub", deps["huggingface_hub"]),
                      ("datasets", next(d for d in project["optional-dependencies"]["train"] if d.startswith("datasets")))):
        bound = tuple(int(x) for x in pin.split(">=")[1].split("."))
        assert tuple(int(x) for x in version(name).split(".")[:len(bound)]) >= bound, (name, version(name), pin)


# ------------------------------------------------------------------------ published artifacts: no local paths

def test_a_published_folder_names_no_local_path(tmp_path):
    pretrain = load_recipe("pretrain", "portable_pretrain")
    data = tmp_path / "my data" / "cifar-copy"
    data.parent.mkdir()
    data.symlink_to(DATA, target_is_directory=True)
    out = tmp_path / "run"
    summary = pretrain.main(["--data", str(data), "--data_name", "uoft-cs/cifar10", "--limit", "64",
                             "--eval_limit", "40", "--knn_k", "5", "--width", "4", "--proj_dim", "16",
                             "--batch_size", "16", "--max_steps", "2", "--precision", "fp32", "--progress", "false",
                             "--output_dir", str(out), "--run_state_every", "0", "--cache_dir", str(tmp_path / "cache")])
    export = Path(summary["export"])
    for f in export.iterdir():
        if f.suffix in (".json", ".md"):
            text = f.read_text()
            assert str(tmp_path) not in text and str(Path.home()) + "/" not in text, f.name
    cfg = json.loads((export / "config.json").read_text())
    assert cfg["dataset"]["id"] == "uoft-cs/cifar10" and cfg["train_config"]["data"] == "uoft-cs/cifar10"
    assert cfg["metrics"][0]["dataset"] == "uoft-cs/cifar10"
    assert "--data uoft-cs/cifar10" in cfg["train_config"]["command"]  # the local copy named by its Hub id
    # the label-free measures of the final evaluation travel with the export, and the card lists them
    for space in ("backbone", "projector"):
        assert cfg["monitors"][space]["rankme"]["value"] >= 1.0 and cfg["monitors"][space]["lidar"]["value"] > 0
    assert cfg["monitors"]["protocol"]["num_images"] == 40 and "Label-free measures" in (export / "README.md").read_text()
    # every run draws its curves; the card shows them
    assert cfg["training"]["curves"] == "training_curves.png"
    assert (export / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "![Loss, kNN top-1 and throughput against training time](training_curves.png)" in (
        export / "README.md").read_text()


def test_resumed_run_logs_no_step_twice(tmp_path):
    pretrain = load_recipe("pretrain", "resume_log_pretrain")
    args = ["--data", str(DATA), "--limit", "64", "--eval_split", "", "--width", "4", "--proj_dim", "16",
            "--batch_size", "16", "--precision", "fp32", "--progress", "false", "--output_dir", str(tmp_path / "r"),
            "--log_every", "1", "--export", "false"]
    pretrain.main([*args, "--max_steps", "3", "--run_state_every", "2"])  # steps 1..3 logged, run states at 2 and 3
    (tmp_path / "r" / "run_states" / "step-00000003" / "COMPLETE.json").unlink()  # as if it crashed at step 3
    reset_accelerate_state()
    pretrain.main([*args, "--max_steps", "4", "--resume"])
    records = map(json.loads, (tmp_path / "r" / "logs" / "metrics.jsonl").read_text().splitlines())
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4], steps


# -------------------------------------------------------------------------------------- Hub conventions

def test_one_loader_and_one_pusher_take_a_model_or_a_folder(hub, tmp_path):
    """timm's shape: free functions that take the model; the model classes have no hub methods of their own."""
    torch.manual_seed(0)
    backbone = mvssl_hub.build_backbone("resnet18", width=8).eval()
    assert not any(hasattr(backbone, m) for m in ("from_pretrained", "save_pretrained", "push_to_hub"))
    transforms = {"preset": "cifar10", "eval_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    sha = mvssl_hub.push_to_hub(backbone, "org/model", revision_tag="v1", save_kwargs={"transforms": transforms})
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    folder = mvssl_hub.save_pretrained(backbone, tmp_path / "local", transforms=transforms)
    assert re.fullmatch(r"[0-9a-f]{40}", mvssl_hub.push_to_hub(folder, "org/folder", revision_tag="v1"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for source, revision in (("org/model", "v1"), ("org/folder", "v1"), (folder, None)):
        assert torch.equal(mvssl_hub.from_pretrained(source, revision, force_download=True)(x), backbone(x))
    with pytest.raises(ValueError, match="save_kwargs .*'transforms'.* pushed as it was saved"):
        mvssl_hub.push_to_hub(folder, "org/folder2", save_kwargs={"transforms": transforms})
    # the Hub arguments are named in the signatures (help() and IDEs show them), not hidden in **kwargs
    import inspect

    load, push = inspect.signature(mvssl_hub.from_pretrained), inspect.signature(mvssl_hub.push_to_hub)
    assert {"revision", "token", "cache_dir", "local_files_only", "force_download", "endpoint"} <= set(load.parameters)
    assert {"revision_tag", "token", "endpoint", "private", "commit_message"} <= set(push.parameters)
    assert not any(p.kind is p.VAR_KEYWORD for p in push.parameters.values())
    # strict: a checkpoint whose weights file lacks a key is refused, never half-loaded
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    weights.pop(next(iter(weights)))
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(mvssl_hub.CheckpointError):
        mvssl_hub.from_pretrained(folder)


def test_publish_token_reaches_every_request(hub, tiny_model, tmp_path):
    from mvssl_hub.hub.format import save_pretrained

    from conftest import TINY_SAVE_KWARGS

    publish = load_recipe("publish", "token_publish")
    save_pretrained(tiny_model, tmp_path / "run" / "export", **TINY_SAVE_KWARGS)
    hub.state.auth.clear()
    publish.main([str(tmp_path / "run"), "--repo_id", "org/with-token", "--token", "hf_explicit_token"])
    api_calls = [(m, p, a) for m, p, a in hub.state.auth if "/api/" in p or "/resolve/" in p]
    assert api_calls and all(a == "Bearer hf_explicit_token" for _, _, a in api_calls), api_calls


# --------------------------------------------------------------------------------- torchvision conventions

def test_builders_take_progress_and_keyword_only_arguments():
    with pytest.raises(TypeError):
        mvssl_hub.barlowtwins_resnet18(None)  # keyword-only, as torchvision's builders
    model = mvssl_hub.get_model("vicreg_resnet18_w16", weights=None, progress=False)
    assert model.config.width == 16 and model.feature_dim == 128
    with pytest.raises(ValueError, match="vicreg_resnet18_w16\\(\\) fixes width=16"):
        mvssl_hub.vicreg_resnet18_w16(width=32)
    enum = mvssl_hub.get_model_weights("barlowtwins_resnet18_w16")
    assert enum is mvssl_hub.get_model_weights(mvssl_hub.barlowtwins_resnet18_w16)
    for member in enum:
        assert {"backbone", "metrics", "num_params"} <= set(member.meta)
        images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
        assert member.transforms()(images).shape == (2, 3, member.meta["transforms"]["eval_size"],
                                                     member.meta["transforms"]["eval_size"])


def test_evaluate_defaults_to_the_dataset_the_checkpoint_was_trained_on():
    evaluate = load_recipe("evaluate", "data_evaluate")
    cfg = parse_config(evaluate.EvaluateConfig, ["org/model"])
    assert evaluate.resolve_data(cfg, {"id": "uoft-cs/cifar10"}) == "uoft-cs/cifar10"
    with pytest.raises(ConfigError, match="trained on 'cifar10-5k', which is not a Hub id; give --data"):
        evaluate.resolve_data(cfg, {"id": "cifar10-5k"})
    given = parse_config(evaluate.EvaluateConfig, ["org/model", "--data", "recipes/data/cifar10-5k"])
    assert evaluate.resolve_data(given, {"id": "uoft-cs/cifar10"}) == "recipes/data/cifar10-5k"


def test_every_package_of_the_library_is_installed() -> None:
    """pyproject lists the packages setuptools installs: a subpackage left out would exist only in a checkout."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mvssl_hub").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)

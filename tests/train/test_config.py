"""The dataclass config: YAML presets + --key value overrides, and every way a config can be wrong."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mvssl_hub.errors import ConfigError
from mvssl_hub.losses import recommended_beta
from mvssl_hub.train.config import config_help, config_to_dict, dump_yaml, parse_config, read_yaml

from conftest import load_recipe

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "configs"


recipe = load_recipe("pretrain", "pretrain_recipe")
PretrainConfig = recipe.PretrainConfig


@dataclass
class Small:
    name: str = "a"
    steps: int = 1
    rate: float = 0.5
    flag: bool = False
    maybe: int | None = None
    beta: float | str = "auto"


def test_precedence_defaults_yaml_then_command_line(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 5\nrate: 1e-3\nname: from_yaml\n")  # PyYAML reads 1e-3 as a string
    cfg = parse_config(Small, ["--config", str(cfg_file), "--steps", "7", "--flag", "--maybe=none", "--beta", "0.25"])
    assert cfg == Small(name="from_yaml", steps=7, rate=1e-3, flag=True, maybe=None, beta=0.25)
    cfg = parse_config(Small, ["--maybe", "3", "--flag", "false", "--beta", "auto"])
    assert (cfg.maybe, cfg.flag, cfg.beta, cfg.steps) == (3, False, "auto", 1)


def test_unknown_key_names_it_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"command line: unknown config key 'step'.*did you mean 'steps'"):
        parse_config(Small, ["--step", "3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("rates: 0.1\n")
    with pytest.raises(ConfigError, match=r"config file .*bad.yaml: unknown config key 'rates'.*'rate'"):
        parse_config(Small, ["--config", str(bad)])


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--steps", "abc"], r"'steps' got 'abc'.*expected int"),
        (["--steps", "1.5"], r"'steps' got '1.5'.*expected int"),
        (["--rate", "fast"], r"'rate' got 'fast'.*expected float"),
        (["--flag", "maybe"], r"'flag' got 'maybe'.*expected bool"),
        (["--maybe", "x"], r"'maybe' got 'x'.*expected int \| null"),
        (["--steps"], r"--steps needs a value"),
        (["steps", "3"], r"expected --key value, got 'steps'"),
    ],
)
def test_wrong_types_on_the_command_line(argv: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_config(Small, argv)


def test_wrong_types_in_yaml(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("steps: 2.5\n")
    with pytest.raises(ConfigError, match=r"t.yaml: config key 'steps' got 2.5 \(float\), expected int"):
        parse_config(Small, ["--config", str(f)])
    f.write_text("flag: 1\n")  # an int is not a bool in YAML
    with pytest.raises(ConfigError, match=r"'flag' got 1 \(int\), expected bool"):
        parse_config(Small, ["--config", str(f)])
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(Small, ["--config", str(f)])


def test_unknown_preset_file_lists_existing_ones() -> None:
    with pytest.raises(ConfigError, match=r"does not exist; files in .*configs: .*demo.yaml"):
        parse_config(PretrainConfig, ["--config", str(CONFIGS / "cifar10_nope.yaml")])


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--num_views", "1"], r"'num_views' = 1: multi-view pretraining needs at least 2 views"),
        (["--fraction", "0"], r"'fraction' = 0.0: must be in \(0, 1\]"),
        (["--beta", "big"], r"'beta' = 'big': must be a number >= 0 or 'auto'"),
        (["--beta", "-0.1"], r"'beta' = -0.1"),
        (["--method", "simclr"], r"'method' got 'simclr'.*'barlowtwins' \| 'vicreg'"),
        (["--arch", "resnet19"], r"'arch' = 'resnet19': unknown architecture"),
        (["--batch_size", "1"], r"'batch_size' = 1"),
        (["--lr", "nan"], r"'lr' = nan"),
    ],
)
def test_bad_values_are_rejected(argv: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_config(PretrainConfig, argv)


def test_every_preset_parses_and_auto_beta_is_the_recommended_one() -> None:
    # pretraining presets only (other recipes keep their presets in the same folder)
    presets = sorted(p for p in CONFIGS.glob("*.yaml")
                     if p.name in ("demo.yaml", "demo_vit.yaml") or p.name.split("_")[0] in ("cifar10", "stl10", "imagenet100"))
    assert len(presets) >= 7
    names = {p.stem for p in presets}
    for method in ("bt", "vicreg"):
        for data in ("cifar10", "stl10", "imagenet100"):
            assert any(n.startswith(f"{data}_{method}_") for n in names), (data, method, names)
    for path in presets:
        raw = read_yaml(path)
        cfg = parse_config(PretrainConfig, ["--config", str(path)])
        assert set(raw) <= set(config_to_dict(cfg))
        if cfg.beta == "auto":
            assert cfg.resolved_beta() == recommended_beta(cfg.method, cfg.proj_dim, cfg.num_views)
        else:
            assert cfg.resolved_beta() == float(cfg.beta)


def test_timm_presets_build_their_backbones() -> None:
    pytest.importorskip("timm")
    import torch

    from mvssl_hub.backbones import build_backbone
    from mvssl_hub.timm_backbone import parse_timm_kwargs

    widths = {"cifar10_vit_tiny_bt": 192, "cifar10_timm_resnet50_bt": 2048, "demo_vit": 64}
    for name, width in widths.items():
        cfg = parse_config(PretrainConfig, ["--config", str(CONFIGS / f"{name}.yaml")])
        with torch.device("meta"):
            backbone = build_backbone(cfg.arch, arch_kwargs=parse_timm_kwargs(cfg.arch_kwargs))
        assert cfg.arch.startswith("timm:") and backbone.feature_dim == width, name


def test_recommended_and_classic_presets_differ_as_in_the_paper() -> None:
    rec = parse_config(PretrainConfig, ["--config", str(CONFIGS / "cifar10_bt_d256_m4.yaml")])
    classic = parse_config(PretrainConfig, ["--config", str(CONFIGS / "cifar10_bt_d8192_m2.yaml")])
    assert (rec.num_views, rec.proj_dim, rec.beta) == (4, 256, "auto")
    assert (classic.num_views, classic.proj_dim, classic.beta) == (2, 8192, 0.0051)


def test_dump_yaml_round_trips(tmp_path: Path) -> None:
    cfg = parse_config(PretrainConfig, ["--config", str(CONFIGS / "demo.yaml"), "--beta", "0.02", "--limit", "10"])
    f = tmp_path / "resolved.yaml"
    f.write_text(dump_yaml(cfg))
    assert parse_config(PretrainConfig, ["--config", str(f)]) == cfg


# What method.md (Agrawal et al., NeurIPS 2024) sets for each preset: backbone, views, projector width,
# beta, global batch (unique images) and the Adam 1e-3 / wd 1e-6 / 100-epoch constant schedule.
PAPER_SETTINGS = {
    # name: (arch, view preset, views, d, beta, batch)
    "cifar10_bt_d256_m4": ("resnet50", "cifar10", 4, 256, 0.01, 128),       # beta retuned 0.02 -> 0.01 at 4 views
    "cifar10_bt_d8192_m2": ("resnet50", "cifar10", 2, 8192, 0.0051, 512),   # classic Barlow Twins
    "cifar10_vicreg_d256_m4": ("resnet50", "cifar10", 4, 256, 1 / 25, 128),  # tuned lambda = 25 at d = 256
    "cifar10_vicreg_d8192_m2": ("resnet50", "cifar10", 2, 8192, 1 / 25, 512),  # classic VICReg 25/25/1
    "stl10_bt_d256_m4": ("resnet50", "stl10", 4, 256, 0.01, 100),
    "stl10_bt_d8192_m2": ("resnet50", "stl10", 2, 8192, 0.0051, 400),
    "imagenet100_bt_d256_m4": ("resnet18", "imagenet100", 4, 256, 0.02, 256),   # beta*d ~ 5-14 on ImageNet-100
    "imagenet100_bt_d8192_m2": ("resnet18", "imagenet100", 2, 8192, 0.0051, 512),
}


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_presets_match_the_papers_settings(name: str) -> None:
    cfg = parse_config(PretrainConfig, ["--config", str(CONFIGS / f"{name}.yaml")])
    arch, preset, views, d, beta, batch = PAPER_SETTINGS[name]
    assert (cfg.arch, cfg.view_preset, cfg.num_views, cfg.proj_dim, cfg.batch_size) == (arch, preset, views, d, batch)
    assert cfg.resolved_beta() == pytest.approx(beta)
    assert (cfg.lr, cfg.weight_decay, cfg.epochs, cfg.schedule, cfg.small_images) == (1e-3, 1e-6, 100, "constant", True)


def test_run_cli_turns_config_errors_into_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from mvssl_hub.train.config import run_cli

    def bad() -> None:
        raise ConfigError("config key 'lr' = -1: must be a positive number")

    with pytest.raises(SystemExit) as ended:
        run_cli(bad)
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: config key 'lr' = -1: must be a positive number\n"
    ran = []
    run_cli(lambda: ran.append(1))
    assert ran == [1]


def test_old_key_names_still_work_for_a_release_with_a_warning_naming_the_new_one(tmp_path: Path) -> None:
    """The run-state flags were renamed (a checkpoint is the published export, not a step-* folder): the old names
    are accepted in a preset and on the command line until MOVED_UNTIL, each with a FutureWarning."""
    from mvssl_hub.version import MOVED_UNTIL

    preset = tmp_path / "old.yaml"
    preset.write_text("keep_checkpoints: 4\nsave_every_seconds: 30\n")
    with pytest.warns(FutureWarning, match=rf"config file .*old.yaml: config key 'keep_checkpoints' is now "
                                           rf"'keep_run_states'; the old name goes in mvssl-hub {MOVED_UNTIL}"):
        cfg = parse_config(PretrainConfig, ["--config", str(preset), "--save_every", "7"])
    assert (cfg.keep_run_states, cfg.run_state_every_seconds, cfg.run_state_every) == (4, 30.0, 7)
    with pytest.warns(FutureWarning, match="command line: config key 'keep_checkpoints' is now 'keep_run_states'"):
        cfg = parse_config(PretrainConfig, ["--config", str(preset), "--keep-checkpoints", "5"])
    assert cfg.keep_run_states == 5  # the command line still wins over the preset, whichever name each used
    assert parse_config(PretrainConfig, ["--keep_run_states", "3"]).keep_run_states == 3  # the new name: silent
    with pytest.raises(ConfigError, match=r"'keep_checkpoints' and 'keep_run_states' are one key"):
        parse_config(PretrainConfig, ["--keep_checkpoints", "2", "--keep_run_states", "3"])
    finetune = load_recipe("finetune", "finetune_recipe_old_names")
    with pytest.warns(FutureWarning, match="'save_every' is now 'run_state_every'"):
        assert parse_config(finetune.FinetuneConfig, ["m", "--save_every", "9"]).run_state_every == 9
    with pytest.raises(ConfigError, match="unknown config key 'save_every_seconds'"):  # finetune never had it
        parse_config(finetune.FinetuneConfig, ["m", "--save_every_seconds", "9"])
    help_text = config_help(PretrainConfig, "recipes/pretrain.py")
    assert "--keep_checkpoints (now --keep_run_states)" in help_text and "--run_state_every" in help_text

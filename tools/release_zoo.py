"""Release the zoo: train every entry from its preset, evaluate it, publish it, pin it, bundle it.

    python tools/release_zoo.py --data ../shared/data/cifar10                   # Hub from HF_ENDPOINT / login
    python tools/release_zoo.py --data ../shared/data/cifar10 --loopback        # offline: the project's loopback Hub
    make zoo                                                                    # the same, offline

For each entry of ``ZOO``, each step is the user-facing command, run as a subprocess:

1. ``recipes/pretrain.py --config <preset>`` (resumed when its run folder has run states; skipped when the run
   has an export and ``--retrain`` is not given). An entry trained by a campaign (``tools/campaign.py``, hours
   over many sessions, or ``tools/gpu_campaign.py`` on a remote GPU) is never trained here: its run's export
   is released as it is (the campaign's run folder, or ``--only ENTRY --run FOLDER``);
2. ``recipes/evaluate.py --record``: kNN + linear probe on the full CIFAR-10 test split (bank / probe: the
   50,000 training images), and kNN on the embedded 1,000-image test cut (bank: its 5,000 training images,
   fp32) that CI re-checks;
3. ``recipes/publish.py``: one commit + tag, the weights entry merged into ``mvssl_hub/zoo_weights.json``; an export
   written by an older version first gets what this one derives from the same record (``refresh_checkpoint``:
   timm's config.json keys, the card), its weights byte for byte unchanged;
4. the pushed repo, downloaded at the pinned revision, becomes ``mvssl_hub/bundled/<org>--<name>/`` (what
   ``get_model(..., weights=...)`` loads offline after checking every sha256), and its card is copied to
   ``model_cards/<builder>.md``.

With ``--loopback`` the Hub is tests/hub_server.py on 127.0.0.1 (same protocol as huggingface.co): the
pinned revisions are then the loopback Hub's commits. Rerunning against the real Hub re-pins them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from mvssl_hub.errors import ConfigError  # noqa: E402
from mvssl_hub.hub.format import refresh_checkpoint  # noqa: E402
from mvssl_hub.train.config import parse_config, run_cli  # noqa: E402
from mvssl_hub.train.run_state import run_states_dir  # noqa: E402

ENTRIES = ROOT / "mvssl_hub" / "zoo_weights.json"
BUNDLED = ROOT / "mvssl_hub" / "bundled"
CARDS = ROOT / "model_cards"
EMBEDDED = "recipes/data/cifar10-5k"
# builder, preset, Hub repo, enum member, trained by: "preset" (here; the run folder is the preset's output_dir) or
# "campaign" (tools/campaign.py; the run folder is the campaign's, under the long-runs home)
ZOO = [
    ("barlowtwins_resnet18_cifar10", "recipes/configs/zoo/barlowtwins_resnet18_cifar10.yaml",
     "mvssl-hub/barlowtwins-resnet18-cifar10", "CIFAR10_V1", "campaign"),
    ("barlowtwins_resnet18_w16", "recipes/configs/zoo/cifar10_bt_resnet18_w16.yaml",
     "mvssl-hub/barlowtwins-resnet18-w16-cifar10", "CIFAR10_V1", "preset"),
    ("vicreg_resnet18_w16", "recipes/configs/zoo/cifar10_vicreg_resnet18_w16.yaml",
     "mvssl-hub/vicreg-resnet18-w16-cifar10", "CIFAR10_V1", "preset"),
]


@dataclass
class ReleaseConfig:
    """What the release trains on and where it publishes."""

    data: str = "uoft-cs/cifar10"  # CIFAR-10: Hub id or a local copy in its layout
    data_name: str = "uoft-cs/cifar10"  # the name cards record
    runs: str = ""  # root that the presets' output_dir (runs/zoo/...) is relative to (default: the checkout)
    only: str = ""  # one builder name, to release just that entry
    run: str = ""  # with --only: the run folder to release (e.g. ~/.cache/mvssl-hub/campaign-gpu/ENTRY)
    retrain: bool = False  # train even when the run already has an export
    skip_eval: bool = False  # reuse the metrics already recorded in the export
    refresh_export: bool = False  # export again from the last checkpoint (a newer recipe's files), no training
    loopback: bool = False  # publish to the project's loopback Hub (offline), not HF_ENDPOINT
    endpoint: str | None = None  # Hub endpoint (default: HF_ENDPOINT or huggingface.co)
    token: str | None = None  # Hub token (default: HF_TOKEN or the saved login)


def sh(*args: str) -> None:
    """Run one recipe as a user would; its output streams through."""
    print("$ " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def run_dir(cfg: ReleaseConfig, builder: str, preset: str, trainer: str) -> Path:
    """``--run``, else the campaign's run folder (campaign entries), else the preset's output_dir under ``--runs``."""
    import yaml

    if cfg.run:
        return Path(cfg.run)
    if trainer == "campaign":
        from tools.campaign import long_runs_home

        return long_runs_home() / "campaign" / builder
    out = Path(yaml.safe_load((ROOT / preset).read_text())["output_dir"])
    return (Path(cfg.runs) if cfg.runs else ROOT) / out


def release(cfg: ReleaseConfig, builder: str, preset: str, repo_id: str, member: str, trainer: str,
            endpoint: str | None) -> None:
    run = run_dir(cfg, builder, preset, trainer)
    export = run / "export"
    if trainer == "campaign" and not cfg.only and not (export / "config.json").is_file():
        print(f"# {builder}: skipped (trained by a campaign, and this machine has no run of it; its published entry "
              "stays as it is)", flush=True)
        return
    if trainer == "campaign" and (cfg.retrain or cfg.refresh_export or not (export / "config.json").is_file()):
        raise ConfigError(f"{builder} is trained by a campaign, never here: {export / 'config.json'} not found, or "
                          f"--retrain/--refresh_export given (train it with `make campaign ENTRY={builder}` or "
                          "tools/gpu_campaign.py; then --only ENTRY [--run FOLDER])")
    hub = [*(["--endpoint", endpoint] if endpoint else []), *(["--token", cfg.token] if cfg.token else [])]
    train = ["recipes/pretrain.py", "--config", preset, "--data", cfg.data, "--data_name", cfg.data_name,
             "--output_dir", str(run), "--progress", "false"]
    if cfg.retrain or not (export / "config.json").is_file():
        sh(*train, *(["--resume"] if run_states_dir(run).is_dir() else []))
    if cfg.refresh_export or "curves" not in (json.loads((export / "config.json").read_text()).get("training") or {}):
        # exported by an older recipe: export again from the last run state, without training further
        steps = max(int(p.name.split("-")[1]) for p in run_states_dir(run).glob("step-*"))
        sh(*train, "--resume", "--max_steps", str(steps))
    if not cfg.skip_eval:
        common = ["--record", "--no-progress", "--threads", "0"]
        sh("recipes/evaluate.py", str(export), "--data", cfg.data, "--data_name", cfg.data_name, "--protocol", "both",
           *common)
        sh("recipes/evaluate.py", str(export), "--data", EMBEDDED, "--protocol", "knn", "--bf16", "off", *common)
    if refresh_checkpoint(export):
        print(f"# {export}: config.json and card brought to this version's format (weights unchanged)", flush=True)
    sh("recipes/publish.py", str(export), "--repo_id", repo_id, "--member_name", member, "--builder", builder,
       "--entries", str(ENTRIES), "--default", *hub)
    bundle(builder, repo_id, endpoint, cfg.token)


def bundle(builder: str, repo_id: str, endpoint: str | None, token: str | None) -> None:
    """The entry's repo at its pinned revision -> mvssl_hub/bundled/<org>--<name>/, card -> model_cards/."""
    from huggingface_hub import HfApi, hf_hub_download

    entry = json.loads(ENTRIES.read_text())[builder]
    pinned = entry["entries"][entry["default"]]
    files = HfApi(endpoint=endpoint, token=token).list_repo_files(repo_id, revision=pinned["revision"])
    target = BUNDLED / repo_id.replace("/", "--")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as cache:
        for name in files:
            if name.startswith("."):
                continue
            path = hf_hub_download(repo_id, name, revision=pinned["revision"], cache_dir=cache, endpoint=endpoint,
                                   token=token)
            shutil.copyfile(path, target / name)
    shutil.copyfile(target / "README.md", CARDS / f"{builder}.md")
    print(f"# bundled {repo_id}@{pinned['revision'][:12]} into {target.relative_to(ROOT)}; card in "
          f"model_cards/{builder}.md", flush=True)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ReleaseConfig, argv, prog="tools/release_zoo.py", summary=__doc__.split("\n\n")[0])
    entries = [e for e in ZOO if not cfg.only or e[0] == cfg.only]
    if not entries:
        raise ConfigError(f"config key 'only' = {cfg.only!r}: not a zoo entry; known: {[e[0] for e in ZOO]}")
    if cfg.run and not cfg.only:
        raise ConfigError(f"config key 'run' = {cfg.run!r}: names one entry's run folder; give --only ENTRY too")
    server = None
    endpoint = cfg.endpoint
    if cfg.loopback:
        sys.path.insert(0, str(ROOT / "tests"))
        from hub_server import LoopbackHub  # the protocol the tests run the real client against

        server = LoopbackHub(Path(tempfile.mkdtemp(prefix="mvssl-loopback-hub-"))).start()
        endpoint = server.url
        os.environ.update(HF_ENDPOINT=server.url, HF_TOKEN=cfg.token or "hf_loopback_release", HF_HUB_DISABLE_XET="1")
    try:
        for builder, preset, repo_id, member, trainer in entries:
            release(cfg, builder, preset, repo_id, member, trainer, endpoint)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    run_cli(main)

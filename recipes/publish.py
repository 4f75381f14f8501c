"""Publish a checkpoint to the Hugging Face Hub: one commit, a tag per recipe version, and the weights entry.

    python recipes/publish.py runs/cifar10_bt_d256_m4 --repo_id org/barlowtwins-resnet18-cifar10 --revision_tag v1
    python recipes/publish.py --help

PATH is a checkpoint folder (config.json + model.safetensors + README.md) or a pretrain run folder (the
checkpoint folder inside it is used). The folder is verified (config schema, sha256 of every weights
file) before anything is uploaded. After the push, the script prints the zoo's weights entry (repo id,
the pinned 40-hex revision, sha256 of each file, metrics, transforms, recipe config), built from what the
Hub now serves; ``--entries FILE`` also merges it into a registry JSON such as mvssl_hub/zoo_weights.json.
A timm backbone's checkpoint has no zoo builder (the zoo's are ResNets): the script prints how timm and
mvssl-hub load it from the repo instead of an entry.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

if __package__ in (None, ""):  # `python recipes/publish.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.hub.format import find_checkpoint
from mvssl_hub.hub.loading import push_to_hub
from mvssl_hub.hub.schema import load_config
from mvssl_hub.hub.weights import weights_entry_from_checkpoint
from mvssl_hub.timm_backbone import TIMM_PREFIX, is_timm_arch
from mvssl_hub.train.config import Check, check_ranges, parse_config, run_cli


@dataclass
class PublishConfig:
    """Where a checkpoint goes on the Hub, and how its weights entry is named."""

    POSITIONAL = ("path",)

    path: Annotated[str, Check(bool, "give the checkpoint folder or pretrain run folder")] = ""  # checkpoint folder or pretrain run folder
    # Hub
    repo_id: Annotated[str, Check(bool, "give the Hub repo, org/name")] = ""  # Hub model repo, org/name (created if missing)
    revision_tag: str | None = None  # tag for this recipe version (default: train_config.recipe_version)
    private: bool = False  # create the repo as private
    commit_message: str | None = None
    endpoint: str | None = None  # Hub endpoint (default: HF_ENDPOINT or huggingface.co)
    token: str | None = None  # Hub token for every request (default: HF_TOKEN or the saved login)
    # weights entry
    member_name: str | None = None  # enum member name of the entry (default: <DATASET>_<TAG>)
    builder: str | None = None  # zoo builder of the entry (default: implied by the config)
    default: bool = False  # with --entries: make this entry the builder's DEFAULT
    entries: str | None = None  # registry JSON to merge the entry into (e.g. mvssl_hub/zoo_weights.json)

    def __post_init__(self) -> None:
        check_ranges(self)  # every rule declared beside its field


def merge_entry(path: Path, builder: str, member: str, entry: dict[str, Any], default: bool) -> None:
    """Add (or replace) ``member`` of ``builder`` in a registry JSON {builder: {default, entries}}."""
    registry = json.loads(path.read_text()) if path.is_file() else {}
    slot = registry.setdefault(builder, {"default": None, "entries": {}})
    slot["entries"][member] = entry
    if default or slot["default"] is None:
        slot["default"] = member
    path.write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(PublishConfig, argv, prog="recipes/publish.py", summary=__doc__.split("\n\n")[0])
    ckpt = find_checkpoint(cfg.path)
    ckpt_cfg = load_config(ckpt)
    tag = cfg.revision_tag or (ckpt_cfg.get("train_config") or {}).get("recipe_version")
    print(f"publishing {ckpt} -> {cfg.repo_id}" + (f" (tag {tag})" if tag else ""), file=sys.stderr)

    commit = push_to_hub(ckpt, cfg.repo_id, revision_tag=tag, private=cfg.private,
                         commit_message=cfg.commit_message, token=cfg.token, endpoint=cfg.endpoint,
                         builder=cfg.builder)
    print(f"commit {commit}", file=sys.stderr)
    if is_timm_arch(ckpt_cfg["backbone"]["arch"]):  # no zoo builder: the repo id is how it is loaded
        name = ckpt_cfg["backbone"]["arch"][len(TIMM_PREFIX):]
        print(f"# {name} (timm) has no zoo builder; load it by repo id:\n"
              f"timm.create_model(\"hf-hub:{cfg.repo_id}\", pretrained=True)\n"
              f"mvssl_hub.from_pretrained(\"{cfg.repo_id}\", revision=\"{commit}\")")
        return {"commit": commit, "tag": tag, "member": None, "entry": None}

    # The entry pins the commit just made and hashes the files as the Hub serves them.
    entry = weights_entry_from_checkpoint(cfg.repo_id, commit, endpoint=cfg.endpoint, token=cfg.token,
                                          builder=cfg.builder)
    dataset = ((ckpt_cfg.get("dataset") or {}).get("id") or "DATA").split("/")[-1].upper().replace("-", "_")
    member = cfg.member_name or f"{dataset}_{(tag or 'V1').upper().replace('.', '_')}"
    print(f"# weights entry for the zoo (mvssl_hub/zoo_weights.json), builder {entry['builder']!r}:")
    print(json.dumps({member: entry}, indent=2))
    if cfg.entries:
        merge_entry(Path(cfg.entries), entry["builder"], member, entry, cfg.default)
        print(f"# merged into {cfg.entries}", file=sys.stderr)
    return {"commit": commit, "tag": tag, "member": member, "entry": entry}


if __name__ == "__main__":
    run_cli(main)

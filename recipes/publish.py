"""Publish a checkpoint to the Hugging Face Hub: one commit, a tag per recipe version, and the weights entry.

    python recipes/publish.py runs/cifar10_bt_d256_m4 --repo-id org/barlowtwins-resnet18-cifar10 --revision-tag v1

RUN_OR_CKPT_DIR is a checkpoint folder (config.json + model.safetensors + README.md) or a pretrain run
folder (its ``export/`` checkpoint is used). The folder is verified (config schema, sha256 of every
weights file) before anything is uploaded. After the push, the script prints the entry to paste into
the zoo's ``mvssl_hub/zoo_weights.json`` (repo id, the pinned 40-hex revision, sha256 of each file, metrics,
transforms, recipe config), built from what the Hub now serves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/publish.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.checkpoint import find_checkpoint, load_config
from mvssl_hub.hub import push_to_hub
from mvssl_hub.weights import weights_entry_from_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", metavar="RUN_OR_CKPT_DIR", help="checkpoint folder or pretrain run folder")
    p.add_argument("--repo-id", required=True, help="Hub model repo, org/name (created if missing)")
    p.add_argument("--revision-tag", default=None,
                   help="tag for this recipe version (default: train_config.recipe_version if recorded); "
                        "an existing tag is never moved")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--member-name", default=None,
                   help="enum member name for the printed weights entry (default: <DATASET>_V<n> guess)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    ckpt = find_checkpoint(args.path)
    cfg = load_config(ckpt)
    tag = args.revision_tag or (cfg.get("train_config") or {}).get("recipe_version")
    print(f"publishing {ckpt} -> {args.repo_id}" + (f" (tag {tag})" if tag else ""), file=sys.stderr)

    commit = push_to_hub(ckpt, args.repo_id, revision_tag=tag, private=args.private,
                         commit_message=args.commit_message, token=args.token, endpoint=args.endpoint)
    print(f"commit {commit}", file=sys.stderr)

    # The entry pins the commit just made and hashes the files as the Hub serves them.
    entry = weights_entry_from_checkpoint(args.repo_id, commit, endpoint=args.endpoint)
    dataset = ((cfg.get("dataset") or {}).get("id") or "DATA").split("/")[-1].upper().replace("-", "_")
    member = args.member_name or f"{dataset}_{(tag or 'V1').upper().replace('.', '_')}"
    print(f"# weights entry for the zoo (mvssl_hub/zoo_weights.json), builder {entry['builder']!r}:")
    print(json.dumps({member: entry}, indent=2))
    return {"commit": commit, "tag": tag, "member": member, "entry": entry}


if __name__ == "__main__":
    main()

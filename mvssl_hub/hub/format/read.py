"""Reading a checkpoint folder (or the verified files of a Hub snapshot): every check before a tensor is allocated.

In this order: the config (types *and* ranges, :mod:`..schema`), each file's sha256, the safetensors header against
the shapes the config implies (computed on the meta device), and the header's metadata against the config. Only then
are the tensors read, and NaN/Inf refused. :func:`find_checkpoint` finds the folder in a run folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ...backbones import backbone_from_config
from ...errors import CheckpointError, IntegrityError
from ...projector import Projector
from ...safe_io import (
    SafetensorsHeader,
    check_regular_file,
    load_safetensors,
    read_json_file,
    read_safetensors_header,
    refuse_pickle,
    sha256_file,
    strip_prefix,
    strip_prefixes,
)
from ..schema import (
    CONFIG_FILE,
    FORMAT,
    HEAD_FILE,
    MODEL_FILE,
    PROJECTOR_FILE,
    SAVE_DTYPES,
    load_config,
)

# ---------------------------------------------------------------------------------------------- discovery

def is_checkpoint_folder(path: Path) -> bool:
    """True when ``path`` holds a weights file and a config.json that declares this format."""
    cfg_path = path / CONFIG_FILE
    if not ((path / MODEL_FILE).is_file() and cfg_path.is_file()):
        return False
    try:
        cfg = read_json_file(cfg_path)
    except (CheckpointError, OSError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder at ``path``: itself, or the one checkpoint folder one or two levels below it.

    A folder counts when its config.json declares this format (a run's ``step-*`` run states do not).
    FileNotFoundError if there is none, ValueError (listing them) if there are several.
    """
    path = Path(path)
    if is_checkpoint_folder(path):
        return path
    found = sorted({p.parent for pattern in (f"*/{CONFIG_FILE}", f"*/*/{CONFIG_FILE}") for p in path.glob(pattern)
                    if not p.parent.name.startswith(".") and is_checkpoint_folder(p.parent)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint folder ({CONFIG_FILE} + {MODEL_FILE}) in it or below it")
    raise ValueError(f"{path}: several checkpoint folders {[str(p) for p in found]}; pass one of them")



# ------------------------------------------------------------------------------------------------ state dicts

Expected = dict[str, tuple[tuple[int, ...], torch.dtype]]


def expected_state(module: nn.Module, dtype: torch.dtype) -> Expected:
    """key -> (shape, dtype) a checkpoint of ``module`` saved in ``dtype`` holds."""
    return {k: (tuple(v.shape), dtype if v.is_floating_point() else v.dtype) for k, v in module.state_dict().items()}


def meta_backbone(cfg: Mapping[str, Any], source: str = CONFIG_FILE) -> nn.Module:
    """The backbone a validated config describes, built on the meta device (shapes only, nothing allocated);
    for a timm backbone, CheckpointError when timm refuses its kwargs or gives another width than feature_dim
    (ImportError with the install line without timm, UnknownModelError with the closest names)."""
    with torch.device("meta"):
        try:
            backbone = backbone_from_config(cfg["backbone"], init_weights=False)
        except (TypeError, ValueError) as e:  # ConfigError included: timm refused the kwargs
            raise CheckpointError(f"{source}: field 'backbone' = {cfg['backbone']!r:.200}: {e}") from None
    if backbone.feature_dim != cfg["feature_dim"]:
        raise CheckpointError(f"{source}: feature_dim = {cfg['feature_dim']} but backbone {cfg['backbone']!r:.200} "
                              f"gives {backbone.feature_dim} features")
    return backbone


def expected_tensors(cfg: Mapping[str, Any], source: str = CONFIG_FILE) -> dict[str, Expected]:
    """Weights file -> key -> (shape, dtype) implied by a validated config (projector and head when it has them).

    The modules are built on the meta device: no memory is allocated, whatever the config asks for.
    """
    dtype = SAVE_DTYPES[cfg["dtype"]]
    backbone = meta_backbone(cfg, source)
    with torch.device("meta"):
        out = {MODEL_FILE: expected_state(backbone, dtype)}
        if cfg.get("projector"):
            out[PROJECTOR_FILE] = expected_state(Projector(cfg["projector"]), dtype)
        if cfg.get("num_classes"):
            out[HEAD_FILE] = expected_state(nn.Linear(cfg["feature_dim"], cfg["num_classes"]), dtype)
    return out


def check_header_against(path: Path, header: SafetensorsHeader, expected: Expected, hint: str = "") -> None:
    """One CheckpointError listing every missing / unexpected key and every shape or dtype mismatch."""
    found = {strip_prefix(k): t for k, t in header.tensors.items()}
    problems: list[str] = []
    for key in sorted(set(expected) - set(found)):
        problems.append(f"  missing key {key!r}: expected shape {list(expected[key][0])} {expected[key][1]}")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"  unexpected key {key!r}: found shape {list(found[key].shape)} {found[key].dtype}")
    for key in sorted(set(found) & set(expected)):
        exp_shape, exp_dtype = expected[key]
        t = found[key]
        if t.shape != exp_shape:
            problems.append(f"  {key!r}: expected shape {list(exp_shape)}, found {list(t.shape)}")
        if t.torch_dtype != exp_dtype:
            problems.append(f"  {key!r}: expected dtype {exp_dtype}, found {t.dtype} ({t.torch_dtype})")
    if problems:
        raise CheckpointError(f"{path}: {len(problems)} tensor(s) do not match the model {hint}:\n" + "\n".join(problems))


def file_metadata(cfg: Mapping[str, Any], name: str) -> dict[str, str]:
    meta = {"format": FORMAT, "arch": cfg["backbone"]["arch"], "library_version": cfg["library_version"]}
    if name == PROJECTOR_FILE:
        meta["projector"] = cfg["projector"]
    return meta


def check_metadata_against(path: Path, header: SafetensorsHeader, cfg: Mapping[str, Any], source: str) -> None:
    """CheckpointError when the weights file's own metadata disagrees with config.json (both values named)."""
    for key, want in file_metadata(cfg, path.name).items():
        have = header.metadata.get(key)
        if have is not None and have != want:
            raise CheckpointError(f"{path}: the file's metadata says {key}={have!r} but {source} says {key}={want!r}")


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """IntegrityError if the file's sha256 differs from ``expected``."""
    found = sha256_file(path)
    if found != expected:
        raise IntegrityError(f"{path}: sha256 {found} does not match {expected} recorded in {what}")


@dataclass
class CheckpointState:
    """A checked checkpoint: its config, backbone state dict and (if asked for) projector / head state dicts."""

    config: dict[str, Any]
    backbone: dict[str, torch.Tensor]
    projector: dict[str, torch.Tensor] | None
    source: str
    head: dict[str, torch.Tensor] | None = None


def read_weights(path: Path, cfg: Mapping[str, Any], expected: Expected, source: str) -> dict[str, torch.Tensor]:
    """Checked safetensors -> state dict: header vs ``expected`` and ``cfg`` first, then the bytes, then finiteness."""
    header = read_safetensors_header(path)
    bb = cfg["backbone"]
    described = ", ".join(f"{k}={v}" for k, v in bb.items() if k != "timm_version")
    what = {PROJECTOR_FILE: f"projector={cfg['projector']!r}", HEAD_FILE: f"num_classes={cfg.get('num_classes')}"}.get(
        path.name, described)
    check_header_against(path, header, expected, f"described by {source} ({what}, dtype={cfg['dtype']})")
    check_metadata_against(path, header, cfg, source)
    state = strip_prefixes(load_safetensors(path))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        counts = ", ".join(f"{k!r} ({int((~torch.isfinite(state[k])).sum())} values)" for k in bad)
        raise CheckpointError(f"{path}: NaN/Inf in {len(bad)} tensor(s): {counts}")
    return state


def read_checkpoint(cfg: dict[str, Any], paths: Mapping[str, Path], *, with_projector: bool,
                    source: str) -> CheckpointState:
    """State dicts of the (already sha256-verified) weights files in ``paths`` of a validated config."""
    expected = expected_tensors(cfg, source)
    states = {name: read_weights(path, cfg, expected[name], source) for name, path in paths.items()}
    return CheckpointState(cfg, states[MODEL_FILE], states.get(PROJECTOR_FILE) if with_projector else None, source,
                           states.get(HEAD_FILE))


def weights_to_read(cfg: Mapping[str, Any], with_projector: bool) -> list[str]:
    """The weights files a load reads: the backbone, the projector when asked, a classifier's head always."""
    return [MODEL_FILE, *([PROJECTOR_FILE] if with_projector else []), *([HEAD_FILE] if cfg.get("num_classes") else [])]


def local_weights_paths(folder: Path, cfg: Mapping[str, Any], with_projector: bool) -> dict[str, Path]:
    """The weights files of a local checkpoint folder, each checked (regular file, no pickle, header, sha256)."""
    names = weights_to_read(cfg, with_projector)
    paths = {}
    for name in names:
        if name not in cfg["files"]:
            raise CheckpointError(f"{folder}: {name} was not saved (config.json lists {sorted(cfg['files'])}); "
                                  "save with include_projector=True to keep the projector")
        path = folder / name
        check_regular_file(path, f"listed in {CONFIG_FILE}")
        read_safetensors_header(path)  # truncation / corrupted header: the specific error before the hash one
        verify_sha256(path, cfg["files"][name]["sha256"], str(folder / CONFIG_FILE))
        paths[name] = path
    return paths


def read_checkpoint_folder(folder: Path, *, with_projector: bool = False) -> CheckpointState:
    """A local checkpoint folder -> :class:`CheckpointState`, every check passed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        check_regular_file(folder, "a checkpoint folder")
        refuse_pickle(folder)
        raise CheckpointError(f"{folder}: give the checkpoint folder, not a single file")
    if folder.is_dir() and not (folder / MODEL_FILE).exists():
        for p in sorted(folder.iterdir()):
            refuse_pickle(p)  # a pickle checkpoint: say so, unread, rather than "config.json missing"
    cfg = load_config(folder)
    paths = local_weights_paths(folder, cfg, with_projector)
    return read_checkpoint(cfg, paths, with_projector=with_projector, source=str(folder / CONFIG_FILE))



__all__ = [
    "CheckpointState", "Expected", "check_header_against", "check_metadata_against", "expected_state",
    "expected_tensors", "file_metadata", "find_checkpoint", "is_checkpoint_folder", "local_weights_paths",
    "meta_backbone", "read_checkpoint", "read_checkpoint_folder", "read_weights", "verify_sha256", "weights_to_read",
]

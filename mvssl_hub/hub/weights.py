"""Published weights, torchvision style: an entry per checkpoint, pinned to a Hub commit, in an enum per builder.

An entry is data: repo id, 40-hex revision, sha256 of ``config.json`` and of each weights file, and
``meta`` (backbone config, method, metrics, transforms, recipe config, ...). :func:`load_weights` goes
strictly down the layers: entry -> a verified bundled snapshot, else the Hub (pinned commit,
sha256 checked) -> the checkpoint format -> ``load_state_dict(strict=True)``.

A bundled snapshot is the entry's repo exactly as the Hub holds it, shipped in ``mvssl_hub/bundled/``
(``<org>--<name>/``), so the zoo works offline on a fresh clone; every file's sha256 is checked against
the entry before it is used.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..backbones import BackboneConfig, ResNetBackbone
from ..errors import CheckpointError
from ..registry import registered_weights, unknown_name_error
from ..safe_io import sha256_file
from ..views import EvalTransform, eval_transform_from
from ..vocabulary import builder_name
from .format.assemble import model_from_state
from .format.read import read_checkpoint
from .remote import hub_file_hashes, resolve_hub_checkpoint
from .schema import (
    CONFIG_FILE,
    MODEL_FILE,
    PROJECTOR_FILE,
    SHA256_HEX,
    check_expected,
    normalize_metric,
    read_config,
)
from .transport import COMMIT_SHA, REPO_ID, parse_source

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(str(resources.files("mvssl_hub") / "bundled"))  # package data (pyproject: package-data)
META_KEYS = ("backbone", "feature_dim", "method", "beta", "num_views", "projector", "metrics", "transforms",
             "recipe", "dataset", "num_params", "library_version")
OPTIONAL_META_KEYS = ("training",)  # hardware, wall-clock, steps, epochs of the run (config.json's "training")


class NoPublishedWeightsError(ValueError):
    """A builder was asked for published weights but none exist for it (yet)."""


@dataclass(frozen=True, eq=True)
class Weights:
    """One published checkpoint: where it lives (pinned), its hashes, and what it is (``meta``)."""

    builder: str
    repo_id: str
    revision: str
    sha256: Mapping[str, str]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(self.meta.get("metrics", []))

    @property
    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig(**self.meta["backbone"])

    def transforms(self) -> EvalTransform:
        """The evaluation transform these weights were measured with: uint8 (N, 3, H, W) -> float (N, 3, S, S)."""
        return eval_transform_from(self.meta["transforms"])

    def bundled_path(self) -> Path:
        """Where this entry's snapshot is shipped: ``mvssl_hub/bundled/<org>--<name>``."""
        return BUNDLED_DIR / self.repo_id.replace("/", "--")


class WeightsEnum(Enum):
    """Base of the per-builder enums; members' values are :class:`Weights` (``.meta``, ``.transforms()``)."""

    @property
    def weights(self) -> Weights:
        return self.value

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.value.meta

    def transforms(self) -> EvalTransform:
        return self.value.transforms()

    def bundled_path(self) -> Path:
        """The folder this entry's verified snapshot ships in (a checkpoint folder: ``local-dir:`` for timm)."""
        return self.value.bundled_path()

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


def validate_entry(w: Weights, builder_config: Callable[[str], tuple[str, dict[str, Any]]] | None = None) -> None:
    """Check an entry's schema; ValueError names the field and value at fault.

    ``builder_config(builder)`` -> (method, fixed backbone kwargs) checks that the entry fits its builder.
    """
    where = f"weights entry {w.builder}@{w.repo_id}"
    if not REPO_ID.match(w.repo_id):
        raise ValueError(f"{where}: repo_id {w.repo_id!r} must look like 'org/name'")
    if not COMMIT_SHA.match(w.revision):
        raise ValueError(f"{where}: revision {w.revision!r} must be a full 40-hex commit sha (pinned)")
    for name in (CONFIG_FILE, MODEL_FILE):
        if name not in w.sha256:
            raise ValueError(f"{where}: sha256 has no entry for {name}")
    for name, digest in w.sha256.items():
        if name not in (CONFIG_FILE, MODEL_FILE, PROJECTOR_FILE) or not SHA256_HEX.match(str(digest)):
            raise ValueError(f"{where}: sha256[{name!r}] = {digest!r} must be a 64-hex digest of a checkpoint file")
    missing = [k for k in META_KEYS if k not in w.meta]
    unknown = sorted(set(w.meta) - set(META_KEYS) - set(OPTIONAL_META_KEYS))
    if missing or unknown:
        raise ValueError(f"{where}: meta missing {missing}, unknown {unknown}; expected keys {list(META_KEYS)} "
                         f"(optional: {list(OPTIONAL_META_KEYS)})")
    bcfg = BackboneConfig(**w.meta["backbone"])
    if builder_config is not None:
        method, fixed = builder_config(w.builder)
        clash = {k: (v, w.meta["backbone"][k]) for k, v in fixed.items() if w.meta["backbone"][k] != v}
        if w.meta["method"] != method or clash:
            raise ValueError(f"{where}: meta says {w.meta['method']}/{w.meta['backbone']} but the builder "
                             f"{w.builder} is {method} with {fixed}")
    if w.meta["feature_dim"] != bcfg.feature_dim:
        raise ValueError(f"{where}: feature_dim {w.meta['feature_dim']} != {bcfg.feature_dim} for {bcfg}")
    for i, m in enumerate(w.meta["metrics"]):
        if normalize_metric(m, f"{where}: metrics[{i}]") != m:
            raise ValueError(f"{where}: metrics[{i}] = {m!r} is not a normalised metric record")
    tf = w.meta["transforms"]
    if not isinstance(tf, Mapping) or not {"mean", "std", "eval_size"} <= set(tf):
        raise ValueError(f"{where}: transforms {tf!r} must give at least mean, std, eval_size")
    if not isinstance(w.meta["num_params"], int) or w.meta["num_params"] <= 0:
        raise ValueError(f"{where}: num_params {w.meta['num_params']!r} must be a positive int")


def make_weights_enum(class_name: str, entries: Mapping[str, Mapping[str, Any] | Weights],
                      default: str | None = None, module: str | None = None,
                      builder_config: Callable[[str], tuple[str, dict[str, Any]]] | None = None) -> type[WeightsEnum]:
    """An enum (functional API) of ``entries`` (member name -> Weights or its dict) plus a ``DEFAULT`` alias.

    ``default`` names the member DEFAULT points to (the first one if None); no alias when empty. Every entry
    passes :func:`validate_entry` (with ``builder_config`` when given).
    """
    members = {name: e if isinstance(e, Weights) else Weights(**e) for name, e in entries.items()}
    for w in members.values():
        validate_entry(w, builder_config)
    items = list(members.items())
    if items:
        target = default or items[0][0]
        if target not in members:
            raise ValueError(f"default {target!r} is not one of {list(members)}")
        items.append(("DEFAULT", members[target]))  # equal value -> Enum makes it an alias
    return WeightsEnum(class_name, items, module=module or __name__)  # type: ignore[return-value]


def how_to_load_instead(builder: str) -> str:
    return (
        f"no weights are published yet for {builder}. Load a checkpoint directly instead: "
        "mvssl_hub.from_pretrained('path/to/checkpoint_dir') or mvssl_hub.from_pretrained('org/name', revision=...) "
        f"for a Hub repo, or build {builder}(weights=None) for random initialisation."
    )


def resolve_weights(builder: str, enum: type[WeightsEnum], weights: Any) -> Weights:
    """``"DEFAULT"`` | member | ``"Enum.MEMBER"`` | ``"MEMBER"`` | Weights -> the Weights entry for ``builder``."""
    if isinstance(weights, WeightsEnum):
        w = weights.value
    elif isinstance(weights, Weights):
        validate_entry(weights)  # a hand-made entry gets the same schema checks as a registered one
        w = weights
    elif isinstance(weights, str):
        if len(enum) == 0:
            raise NoPublishedWeightsError(how_to_load_instead(builder))
        enum_name, _, member = weights.rpartition(".")
        if enum_name and enum_name != enum.__name__:
            raise ValueError(f"weights {weights!r} belong to {enum_name}, but {builder} takes {enum.__name__}")
        if member not in enum.__members__:
            raise unknown_name_error(f"weights for {builder}", member, enum.__members__)
        w = enum[member].value
    else:
        raise TypeError(f"weights must be None, 'DEFAULT', a {enum.__name__} member or 'Enum.MEMBER', got {weights!r}")
    if w.builder != builder:
        raise ValueError(f"weights {weights!r} are for {w.builder}, not {builder}")
    return w


def published_entry(repo_id: str, revision: str | None = None) -> Weights | None:
    """The registered weights entry pinned to ``repo_id`` at ``revision`` (None, the entry's commit, or the tag it
    was published under: its recipe's ``recipe_version``), or None."""
    for enum in registered_weights().values():
        for member in enum:
            w = member.value
            tag = (w.meta.get("recipe") or {}).get("recipe_version")
            if w.repo_id == repo_id and revision in (None, w.revision, tag):
                return w
    return None


def bundled_files(w: Weights, with_projector: bool = False) -> dict[str, Path] | None:
    """The entry's shipped snapshot files, each matching its pinned sha256; None when not shipped or not intact."""
    folder = w.bundled_path()
    names = [CONFIG_FILE, MODEL_FILE] + ([PROJECTOR_FILE] if with_projector else [])
    if not all((folder / n).is_file() for n in names) or any(n not in w.sha256 for n in names):
        return None
    bad = [n for n in names if sha256_file(folder / n) != w.sha256[n]]
    if bad:
        warnings.warn(f"bundled snapshot {folder} of {w.repo_id}@{w.revision[:12]}: {bad} do not match the pinned "
                      "sha256; ignoring it and using the Hub", RuntimeWarning, stacklevel=3)
        return None
    return {n: folder / n for n in names}


def load_weights(w: Weights, *, with_projector: bool = False, cache_dir: str | None = None, endpoint: str | None = None,
                 local_files_only: bool = False, token: str | bool | None = None,
                 force_download: bool = False) -> torch.nn.Module:
    """The model of a published entry: the verified bundled snapshot, else the Hub at the pinned commit."""
    where = f"{w.repo_id}@{w.revision}"
    files = None if force_download else bundled_files(w, with_projector)
    if files is not None:
        logger.info("%s: using the bundled snapshot %s (every sha256 checked)", where, w.bundled_path())
        cfg = read_config(files[CONFIG_FILE])
        paths = {n: p for n, p in files.items() if n != CONFIG_FILE}
        where = f"{where} (bundled)"
    else:
        cfg, paths, _ = resolve_hub_checkpoint(
            w.repo_id, w.revision, with_projector=with_projector, cache_dir=cache_dir, endpoint=endpoint,
            local_files_only=local_files_only, config_sha256=w.sha256[CONFIG_FILE], files_sha256=dict(w.sha256),
            token=token, force_download=force_download,
        )
    check_expected(cfg, {"arch": w.meta["backbone"]["arch"], "width": w.meta["backbone"]["width"],
                         "method": w.meta["method"]}, where)
    model = model_from_state(read_checkpoint(cfg, paths, with_projector=with_projector, source=where))
    model.mvssl_weights = w  # type: ignore[assignment]
    return model


def weights_entry_from_checkpoint(repo_id: str, revision: str | None = None, *, cache_dir: str | None = None,
                                  endpoint: str | None = None, token: str | bool | None = None,
                                  builder: str | None = None) -> dict[str, Any]:
    """The entry data (for the zoo's registry) of a checkpoint pushed to the Hub.

    ``revision`` (branch, tag or sha) is resolved to the commit sha it points at; every file is
    downloaded and hashed, so the entry records what the Hub serves. ``builder`` defaults to the zoo name
    the config implies (``<method>_<arch>``, plus ``_w<width>`` below full width).
    """
    src, revision, is_local = parse_source(repo_id, revision)
    if is_local:
        raise ValueError(f"{repo_id!r} is a local folder; a weights entry needs a checkpoint pushed to the Hub "
                         "(mvssl_hub.push_to_hub) so that it has a repo id and a pinned revision")
    cfg, sha, commit = hub_file_hashes(src, revision, cache_dir=cache_dir, endpoint=endpoint, token=token)
    if cfg["method"] is None:
        raise CheckpointError(f"{src}@{commit}: config.json has no method; cannot tell which builder it belongs to")
    if "width" not in cfg["backbone"]:
        raise CheckpointError(f"{src}@{commit}: backbone {cfg['backbone']['arch']!r} has no zoo builder (the zoo's "
                              "are ResNets); load it by repo id with from_pretrained")
    with torch.device("meta"):
        num_params = sum(p.numel() for p in ResNetBackbone(BackboneConfig(**cfg["backbone"])).parameters())
    return {
        "builder": builder or builder_name(cfg),
        "repo_id": src,
        "revision": commit,
        "sha256": sha,
        "meta": {
            "backbone": dict(cfg["backbone"]), "feature_dim": cfg["feature_dim"], "method": cfg["method"],
            "beta": cfg["beta"], "num_views": cfg["num_views"], "projector": cfg["projector"],
            "metrics": list(cfg["metrics"]), "transforms": cfg["transforms"], "recipe": cfg.get("train_config"),
            "dataset": cfg["dataset"], "num_params": num_params, "library_version": cfg["library_version"],
            **({"training": dict(cfg["training"])} if cfg.get("training") else {}),
        },
    }


__all__ = [
    "BUNDLED_DIR", "NoPublishedWeightsError", "Weights", "WeightsEnum", "bundled_files", "load_weights",
    "make_weights_enum", "published_entry", "resolve_weights", "validate_entry", "weights_entry_from_checkpoint",
]

"""Published weights, torchvision style: per builder an enum of entries, each pinned to a Hub commit.

An entry is data: repo id, 40-hex revision, sha256 of ``config.json`` and of each weights file, and
``meta`` (backbone config, method, metrics, transforms, recipe config, ...). Adding a published
checkpoint is one entry in :data:`PUBLISHED`; :func:`weights_entry_from_checkpoint` builds that entry
from a pushed checkpoint. Nothing is published yet, so every shipped enum is empty and
``weights="DEFAULT"`` raises :class:`NoPublishedWeightsError` with how to load a checkpoint instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .backbones import BackboneConfig, ResNetBackbone
from .checkpoint import (
    CONFIG_FILE, MODEL_FILE, PROJECTOR_FILE, check_expected, load_checkpoint_files, normalize_metric,
    sha256_file,
)
from .errors import CheckpointError
from .registry import list_models, unknown_name_error

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
META_KEYS = ("backbone", "feature_dim", "method", "beta", "num_views", "projector", "metrics", "transforms",
             "recipe", "dataset", "num_params", "library_version")
# kwargs a builder accepts that must agree with the weights' config
_BUILDER_KWARGS = ("small_images", "width")


class NoPublishedWeightsError(ValueError):
    """A builder was asked for published weights but none exist for it (yet)."""


@dataclass(frozen=True, eq=True)
class Weights:
    """One published checkpoint: where it lives (pinned), its hashes, and what it is."""

    builder: str
    repo_id: str
    revision: str
    sha256: Mapping[str, str]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(self.meta.get("metrics", []))

    @property
    def transforms(self) -> dict[str, Any] | None:
        return self.meta.get("transforms")

    @property
    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig(**self.meta["backbone"])


class WeightsEnum(Enum):
    """Base of the per-builder enums; members' values are :class:`Weights`."""

    @property
    def weights(self) -> Weights:
        return self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


def validate_entry(w: Weights) -> None:
    """Check an entry's schema; ValueError names the field and value at fault."""
    where = f"weights entry {w.builder}@{w.repo_id}"
    if w.builder not in list_models():
        raise unknown_name_error("model", w.builder, list_models())
    if not _REPO_ID.match(w.repo_id):
        raise ValueError(f"{where}: repo_id {w.repo_id!r} must look like 'org/name'")
    if not _COMMIT.match(w.revision):
        raise ValueError(f"{where}: revision {w.revision!r} must be a full 40-hex commit sha (pinned)")
    for name in (CONFIG_FILE, MODEL_FILE):
        if name not in w.sha256:
            raise ValueError(f"{where}: sha256 has no entry for {name}")
    for name, digest in w.sha256.items():
        if name not in (CONFIG_FILE, MODEL_FILE, PROJECTOR_FILE) or not _HEX64.match(str(digest)):
            raise ValueError(f"{where}: sha256[{name!r}] = {digest!r} must be a 64-hex digest of a checkpoint file")
    missing = [k for k in META_KEYS if k not in w.meta]
    unknown = sorted(set(w.meta) - set(META_KEYS))
    if missing or unknown:
        raise ValueError(f"{where}: meta missing {missing}, unknown {unknown}; expected keys {list(META_KEYS)}")
    bcfg = BackboneConfig(**w.meta["backbone"])
    method, arch = w.builder.split("_", 1)
    if bcfg.arch != arch or w.meta["method"] != method:
        raise ValueError(f"{where}: meta says {w.meta['method']}/{bcfg.arch} but the builder is {w.builder}")
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
                      default: str | None = None) -> type[WeightsEnum]:
    """An enum (functional API) of ``entries`` (member name -> Weights or its dict) plus a ``DEFAULT`` alias.

    ``default`` names the member DEFAULT points to (the first one if None); no alias when empty.
    """
    members = {name: e if isinstance(e, Weights) else Weights(**e) for name, e in entries.items()}
    for w in members.values():
        validate_entry(w)
    items = list(members.items())
    if items:
        target = default or items[0][0]
        if target not in members:
            raise ValueError(f"default {target!r} is not one of {list(members)}")
        items.append(("DEFAULT", members[target]))  # equal value -> Enum makes it an alias
    return WeightsEnum(class_name, items, module=__name__)  # type: ignore[return-value]


def _enum_name(builder: str) -> str:
    method, arch = builder.split("_", 1)
    return {"barlowtwins": "BarlowTwins", "vicreg": "VICReg"}.get(method, method.title()) + \
        "_" + arch.replace("resnet", "ResNet") + "_Weights"


# builder -> {member name -> entry dict}. One entry per checkpoint that exists on the Hub; none yet.
PUBLISHED: dict[str, dict[str, dict[str, Any]]] = {
    "barlowtwins_resnet18": {},
    "barlowtwins_resnet50": {},
    "vicreg_resnet18": {},
    "vicreg_resnet50": {},
}

BarlowTwins_ResNet18_Weights = make_weights_enum("BarlowTwins_ResNet18_Weights", PUBLISHED["barlowtwins_resnet18"])
BarlowTwins_ResNet50_Weights = make_weights_enum("BarlowTwins_ResNet50_Weights", PUBLISHED["barlowtwins_resnet50"])
VICReg_ResNet18_Weights = make_weights_enum("VICReg_ResNet18_Weights", PUBLISHED["vicreg_resnet18"])
VICReg_ResNet50_Weights = make_weights_enum("VICReg_ResNet50_Weights", PUBLISHED["vicreg_resnet50"])

_REGISTRY: dict[str, type[WeightsEnum]] = {
    "barlowtwins_resnet18": BarlowTwins_ResNet18_Weights,
    "barlowtwins_resnet50": BarlowTwins_ResNet50_Weights,
    "vicreg_resnet18": VICReg_ResNet18_Weights,
    "vicreg_resnet50": VICReg_ResNet50_Weights,
}


def register_weights(builder: str, enum: type[WeightsEnum] | Mapping[str, Mapping[str, Any] | Weights],
                     default: str | None = None) -> type[WeightsEnum] | None:
    """Set the weights enum of ``builder`` (an enum, or entries to build one from); returns the previous one."""
    if builder not in list_models():
        raise unknown_name_error("model", builder, list_models())
    if not isinstance(enum, type):
        enum = make_weights_enum(_enum_name(builder), enum, default)
    for member in enum:
        validate_entry(member.value)
        if member.value.builder != builder:
            raise ValueError(f"{enum.__name__}.{member.name} is for {member.value.builder}, not {builder}")
    previous = _REGISTRY.get(builder)
    _REGISTRY[builder] = enum
    return previous


def get_weights_enum(builder: str) -> type[WeightsEnum]:
    """The weights enum of a builder (possibly empty)."""
    try:
        return _REGISTRY[builder]
    except KeyError:
        raise unknown_name_error("builder with weights", builder, _REGISTRY) from None


def registered_weights() -> dict[str, type[WeightsEnum]]:
    """builder -> weights enum, for every builder (schema tests iterate over this)."""
    return dict(_REGISTRY)


def _how_to_load_instead(builder: str) -> str:
    return (
        f"no weights are published yet for {builder}. Load a checkpoint directly instead: "
        "mvssl_hub.from_pretrained('path/to/checkpoint_dir') or mvssl_hub.from_pretrained('org/name', revision=...) "
        f"for a Hub repo, or build {builder}(weights=None) for random initialisation."
    )


def resolve_weights(builder: str, weights: Any) -> Weights:
    """``"DEFAULT"`` | member | ``"Enum.MEMBER"`` | ``"MEMBER"`` | Weights -> the Weights entry for ``builder``."""
    enum = get_weights_enum(builder)
    if isinstance(weights, WeightsEnum):
        w = weights.value
    elif isinstance(weights, Weights):
        validate_entry(weights)  # a hand-made entry gets the same schema checks as a registered one
        w = weights
    elif isinstance(weights, str):
        if len(enum) == 0:
            raise NoPublishedWeightsError(_how_to_load_instead(builder))
        enum_name, _, member = weights.rpartition(".")
        if enum_name and enum_name != enum.__name__:
            raise ValueError(f"weights {weights!r} belong to {enum_name}, but {builder} takes {enum.__name__}")
        try:
            w = enum[member].value
        except KeyError:
            raise unknown_name_error(f"weights for {builder}", member, enum.__members__) from None
    else:
        raise TypeError(f"weights must be None, 'DEFAULT', a {enum.__name__} member or 'Enum.MEMBER', got {weights!r}")
    if w.builder != builder:
        raise ValueError(f"weights {weights!r} are for {w.builder}, not {builder}")
    return w


def load_published_backbone(builder: str, weights: Any, *, cache_dir: str | None = None,
                            endpoint: str | None = None, local_files_only: bool = False,
                            **kwargs: Any) -> ResNetBackbone:
    """The backbone of ``builder`` with published ``weights``, downloaded at the pinned commit and sha256-checked.

    ``kwargs`` (small_images, width) must agree with the weights, else ValueError naming both values.
    """
    w = resolve_weights(builder, weights)
    unknown = sorted(set(kwargs) - set(_BUILDER_KWARGS))
    if unknown:
        raise TypeError(f"{builder}() got unexpected keyword argument(s) {unknown} with weights; allowed: "
                        f"{list(_BUILDER_KWARGS)}")
    for key, value in kwargs.items():
        if value != w.meta["backbone"][key]:
            raise ValueError(f"{builder}({key}={value!r}) contradicts the weights {w.repo_id}@{w.revision[:12]}, "
                             f"which have {key}={w.meta['backbone'][key]!r}")
    from .hub import resolve_hub_checkpoint

    cfg, paths, _ = resolve_hub_checkpoint(
        w.repo_id, w.revision, with_projector=False, cache_dir=cache_dir, endpoint=endpoint,
        local_files_only=local_files_only, config_sha256=w.sha256[CONFIG_FILE], files_sha256=dict(w.sha256),
    )
    where = f"{w.repo_id}@{w.revision}"
    check_expected(cfg, {"arch": w.meta["backbone"]["arch"], "method": w.meta["method"]}, where)
    model = load_checkpoint_files(cfg, paths, with_projector=False, source=where)
    model.mvssl_weights = w  # type: ignore[assignment]
    return model  # type: ignore[return-value]


def weights_entry_from_checkpoint(repo_id: str, revision: str | None = None, *, cache_dir: str | None = None,
                                  endpoint: str | None = None) -> dict[str, Any]:
    """The entry data (for :data:`PUBLISHED` / :func:`register_weights`) of a checkpoint pushed to the Hub.

    ``revision`` (branch, tag or sha) is resolved to the commit sha it points at; the weights are
    downloaded and hashed, so the entry records what the Hub serves.
    """
    from .hub import parse_source, resolve_hub_checkpoint

    src, revision, is_local = parse_source(repo_id, revision)
    if is_local:
        raise ValueError(f"{repo_id!r} is a local folder; a weights entry needs a checkpoint pushed to the Hub "
                         "(mvssl_hub.push_to_hub) so that it has a repo id and a pinned revision")
    cfg, paths, commit = resolve_hub_checkpoint(src, revision, with_projector=False, cache_dir=cache_dir,
                                                endpoint=endpoint, local_files_only=False)
    from .hub import fetch_verified, hub_download

    if PROJECTOR_FILE in cfg["files"]:  # pin every file of the checkpoint, not only the ones a backbone needs
        paths[PROJECTOR_FILE] = fetch_verified(src, PROJECTOR_FILE, commit, cfg["files"][PROJECTOR_FILE]["sha256"],
                                               cache_dir=cache_dir, endpoint=endpoint, local_files_only=False)
    cfg_path = hub_download(src, CONFIG_FILE, commit, cache_dir=cache_dir, endpoint=endpoint, local_files_only=False)
    sha = {CONFIG_FILE: sha256_file(cfg_path), **{name: sha256_file(p) for name, p in paths.items()}}
    if cfg["method"] is None:
        raise CheckpointError(f"{src}@{commit}: config.json has no method; cannot tell which builder it belongs to")
    from .model_card import builder_name

    bcfg = BackboneConfig(**cfg["backbone"])
    num_params = sum(p.numel() for p in ResNetBackbone(bcfg).parameters())
    tc = cfg.get("train_config")
    return {
        "builder": builder_name(cfg),
        "repo_id": src,
        "revision": commit,
        "sha256": sha,
        "meta": {
            "backbone": dict(cfg["backbone"]), "feature_dim": cfg["feature_dim"], "method": cfg["method"],
            "beta": cfg["beta"], "num_views": cfg["num_views"], "projector": cfg["projector"],
            "metrics": list(cfg["metrics"]), "transforms": cfg["transforms"], "recipe": tc,
            "dataset": cfg["dataset"], "num_params": num_params, "library_version": cfg["library_version"],
        },
    }


__all__ = [
    "BarlowTwins_ResNet18_Weights", "BarlowTwins_ResNet50_Weights", "NoPublishedWeightsError", "PUBLISHED",
    "VICReg_ResNet18_Weights", "VICReg_ResNet50_Weights", "Weights", "WeightsEnum", "get_weights_enum",
    "load_published_backbone", "make_weights_enum", "register_weights", "registered_weights", "resolve_weights",
    "validate_entry", "weights_entry_from_checkpoint",
]

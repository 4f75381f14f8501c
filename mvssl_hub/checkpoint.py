"""The local checkpoint format: ``model.safetensors`` (+ ``projector.safetensors``), ``config.json``, ``README.md``.

A checkpoint folder holds the backbone weights with torchvision key names, the JSON config that rebuilds
and documents the model (architecture, projector, method, data, transforms, metrics, sha256 of every
weights file), and a generated model card. Writes are atomic (temporary sibling folder, fsync, swap);
reads are strict (header, sha256, key set, shapes, dtypes and finiteness are checked before
``load_state_dict``, and one error lists every offending key). Pickle files are refused unread.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .backbones import BackboneConfig, ResNetBackbone
from .errors import CheckpointError, IntegrityError, UnknownModelError
from .projector import Projector, parse_projector_spec

FORMAT = "mvssl-hub"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
PROJECTOR_FILE = "projector.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
CHECKPOINT_FILES = (MODEL_FILE, PROJECTOR_FILE, CONFIG_FILE, CARD_FILE)

METRIC_TASKS = ("knn", "linear_probe", "finetune")
METRIC_NAMES = ("top1", "top5")
_METRIC_KEYS = ("task", "metric", "value", "random_init", "dataset", "split", "protocol", "date")
_SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# safetensors dtype codes -> torch dtypes (the ones a checkpoint of ours can hold)
_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ----------------------------------------------------------------------------------------------------- files

def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def refuse_pickle(path: Path) -> None:
    """Raise CheckpointError if ``path`` is a pickle / torch.save archive, judged by name and magic bytes only.

    Nothing is unpickled. A file that is plausibly safetensors (its 8-byte little-endian header length
    fits the file and byte 8 is ``{``) is accepted here, since a header length such as 640 or 1152
    starts with the same bytes as a pickle; otherwise the first bytes are compared with the zip
    (torch.save) and pickle protocol-2+ signatures.
    """
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing a {path.suffix} file as weights: pickle files can run code when loaded. "
            "Convert it once in a trusted environment (torch.load(..., weights_only=True) then "
            "mvssl_hub.save_pretrained) and load the safetensors checkpoint instead."
        )
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
        if len(head) == 9 and head[8:9] == b"{":
            (n,) = struct.unpack("<Q", head[:8])
            if 2 <= n <= min(_MAX_HEADER_BYTES, size - 8):
                return  # plausibly safetensors; read_safetensors_header checks the rest
        magic = head[:4]
        if magic.startswith(b"PK\x03\x04") or (len(magic) >= 2 and magic[0] == 0x80 and 2 <= magic[1] <= 5):
            kind = "a zip archive (torch.save format)" if magic.startswith(b"PK") else "a pickle stream"
            raise CheckpointError(
                f"{path}: the file is {kind}, not safetensors; refusing to unpickle it. "
                "Re-export the weights with mvssl_hub.save_pretrained."
            )


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Parse and check a safetensors header without trusting it: name -> {dtype, shape, data_offsets}.

    Raises CheckpointError for an empty or truncated file, an absurd header length, a header that is
    not JSON, or tensor offsets that do not tile the data section exactly.
    """
    refuse_pickle(path)
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path}: {size} bytes, too short for a safetensors file (empty or truncated)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError(
                f"{path}: corrupted safetensors header: declares a {n}-byte header but the file has {size} bytes"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted safetensors header: not JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header: expected a JSON object, got {type(header).__name__}")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    end_max = 0
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            numel = math.prod(int(s) for s in shape)
            ok = dtype in _ST_ITEMSIZE and 0 <= begin <= end and end - begin == numel * _ST_ITEMSIZE[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: corrupted safetensors header: bad entry for tensor {name!r}: {info!r}")
        end_max = max(end_max, end)
    if end_max != data_len:
        what = "truncated" if end_max > data_len else "has trailing bytes"
        raise CheckpointError(
            f"{path}: {what}: the header describes {end_max} bytes of tensor data but the file holds {data_len}"
        )
    return header


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` and fsync it (one place, so tests can inject a failure mid-save)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_folder(target: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` into a temporary sibling folder, fsync, then swap it in place of ``target``.

    Entries of an existing ``target`` that are not checkpoint files (e.g. training logs in a run folder)
    are moved into the new folder. A failure before the swap leaves ``target`` untouched and removes the
    temporary folder; a crash between the two renames leaves the previous checkpoint in
    ``.<name>.old-*`` next to it.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; a checkpoint is saved as a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        for name, data in files.items():
            _write_file(tmp / name, data)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{tag}"
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    if old.exists():
        for entry in old.iterdir():
            if entry.name not in CHECKPOINT_FILES and not (target / entry.name).exists():
                os.rename(entry, target / entry.name)
        shutil.rmtree(old)
    _fsync_dir(target.parent)
    return target


# ---------------------------------------------------------------------------------------------------- config

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def normalize_metric(record: Mapping[str, Any], where: str = "metric record") -> dict[str, Any]:
    """Check one metric record and fill defaults (random_init None, protocol "", date today)."""
    if not isinstance(record, Mapping):
        raise CheckpointError(f"{where}: expected a dict, got {type(record).__name__}")
    unknown = sorted(set(record) - set(_METRIC_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {unknown}; allowed: {list(_METRIC_KEYS)}")
    rec = {"random_init": None, "protocol": "", "date": _dt.date.today().isoformat(), **record}
    for key in ("task", "metric", "value", "dataset", "split"):
        if key not in rec:
            raise CheckpointError(f"{where}: missing field {key!r}")
    if rec["task"] not in METRIC_TASKS:
        raise CheckpointError(f"{where}: task={rec['task']!r}, expected one of {METRIC_TASKS}")
    if rec["metric"] not in METRIC_NAMES:
        raise CheckpointError(f"{where}: metric={rec['metric']!r}, expected one of {METRIC_NAMES}")
    for key in ("value", "random_init"):
        v = rec[key]
        if v is None and key == "random_init":
            continue
        if not _is_num(v) or not 0.0 <= v <= 100.0:
            raise CheckpointError(f"{where}: {key}={v!r} must be an accuracy in percent (0..100)")
        rec[key] = float(v)
    for key in ("dataset", "split", "protocol", "date"):
        if not isinstance(rec[key], str):
            raise CheckpointError(f"{where}: {key}={rec[key]!r} must be a string")
    if not _DATE.match(rec["date"]):
        raise CheckpointError(f"{where}: date={rec['date']!r} must be YYYY-MM-DD")
    return {k: rec[k] for k in _METRIC_KEYS}


def _metric_key(rec: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (rec["task"], rec["metric"], rec["dataset"], rec["split"])


def merge_metrics(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records of ``new`` replace those of ``old`` with the same (task, metric, dataset, split)."""
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for i, rec in enumerate(list(old) + list(new)):
        norm = normalize_metric(rec, f"metrics[{i}]")
        merged[_metric_key(norm)] = norm
    return list(merged.values())


# field -> (accepted python types, may be None)
_CONFIG_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), False),
    "format_version": ((int,), False),
    "library_version": ((str,), False),
    "backbone": ((dict,), False),
    "feature_dim": ((int,), False),
    "projector": ((str,), True),
    "method": ((str,), True),
    "beta": ((int, float), True),
    "num_views": ((int,), True),
    "dtype": ((str,), False),
    "train_config": ((dict,), True),
    "dataset": ((dict,), True),
    "transforms": ((dict,), True),
    "metrics": ((list,), False),
    "training": ((dict,), True),
    "files": ((dict,), False),
}
_NESTED_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "dataset": {"id": (str,), "revision": (str, type(None)), "split": (str,), "fraction": (int, float)},
    "transforms": {"preset": (str,), "eval_size": (int,), "eval_resize": (int, type(None)), "mean": (list,), "std": (list,)},
    "training": {"hardware": (str,), "wall_clock_s": (int, float), "images_per_s": (int, float),
                 "steps": (int,), "epochs": (int, float)},
}


def validate_config(cfg: Any, source: str = CONFIG_FILE) -> dict[str, Any]:
    """Check a parsed config.json; CheckpointError names the field, its value and what was expected."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(_CONFIG_FIELDS))
    if unknown:
        raise CheckpointError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(_CONFIG_FIELDS)}")
    missing = sorted(k for k, (_, nullable) in _CONFIG_FIELDS.items() if k not in cfg and not nullable)
    if missing:
        raise CheckpointError(f"{source}: missing field(s) {missing}")
    for key, (types, nullable) in _CONFIG_FIELDS.items():
        v = cfg.get(key)
        if v is None and nullable:
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise CheckpointError(f"{source}: field {key!r} = {v!r} has type {type(v).__name__}, expected {names}")
    if cfg["format"] != FORMAT or cfg["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format {cfg['format']!r} v{cfg['format_version']} is not {FORMAT!r} v{FORMAT_VERSION}"
        )
    bb = cfg["backbone"]
    if set(bb) != {"arch", "small_images", "width"}:
        raise CheckpointError(f"{source}: field 'backbone' = {bb!r} must have exactly arch, small_images, width")
    try:
        bcfg = BackboneConfig(**bb)
    except UnknownModelError as e:  # keep the type (and its close matches), name the file
        raise UnknownModelError(f"{source}: field 'backbone': {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: field 'backbone' = {bb!r}: {e}") from None
    if cfg["feature_dim"] != bcfg.feature_dim:
        raise CheckpointError(
            f"{source}: feature_dim = {cfg['feature_dim']} disagrees with backbone {bb} (feature dim {bcfg.feature_dim})"
        )
    if cfg.get("projector") is not None:
        try:
            dims = parse_projector_spec(cfg["projector"])
        except ValueError as e:
            raise CheckpointError(f"{source}: field 'projector': {e}") from None
        if dims[0] != bcfg.feature_dim:
            raise CheckpointError(
                f"{source}: projector {cfg['projector']!r} takes {dims[0]} inputs but the backbone gives {bcfg.feature_dim}"
            )
    if cfg.get("method") is not None and cfg["method"] not in ("barlowtwins", "vicreg"):
        raise CheckpointError(f"{source}: method = {cfg['method']!r}, expected 'barlowtwins' or 'vicreg'")
    if cfg["dtype"] not in _SAVE_DTYPES:
        raise CheckpointError(f"{source}: dtype = {cfg['dtype']!r}, expected one of {sorted(_SAVE_DTYPES)}")
    for section, types in _NESTED_TYPES.items():
        for key, t in types.items():
            sub = cfg.get(section) or {}
            if key in sub and (not isinstance(sub[key], t) or isinstance(sub[key], bool)):
                expected = " or ".join("null" if x is type(None) else x.__name__ for x in t)
                raise CheckpointError(f"{source}: field {section}.{key} = {sub[key]!r} has type "
                                      f"{type(sub[key]).__name__}, expected {expected}")
    cfg["metrics"] = [normalize_metric(m, f"{source}: metrics[{i}]") for i, m in enumerate(cfg["metrics"])]
    for name, info in cfg["files"].items():
        if name not in (MODEL_FILE, PROJECTOR_FILE):
            raise CheckpointError(f"{source}: files lists {name!r}; only {MODEL_FILE} and {PROJECTOR_FILE} are allowed")
        if (not isinstance(info, dict) or not _HEX64.match(str(info.get("sha256", "")))
                or not _is_int(info.get("size"))):
            raise CheckpointError(f"{source}: files[{name!r}] = {info!r} needs a 64-hex 'sha256' and an int 'size'")
    if MODEL_FILE not in cfg["files"]:
        raise CheckpointError(f"{source}: files has no entry for {MODEL_FILE}")
    if PROJECTOR_FILE in cfg["files"] and cfg.get("projector") is None:
        raise CheckpointError(f"{source}: {PROJECTOR_FILE} is listed but field 'projector' is null")
    return cfg


def read_config(path: Path) -> dict[str, Any]:
    """Read and validate a config.json file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; every mvssl-hub checkpoint has a {CONFIG_FILE}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    return validate_config(cfg, str(path))


def load_config(save_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated config.json of a local checkpoint folder."""
    return read_config(Path(save_dir) / CONFIG_FILE)


# ------------------------------------------------------------------------------------------------ state dicts

def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if type(model).__name__ in ("DistributedDataParallel", "DataParallel") else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading ``module.`` / ``_orig_mod.`` (any order, repeated) from every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in _WRAPPER_PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def _tensor_bytes(state: Mapping[str, torch.Tensor], dtype: torch.dtype, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    tensors = {
        k: (v.detach().to("cpu", dtype=dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state.items()
    }
    return save(tensors, metadata=metadata)


def _dtype_name(dtype: torch.dtype) -> str:
    for name, d in _SAVE_DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"dtype must be one of torch.float32/float16/bfloat16, got {dtype}")


def build_checkpoint_files(
    model: nn.Module, *, method: str | None, beta: float | None, num_views: int | None,
    train_config: dict | None, dataset: dict | None, transforms: dict | None, metrics: list[dict] | None,
    training: dict | None, include_projector: bool, dtype: torch.dtype,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The bytes of the weights files and the validated config (README not included)."""
    from . import __version__
    from .models import SSLModel

    model = unwrap_model(model)
    if isinstance(model, SSLModel):
        backbone, projector = model.backbone, model.projector
    elif isinstance(model, ResNetBackbone):
        backbone, projector = model, None
    else:
        raise TypeError(f"save_pretrained takes an SSLModel or ResNetBackbone, got {type(model).__name__}")
    if include_projector and projector is None:
        raise ValueError("include_projector=True needs an SSLModel; a bare ResNetBackbone has no projector")
    dtype_name = _dtype_name(dtype)
    meta = {"format": FORMAT, "arch": backbone.config.arch, "library_version": __version__}
    files: dict[str, bytes] = {MODEL_FILE: _tensor_bytes(strip_prefixes(backbone.state_dict()), dtype, meta)}
    if include_projector:
        assert projector is not None
        files[PROJECTOR_FILE] = _tensor_bytes(strip_prefixes(projector.state_dict()), dtype,
                                              {**meta, "projector": projector.spec})
    cfg: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "backbone": backbone.config.to_dict(),
        "feature_dim": backbone.feature_dim,
        "projector": projector.spec if projector is not None else None,
        "method": method,
        "beta": beta,
        "num_views": num_views,
        "dtype": dtype_name,
        "train_config": train_config,
        "dataset": dataset,
        "transforms": transforms,
        "metrics": list(metrics or []),
        "training": training,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in files.items()},
    }
    # round-trip through JSON so that what is validated is exactly what is written
    cfg = validate_config(json.loads(_json_bytes(cfg)), "config being saved")
    return files, cfg


def expected_state(module: nn.Module, dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """key -> (shape, dtype) a checkpoint of ``module`` saved in ``dtype`` holds."""
    return {
        k: (tuple(v.shape), dtype if v.is_floating_point() else v.dtype)
        for k, v in module.state_dict().items()
    }


def check_header_against(
    path: Path, header: Mapping[str, Mapping[str, Any]], expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    hint: str = "",
) -> None:
    """One CheckpointError listing every missing / unexpected key and every shape or dtype mismatch."""
    found = dict(zip(strip_prefixes(dict.fromkeys(header)), header.values()))  # same order, prefixes stripped
    problems: list[str] = []
    for key in sorted(set(expected) - set(found)):
        problems.append(f"  missing key {key!r}: expected shape {list(expected[key][0])} {expected[key][1]}")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"  unexpected key {key!r}: found shape {list(found[key]['shape'])} {found[key]['dtype']}")
    for key in sorted(set(found) & set(expected)):
        exp_shape, exp_dtype = expected[key]
        shape, dt = tuple(found[key]["shape"]), _ST_DTYPES.get(found[key]["dtype"])
        if shape != exp_shape:
            problems.append(f"  {key!r}: expected shape {list(exp_shape)}, found {list(shape)}")
        if dt != exp_dtype:
            problems.append(f"  {key!r}: expected dtype {exp_dtype}, found {found[key]['dtype']} ({dt})")
    if problems:
        raise CheckpointError(
            f"{path}: {len(problems)} tensor(s) do not match the model {hint}:\n" + "\n".join(problems)
        )


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """IntegrityError if the file's sha256 differs from ``expected``."""
    found = sha256_file(path)
    if found != expected:
        raise IntegrityError(f"{path}: sha256 {found} does not match {expected} recorded in {what}")


def load_tensors(path: Path, header_check: Mapping[str, tuple[tuple[int, ...], torch.dtype]], hint: str) -> dict[str, torch.Tensor]:
    """Checked safetensors -> state dict (prefixes stripped); non-finite values raise CheckpointError."""
    from safetensors.torch import load_file

    header = read_safetensors_header(path)
    check_header_against(path, header, header_check, hint)
    state = strip_prefixes(load_file(str(path)))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        counts = ", ".join(f"{k!r} ({int((~torch.isfinite(state[k])).sum())} values)" for k in bad)
        raise CheckpointError(f"{path}: NaN/Inf in {len(bad)} tensor(s): {counts}")
    return state


def build_from_config(cfg: Mapping[str, Any], with_projector: bool) -> nn.Module:
    """An untrained model shaped like the checkpoint: a ResNetBackbone, or an SSLModel with its projector."""
    from .models import SSLModel

    backbone = ResNetBackbone(BackboneConfig(**cfg["backbone"]))
    if not with_projector:
        return backbone
    return SSLModel(backbone, Projector(cfg["projector"]))


def load_checkpoint_files(
    cfg: dict[str, Any], paths: Mapping[str, Path], *, with_projector: bool, source: str,
) -> nn.Module:
    """Build the model described by ``cfg`` and load the (already sha256-verified) weights files strictly."""
    from .models import SSLModel

    model = build_from_config(cfg, with_projector)
    dtype = _SAVE_DTYPES[cfg["dtype"]]
    bb = cfg["backbone"]
    hint = (f"described by {source} (arch={bb['arch']}, small_images={bb['small_images']}, width={bb['width']}, "
            f"dtype={cfg['dtype']})")
    backbone = model.backbone if isinstance(model, SSLModel) else model
    state = load_tensors(paths[MODEL_FILE], expected_state(backbone, dtype), hint)
    backbone.load_state_dict(state, strict=True)
    if isinstance(model, SSLModel):
        pstate = load_tensors(paths[PROJECTOR_FILE], expected_state(model.projector, dtype),
                              f"described by {source} (projector={cfg['projector']!r}, dtype={cfg['dtype']})")
        model.projector.load_state_dict(pstate, strict=True)
    model.mvssl_config = cfg  # type: ignore[assignment]
    model.eval()
    return model


_EXPECTED_KEYS = ("arch", "small_images", "width", "feature_dim", "method", "projector", "proj_dim", "num_views", "beta")


def check_expected(cfg: Mapping[str, Any], expected: Mapping[str, Any], source: str) -> None:
    """ValueError naming both values when a caller's kwargs contradict the checkpoint's config."""
    unknown = sorted(set(expected) - set(_EXPECTED_KEYS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; can check {list(_EXPECTED_KEYS)}")
    spec = cfg.get("projector")
    found = {
        **cfg["backbone"], "feature_dim": cfg["feature_dim"], "method": cfg.get("method"), "projector": spec,
        "proj_dim": parse_projector_spec(spec)[-1] if spec else None, "num_views": cfg.get("num_views"),
        "beta": cfg.get("beta"),
    }
    for key, want in expected.items():
        if want is not None and want != found[key]:
            raise ValueError(f"{key}={want!r} was asked for, but the checkpoint {source} has {key}={found[key]!r}")


def with_metrics(cfg: dict[str, Any], metrics: list[dict]) -> dict[str, Any]:
    """A copy of ``cfg`` with ``metrics`` merged in (same (task, metric, dataset, split) replaces)."""
    new = dict(cfg)
    new["metrics"] = merge_metrics(cfg.get("metrics", []), metrics)
    return validate_config(json.loads(_json_bytes(new)), "updated config")


def config_bytes(cfg: Mapping[str, Any]) -> bytes:
    return _json_bytes(cfg)


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder at ``path``: itself, ``path/export`` (a pretrain run), or the one folder below it.

    FileNotFoundError if there is none, ValueError (listing them) if there are several.
    """
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file():
        return path
    if (path / "export" / CONFIG_FILE).is_file() and (path / "export" / MODEL_FILE).is_file():
        return path / "export"
    found = sorted({p.parent for pattern in (f"*/{CONFIG_FILE}", f"*/*/{CONFIG_FILE}") for p in path.glob(pattern)
                    if (p.parent / MODEL_FILE).is_file() and not p.parent.name.startswith(".")})
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint folder ({CONFIG_FILE} + {MODEL_FILE}) in it or below it")
    raise ValueError(f"{path}: several checkpoint folders {[str(p) for p in found]}; pass one of them")

"""The records a checkpoint's config.json holds, built in one place for every recipe.

- :func:`metric_record`: one result beside the same network at random initialisation, with its protocol.
- :func:`knn_protocol`, :func:`linear_probe_protocol`: the protocol strings of the two probes.
- :func:`dataset_record`: what data a model saw, named by Hub id or a given name, never by a local path.
- :func:`transforms_record`: the evaluation transform of a view preset.
- :func:`training_record`: hardware, time and throughput of a run.
- :func:`portable_config`, :func:`portable_command`: a recipe's config and command as published, with no
  local path in them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from ..views import ViewPreset

__all__ = ["dataset_name", "dataset_record", "knn_protocol", "linear_probe_protocol", "metric_record",
           "portable_command", "portable_config", "portable_value", "training_record", "transforms_record"]


def dataset_name(source: str, name: str | None = None) -> str:
    """How a dataset is named in published artifacts: ``name`` when given, else ``source`` when it is a Hub
    id, else the last component of a local path (never the path itself: it is the publisher's disk)."""
    if name:
        return name
    return Path(source.rstrip("/")).name if _is_local_path(source) or Path(source).exists() else source


def dataset_record(source: str, *, name: str | None = None, revision: str | None = None, split: str = "train",
                   fraction: float = 1.0) -> dict[str, Any]:
    """config.json's ``dataset``: {id, revision, split, fraction}."""
    return {"id": dataset_name(source, name), "revision": revision, "split": split, "fraction": fraction}


def transforms_record(preset_name: str, preset: ViewPreset) -> dict[str, Any]:
    """config.json's ``transforms``: the evaluation transform (preset, eval_size, eval_resize, mean, std)."""
    record: dict[str, Any] = {"preset": preset_name, "eval_size": preset.eval_size, "mean": list(preset.mean),
                              "std": list(preset.std)}
    if preset.eval_resize is not None:
        record["eval_resize"] = preset.eval_resize
    return record


def training_record(*, hardware: str, seconds: float, images_per_s: float, steps: int,
                    epochs: float) -> dict[str, Any]:
    """config.json's ``training``: where and how long the model trained."""
    return {"hardware": hardware, "wall_clock_s": round(seconds, 1), "images_per_s": round(images_per_s, 2),
            "steps": steps, "epochs": round(epochs, 4)}


def knn_protocol(*, k: int, temperature: float, bank_split: str, bank_size: int, query_size: int) -> str:
    return (f"weighted kNN, k={k}, T={temperature}, cosine on L2-normalised features, 1 centre view; "
            f"bank: {bank_split} ({bank_size} images), queries: {query_size} images")


def linear_probe_protocol(*, lr: float, weight_decay: float, epochs: int, batch_size: int, label_smoothing: float,
                          standardize: bool, views: int, train_split: str, train_size: int, test_size: int) -> str:
    return (f"linear probe on frozen features: Adam lr={lr:g}, wd={weight_decay:g}, {epochs} epochs, batch "
            f"{batch_size}, label smoothing {label_smoothing:g}, {'standardised' if standardize else 'raw'} "
            f"features, {views} view{'s' if views > 1 else ''}; train: {train_split} ({train_size} images), "
            f"test: {test_size} images")


def metric_record(task: str, metric: str, value: float, random_init: float | None, *, dataset: str, split: str,
                  protocol: str) -> dict[str, Any]:
    """One result: {task, metric, value, random_init, dataset, split, protocol, date} (percent, 4 decimals)."""
    return {"task": task, "metric": metric, "value": round(float(value), 4),
            "random_init": None if random_init is None else round(float(random_init), 4), "dataset": dataset,
            "split": split, "protocol": protocol, "date": dt.date.today().isoformat()}


def _is_local_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith("~") or value.startswith("./") or value.startswith("../")


def portable_value(value: Any) -> Any:
    """A local path (absolute, ``~``, ``./``, ``../``) reduced to its last component; anything else unchanged."""
    if isinstance(value, str) and _is_local_path(value):
        return Path(value.rstrip("/")).name
    return value


def portable_command(argv: list[str], replace: dict[str, str] | None = None) -> str:
    """A command line with ``replace``'s values swapped in (e.g. a local data copy -> its Hub id) and every other
    local path reduced to its last component: a published card names no one's disk."""
    import shlex

    replace = replace or {}
    out = []
    for arg in argv:
        key, eq, val = arg.partition("=")
        if eq and arg.startswith("--"):
            out.append(f"{key}={replace.get(val, portable_value(val))}")
        else:
            out.append(replace.get(arg, str(portable_value(arg))))
    return shlex.join(out)


def portable_config(config: dict[str, Any], *, data_name: str | None = None) -> dict[str, Any]:
    """A recipe's resolved config as published: ``data`` by Hub id or given name, other local paths reduced to
    their last component, the typed command likewise. What is dropped is the publisher's directory layout."""
    out = {k: portable_value(v) for k, v in config.items()}
    if isinstance(config.get("data"), str):
        out["data"] = dataset_name(config["data"], data_name)
    if isinstance(config.get("command"), str):
        import shlex

        data = config.get("data")
        swap = {data: dataset_name(data, data_name)} if isinstance(data, str) and data_name else {}
        out["command"] = portable_command(shlex.split(config["command"]), swap)
    return out

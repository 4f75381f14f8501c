"""Model cards generated from a checkpoint's config.json and the template in ``model_cards/``.

The YAML front matter (license, library_name, tags, datasets, pipeline_tag, model-index) is written
by huggingface_hub's ``ModelCardData`` so that ``ModelCard`` parses it back; each metric record of the
config becomes one ``EvalResult`` whose ``metric_config`` is ``"<task>/<metric>"`` (e.g. ``"knn/top1"``).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from ..timm_backbone import is_timm_arch
from ..vocabulary import TIMM_PREFIX, builder_name


def _template_path(name: str = "template.md") -> Path:
    """A card template: ``model_cards/`` beside the package in a source checkout, else the installed package data
    ``mvssl_hub/model_cards`` (pyproject installs ``model_cards/`` there)."""
    package = Path(str(resources.files("mvssl_hub")))
    source = package.parent / "model_cards" / name
    return source if source.is_file() else package / "model_cards" / name


TEMPLATE_PATH = _template_path()
CLASSIFIER_TEMPLATE_PATH = _template_path("classifier_template.md")  # a checkpoint with num_classes
TIMM_TEMPLATE_PATH = _template_path("timm_template.md")  # a timm backbone: loads with timm alone
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TASK_NAMES = {"knn": "kNN", "linear_probe": "Linear probe", "finetune": "Fine-tuning"}
METRIC_LABELS = {"top1": "top-1", "top5": "top-5"}
METHOD_NAMES = {"barlowtwins": "multi-view Barlow Twins", "vicreg": "multi-view VICReg"}


def eval_results(cfg: Mapping[str, Any]) -> list[Any]:
    """The config's metric records as ``huggingface_hub.EvalResult`` objects (same order)."""
    from huggingface_hub import EvalResult

    out = []
    for rec in cfg.get("metrics", []):
        ds = cfg.get("dataset") or {}
        out.append(EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=rec["dataset"],
            dataset_name=rec["dataset"],
            dataset_split=rec["split"],
            dataset_revision=ds.get("revision") if ds.get("id") == rec["dataset"] else None,
            metric_type="accuracy",
            metric_value=rec["value"],
            metric_name=f"{TASK_NAMES[rec['task']]} {METRIC_LABELS[rec['metric']]} accuracy",
            metric_config=f"{rec['task']}/{rec['metric']}",
            metric_args={"protocol": rec["protocol"], "random_init": rec["random_init"], "date": rec["date"]},
        ))
    return out


def _fmt(v: Any, digits: int = 2) -> str:
    return "—" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _front_matter(cfg: Mapping[str, Any], model_name: str) -> str:
    from huggingface_hub import ModelCardData

    ds = (cfg.get("dataset") or {}).get("id")
    if ds and not _HUB_ID.match(ds):
        ds = None  # a local path is not a Hub dataset id; the body still names it
    task = "image-classification" if cfg.get("num_classes") else "image-feature-extraction"
    tags = ["self-supervised-learning", task, "mvssl-hub", cfg["backbone"]["arch"]]
    if cfg.get("method"):
        tags.append(cfg["method"])
    data = ModelCardData(
        license="apache-2.0",
        library_name="mvssl-hub",
        tags=tags,
        datasets=[ds] if ds else None,
        pipeline_tag=task,
        model_name=model_name,
        base_model=cfg.get("base_model") or None,
        eval_results=eval_results(cfg) or None,
    )
    return data.to_yaml()


def _results_table(cfg: Mapping[str, Any]) -> str:
    rows = ["| task | metric | dataset (split) | accuracy % | random init % | gain (points) | protocol | date |",
            "|---|---|---|---|---|---|---|---|"]
    for r in cfg.get("metrics", []):
        gain = None if r["random_init"] is None else r["value"] - r["random_init"]
        rows.append(
            f"| {TASK_NAMES[r['task']]} | {METRIC_LABELS[r['metric']]} | {r['dataset']} ({r['split']}) | "
            f"{r['value']:.2f} | {_fmt(r['random_init'])} | {'—' if gain is None else f'{gain:+.2f}'} | "
            f"{r['protocol'] or '—'} | {r['date']} |"
        )
    if len(rows) == 2:
        return "No evaluation has been recorded yet (`mvssl_hub.update_metrics` adds results)."
    return "\n".join(rows)


def _monitors_table(cfg: Mapping[str, Any]) -> str:
    """The label-free measures (RankMe, alpha-ReQ with its fit's R^2, LiDAR) on backbone and projector outputs."""
    mon = cfg.get("monitors")
    if not mon:
        return ""
    rows = ["| space | RankMe | alpha-ReQ (R²) | LiDAR |", "|---|---|---|---|"]
    for space in ("backbone", "projector"):
        res = mon.get(space) or {}
        if not res:
            continue
        alpha = res.get("alpha_req") or {}
        cells = [_fmt((res.get("rankme") or {}).get("value")),
                 f"{_fmt(alpha.get('value'))} ({_fmt(alpha.get('r2'), 3)})" if alpha else "—",
                 _fmt((res.get("lidar") or {}).get("value"))]
        rows.append(f"| {space} | " + " | ".join(cells) + " |")
    p = mon.get("protocol") or {}
    return ("\n\nLabel-free measures (no labels used; `mvssl_hub.eval.monitor`), on "
            f"{p.get('num_images', '?')} held-out images, {p.get('num_views', '?')} views, seed {p.get('seed', '?')}:\n\n"
            + "\n".join(rows))


def _checkout_preset(name: str) -> str:
    """A preset named without its folder (a run that copied it elsewhere) as its path from the checkout's root,
    when this checkout has exactly one file of that name under recipes/configs/; else the name as given."""
    root = Path(str(resources.files("mvssl_hub"))).parent / "recipes" / "configs"
    found = sorted(root.rglob(name)) if root.is_dir() and "/" not in name else []
    return str(found[0].relative_to(root.parents[1])) if len(found) == 1 else name


def reproduction_command(cfg: Mapping[str, Any]) -> str | None:
    """The recorded training command as a reproduction from the checkout's root: the preset by its path, without
    ``--resume`` (how a chunk continued the run, not what the run was) and, when the run reached the end of its
    schedule, without the ``--time_budget`` that stopped a chunk. None when no command was recorded."""
    tc = cfg.get("train_config") or {}
    if not isinstance(tc.get("command"), str):
        return None
    words, out = shlex.split(tc["command"]), []
    done = (cfg.get("training") or {}).get("epochs") is not None and isinstance(tc.get("epochs"), (int, float)) \
        and cfg["training"]["epochs"] >= tc["epochs"] - 1e-6
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--resume", "--no-resume"):
            i += 1
            continue
        if word == "--time_budget" and done and i + 1 < len(words):
            i += 2
            continue
        out.append(word)
        if word == "--config" and i + 1 < len(words):
            out.append(_checkout_preset(words[i + 1]))
            i += 1
        i += 1
    return shlex.join(out)


def _recipe_command(cfg: Mapping[str, Any]) -> str:
    tc = cfg.get("train_config") or {}
    command = reproduction_command(cfg)
    if command is not None:
        return command
    if isinstance(tc.get("config"), str):
        return f"accelerate launch recipes/pretrain.py --config {tc['config']}"
    if tc:
        # train_config is the fully resolved recipe config; pretrain.py reads it back with --config
        return ("python -c \"import json, yaml; yaml.safe_dump(json.load(open('config.json'))['train_config'], "
                "open('train_config.yaml', 'w'), sort_keys=False)\"\n"
                "accelerate launch recipes/pretrain.py --config train_config.yaml")
    return "# not recorded: this checkpoint was saved without a train_config"


def _training_time(cfg: Mapping[str, Any]) -> str | None:
    """The run's training seconds, with the clock that counted them named."""
    seconds = (cfg.get("training") or {}).get("wall_clock_s")
    if seconds is None:
        return None
    clock = (cfg.get("train_config") or {}).get("clock")
    if clock == "process":
        return f"{seconds:,.0f} CPU-seconds of training (the process's CPU time; evaluation and saving excluded)"
    if clock == "wall":
        return f"{seconds:,.0f} s of training, wall clock (evaluation and saving excluded)"
    return f"{seconds:,.0f} s of training"


def _timm_lines(cfg: Mapping[str, Any], repo_id: str) -> tuple[str, str]:
    """(the card snippet's timm line, or "", and a sentence on loading with timm) for a ResNet backbone."""
    bb = cfg["backbone"]
    if cfg.get("architecture"):  # config.json carries what timm reads: timm builds this very network
        return (f'\n# 4. with timm alone (no mvssl-hub): config.json carries what timm reads\nimport timm\n'
                f'backbone = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n', "")
    why = [w for w, bad in (("the small-image stem (3×3 stride-1 conv, no max-pool)", bb["small_images"]),
                            (f"width {bb['width']}", bb["width"] != 64), (f"{bb['arch']}", bb["arch"] == "resnet10"))
           if bad]
    return "", (f"timm has no ResNet with {' and '.join(why)}, so timm alone cannot build this network: load it "
                "with mvssl-hub as above.\n\n")


def _template_for(cfg: Mapping[str, Any], template: str | os.PathLike[str] | None) -> Path:
    """``template``, else the classifier's, timm backbone's or ResNet backbone's card template."""
    classifier = cfg.get("num_classes") is not None
    timm = is_timm_arch(cfg["backbone"]["arch"])
    default = CLASSIFIER_TEMPLATE_PATH if classifier else (TIMM_TEMPLATE_PATH if timm else TEMPLATE_PATH)
    path = Path(template) if template is not None else default
    if not path.is_file():
        raise FileNotFoundError(f"model card template {path} not found (it ships in model_cards/ of mvssl-hub)")
    return path


def _architecture_values(cfg: Mapping[str, Any], repo_id: str | None, builder: str, generic: str) -> dict[str, Any]:
    """The card's title and what it says of the network: its description, the builder's kwargs, how torchvision or
    timm rebuild it."""
    bb = cfg["backbone"]
    if is_timm_arch(bb["arch"]):
        timm_kwargs = "".join(f", {k}={v!r}" for k, v in bb["kwargs"].items())
        return {
            "title": repo_id.split("/")[-1] if repo_id else builder,
            "arch_desc": f"`{bb['arch'][len(TIMM_PREFIX):]}`" + (f" ({timm_kwargs[2:]})" if timm_kwargs else ""),
            "timm_name": bb["arch"][len(TIMM_PREFIX):], "timm_kwargs": timm_kwargs, "builder_kwargs": "",
            "tv_note": f": `timm` {bb.get('timm_version')} built it; any timm >= 1.0 loads it as shown above.",
            "timm_line": "", "timm_note": "",
        }
    stem = "small-image stem (3×3 stride-1 conv, no max-pool)" if bb["small_images"] else "ImageNet stem"
    width = "" if bb["width"] == 64 else f", width {bb['width']} (stages {bb['width']}/{2*bb['width']}/{4*bb['width']}/{8*bb['width']})"
    timm_line, timm_note = _timm_lines(cfg, repo_id or "org/name")
    if bb["width"] == 64:
        tv_note = (f": `torchvision.models.{bb['arch']}(weights=None)`" + (
                   ", with `conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)` and "
                   "`maxpool = nn.Identity()`" if bb["small_images"] else "") +
                   ", `fc = Identity()`, then `model.load_state_dict(safetensors.torch.load_file(\"model.safetensors\"))` "
                   "with `strict=True`.")
    else:
        tv_note = ": this reduced-width network needs mvssl-hub's `build_backbone` (key names are torchvision's)."
    return {
        "title": repo_id.split("/")[-1] if repo_id else f"{builder}-w{bb['width']}",
        "arch_desc": f"{bb['arch']} ({stem}{width})", "timm_name": "", "timm_kwargs": "",
        "builder_kwargs": ("" if (bb["width"] == 64 and bb["small_images"]) or builder != generic  # a named builder
                           else f", small_images={bb['small_images']}, width={bb['width']}"),  # fixes them
        "tv_note": tv_note, "timm_line": timm_line, "timm_note": timm_note,
    }


def _transform_desc(tf: Mapping[str, Any]) -> str:
    if not tf:
        return "not recorded"
    size = (f"resize to {tf['eval_resize']} px, centre crop {tf.get('eval_size', '?')} px" if tf.get("eval_resize")
            else f"images at {tf.get('eval_size', '?')} px (no resize)")
    return (f"preset `{tf.get('preset', '?')}`, {size}, normalise with mean {tf.get('mean', '?')} "
            f"and std {tf.get('std', '?')}")


def _dataset_desc(ds: Mapping[str, Any]) -> str:
    frac = ds.get("fraction")
    return (f"on `{ds['id']}` (split `{ds.get('split', 'train')}`"
            + (f", revision `{ds['revision']}`" if ds.get("revision") else "")
            + (f", {100 * frac:g}% of the images" if isinstance(frac, (int, float)) and frac != 1 else "") + ")"
            if ds.get("id") else "(pretraining data not recorded)")


def _training_table(cfg: Mapping[str, Any]) -> str:
    """The run's hardware, time, throughput, steps, epochs and weights dtype, then its curves figure if any."""
    tr = cfg.get("training") or {}
    rows = [
        ("hardware", tr.get("hardware")), ("training time", _training_time(cfg)),
        ("throughput", None if tr.get("images_per_s") is None else f"{tr['images_per_s']:.1f} images/s"),
        ("steps", tr.get("steps")), ("epochs", tr.get("epochs")),
        ("weights dtype", cfg["dtype"]),
    ]
    return "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows) + (
        f"\n\n![Loss, kNN top-1 and throughput against training time]({tr['curves']})" if tr.get("curves") else "")


def render_card(cfg: Mapping[str, Any], *, repo_id: str | None = None, revision: str | None = None,
                template: str | os.PathLike[str] | None = None, builder: str | None = None) -> str:
    """README.md text for a validated config; ``repo_id`` fills the load snippets, and ``builder`` (the zoo builder
    it is published under, when that is not the generic one of its architecture, e.g. a builder that fixes stem and
    width) the load-by-name snippets."""
    path = _template_for(cfg, template)
    ds = cfg.get("dataset") or {}
    generic = builder_name(cfg)
    builder = builder or generic
    arch = _architecture_values(cfg, repo_id, builder, generic)
    values = {
        **arch,  # title, arch_desc, timm_name, timm_kwargs, builder_kwargs, tv_note, timm_line, timm_note
        "front_matter": _front_matter(cfg, arch["title"]).strip(),
        "method_name": METHOD_NAMES.get(cfg.get("method") or "", "self-supervised learning"),
        "views_desc": f"{cfg['num_views']} views per image" if cfg.get("num_views") else "views not recorded",
        "projector": cfg.get("projector") or "not recorded",
        "beta": "not recorded" if cfg.get("beta") is None else f"{cfg['beta']:g}",
        "dataset_desc": _dataset_desc(ds),
        "feature_dim": cfg["feature_dim"],
        "library_version": cfg["library_version"],
        "repo_id": repo_id or "path/to/this/checkpoint_folder",
        "revision_arg": f', revision="{revision}"' if revision else "",
        "builder": builder,
        "transform_desc": _transform_desc(cfg.get("transforms") or {}),
        "results_table": _results_table(cfg) + _monitors_table(cfg),
        "recipe_command": _recipe_command(cfg),
        "training_table": _training_table(cfg),
        "files_table": "\n".join(f"| `{n}` | `{i['sha256']}` | {i['size']} |" for n, i in cfg["files"].items()),
        "limitations_data": (f"Pretrained and evaluated on `{ds['id']}` only; transfer to other image domains was not measured."
                             if ds.get("id") else "The pretraining data is not recorded in config.json."),
        "projector_note": "included (`projector.safetensors`)" if "projector.safetensors" in cfg["files"] else "not included",
        "num_classes": cfg.get("num_classes"),
        "class_names": ", ".join(cfg.get("class_names") or [])[:200] or "class indices (no names recorded)",
        "finetune_data_desc": next((f"on `{m['dataset']}`, evaluated on its `{m['split']}` split"
                                    for m in cfg.get("metrics", []) if m["task"] == "finetune"), "(data not recorded)"),
        "base_model": cfg.get("base_model") or "a pretrained mvssl-hub checkpoint (not recorded)",
    }
    return Template(path.read_text(encoding="utf-8")).substitute(values)

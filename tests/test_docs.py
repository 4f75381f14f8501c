"""Every snippet of the README and of the zoo's model cards runs offline, as written.

Python snippets run with the network absent (conftest refuses every non-loopback connection) and an empty Hub
cache; the only edits are the placeholders a reader fills in: the demo's export folder (a small checkpoint saved
here), the checkout's path, and ``images`` where a card's snippet assumes the reader's own batch. A snippet that
publishes runs against the loopback Hub; a card's ``hf-hub:`` line finds its repo in the Hub cache, as after a
download. The README's own-images commands run in-process on a generated folder of JPEGs, with only the run's
length and size cut down.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image

import mvssl_hub
from mvssl_hub.registry import registered_weights

from conftest import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "model_cards").glob("*.md") if "template" not in p.name)]
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def snippets(language: str = "python") -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(rf"```{language}\n(.*?)```", text, flags=re.S):
            found.append((doc.name, text[: m.start()].count("\n") + 1, m.group(1)))
    return found


def _cache_zoo_repos(cache: Path) -> None:
    """Every zoo entry's repo in the Hub cache at its pinned commit, as `hf download` leaves it."""
    for enum in registered_weights().values():
        for member in enum:
            w = member.value
            repo = cache / f"models--{w.repo_id.replace('/', '--')}"
            snapshot = repo / "snapshots" / w.revision
            if snapshot.exists():
                continue
            snapshot.mkdir(parents=True)
            for f in w.bundled_path().iterdir():
                os.symlink(f, snapshot / f.name)
            (repo / "refs").mkdir()
            (repo / "refs" / "main").write_text(w.revision)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """An empty Hub cache, the checkout as the working folder, and a demo export to load."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(ROOT)
    torch.manual_seed(0)
    export = mvssl_hub.save_pretrained(mvssl_hub.build_ssl_model("resnet18", width=8, proj_dim=16),
                                       tmp_path / "demo" / "export", include_projector=True)
    return {"runs/demo/export": str(export), "path/to/mvssl-hub": str(ROOT)}


def test_the_docs_have_snippets() -> None:
    names = {doc for doc, _, _ in snippets()}
    assert "README.md" in names and any(n.endswith(".md") and n != "README.md" for n in names)


@pytest.mark.parametrize(("doc", "line", "code"), snippets(), ids=lambda v: str(v)[:40] if isinstance(v, str) else "")
def test_snippet_runs_offline(checkout, request, monkeypatch, doc: str, line: int, code: str) -> None:
    if "push_to_hub(" in code:  # publishing: the loopback Hub is the only one the test network reaches
        request.getfixturevalue("hub")
        monkeypatch.chdir(ROOT)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    if 'create_model("hf-hub:' in code:
        _cache_zoo_repos(Path(constants.HF_HUB_CACHE))
    for placeholder, value in checkout.items():
        code = code.replace(placeholder, value)
    namespace = {"__name__": f"{doc}:{line}", "images": torch.randn(2, 3, 32, 32)}  # a reader's own batch
    exec(compile(code, f"{doc}:{line}", "exec"), namespace)


def _photos(root: Path) -> dict[str, Path]:
    """A labelled folder (train/ and test/, a subfolder per class) and a flat unlabelled one, of mixed-size JPEGs."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for label in ("cat", "dog"):
            folder = root / "photos" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (100 + i, 120, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    (root / "unlabeled").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (110, 100 + i, 3), dtype=np.uint8)).save(root / "unlabeled" / f"{i}.jpg")
    return {"path/to/photos": root / "photos", "path/to/unlabeled": root / "unlabeled"}


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_the_readmes_own_images_commands_run(tmp_path, monkeypatch) -> None:
    block = re.search(r"```bash\n(.*?)```", _section("Pretrain on your own images"), flags=re.S)
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()
                and not line.lstrip().startswith("#")]
    assert [c[:3] for c in commands] == [["accelerate", "launch", "recipes/pretrain.py"]] * 3 + \
        [["python", "recipes/evaluate.py", "runs/photos"]]
    places = _photos(tmp_path)
    monkeypatch.chdir(tmp_path)  # the runs/ folders the commands name land here
    pretrain, evaluate = load_recipe("pretrain", "docs_pretrain"), load_recipe("evaluate", "docs_evaluate")
    # width 16 and one step: the commands as written, at a size the suite affords
    short = ["--max_steps", "1", "--batch_size", "8", "--width", "16", "--no-monitors", "--progress", "false"]
    said = []
    for command in commands:
        args = [str(places.get(a, a)) for a in command[command.index(next(a for a in command if a.startswith(
            "recipes/"))) + 1:]]
        if command[0] == "python":
            out = evaluate.main([*args, "--limit", "16", "--no-monitors", "--progress", "false"])
            assert {r["task"] for r in out["records"]} == {"knn", "linear_probe"}
            assert all(r["random_init"] is not None for r in out["records"])
            continue
        said.append(pretrain.main([*args, *short]))
    assert all((tmp_path / d / "export" / "model.safetensors").is_file() for d in ("runs/photos", "runs/unlabeled", "runs/unlabeled_no_knn"))
    cfg = mvssl_hub.from_pretrained(str(tmp_path / "runs" / "photos" / "export")).mvssl_config
    assert cfg["transforms"]["preset"] == "stl10" and cfg["transforms"]["eval_size"] == 96

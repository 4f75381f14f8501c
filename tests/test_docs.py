"""Every Python snippet of the README and of the zoo's model cards runs offline, as written.

The only edits are the placeholders a reader fills in: the demo's export folder (a small checkpoint saved
here), the checkout's path, and ``images`` where a card's snippet assumes the reader's own batch.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

import mvssl_hub

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "model_cards").glob("*.md") if "template" not in p.name)]


def snippets() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
            found.append((doc.name, text[: m.start()].count("\n") + 1, m.group(1)))
    return found


@pytest.fixture
def offline_checkout(tmp_path, monkeypatch):
    """Offline, an empty Hub cache, the checkout as the working folder, and a demo export to load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
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
def test_snippet_runs_offline(offline_checkout, doc: str, line: int, code: str) -> None:
    for placeholder, value in offline_checkout.items():
        code = code.replace(placeholder, value)
    namespace = {"__name__": f"{doc}:{line}", "images": torch.randn(2, 3, 32, 32)}  # a reader's own batch
    exec(compile(code, f"{doc}:{line}", "exec"), namespace)

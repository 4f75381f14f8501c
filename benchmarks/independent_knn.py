"""Independent re-evaluation of a zoo checkpoint's weighted-kNN top-1 on CIFAR-10, without mvssl_hub.

Nothing from mvssl_hub is imported: the backbone is torchvision's ResNet-18 (fc = Identity; the 3x3 stride-1
stem without max-pool when config.json's ``backbone.small_images`` is true; a narrower width rebuilt from
torchvision's own BasicBlock layers), the weights come from ``model.safetensors`` (strict), the images are decoded
with PIL from the parquet files of ``uoft-cs/cifar10`` and normalised with config.json's ``transforms`` mean / std,
at their own size (no resize). kNN: L2-normalised features, cosine similarity, the k = 200 most similar bank
images vote for their class with weight exp(sim / T), T = 0.1 (InstDisc; solo-learn's weighted kNN). Bank: the
train split, queries: the test split; the same for the network at random init (torch.manual_seed(0)) as a
baseline. Prints and writes a JSON with the value config.json records for the same protocol and the difference.

    python benchmarks/independent_knn.py ~/.cache/mvssl-hub/campaign-gpu/barlowtwins_resnet18_cifar10/export \
        --data ../shared/data/cifar10                                   # 50,000 bank / 10,000 queries
    python benchmarks/independent_knn.py CHECKPOINT --data ../shared/data/cifar10 --limit 2000 --out /tmp/knn.json
    python benchmarks/independent_knn.py mvssl_hub/bundled/mvssl-hub--barlowtwins-resnet18-w16-cifar10 \
        --data recipes/data/cifar10-5k                                  # the embedded cut: 5,000 / 1,000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision.models import resnet18


def build_backbone(backbone: dict[str, Any]) -> nn.Module:
    """torchvision ResNet-18 trunk from config.json's ``backbone``: (N, 3, H, W) -> (N, 8 * width)."""
    arch, width = backbone.get("arch"), backbone.get("width", 64)
    if arch != "resnet18" or not isinstance(width, int) or width < 1:
        raise SystemExit(f"independent_knn: only arch resnet18 with a positive int width, got {arch!r} width {width!r}")
    net = resnet18(weights=None)
    net.fc = nn.Identity()
    if width != 64:  # torchvision's own layers, rebuilt at widths (w, 2w, 4w, 8w)
        net.inplanes, net.bn1 = width, nn.BatchNorm2d(width)
        net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        for i, stride in enumerate((1, 2, 2, 2)):
            setattr(net, f"layer{i + 1}", net._make_layer(type(net.layer1[0]), width * 2**i, 2, stride=stride))
    if backbone.get("small_images"):
        net.conv1, net.maxpool = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.Identity()
    for m in net.modules():  # torchvision's initialisation, also for the replaced modules
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net.eval()


def load_split(path: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` rows of a parquet split: images uint8 (N, 3, H, W), labels int64 (N,)."""
    table = pq.read_table(path, columns=["img", "label"])
    table = table.slice(0, limit) if limit else table
    arrays = [np.asarray(Image.open(io.BytesIO(row["bytes"])).convert("RGB")) for row in table.column("img").to_pylist()]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), torch.tensor(table.column("label").to_pylist())


@torch.no_grad()
def embed(net: nn.Module, images: torch.Tensor, mean: list[float], std: list[float], batch_size: int) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> fp32 features (N, D), normalised per channel, in eval mode."""
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return torch.cat([net((b.float() / 255 - m) / s) for b in images.split(batch_size)])


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, *, k: int = 200,
                temperature: float = 0.1, num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Weighted-kNN class of each query: bank (N, D), bank_labels (N,), queries (Q, D) -> (Q,) int64."""
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"knn_predict: k={k} must lie in [1, {bank.shape[0]}] (the bank's rows)")
    c = num_classes or int(bank_labels.max()) + 1
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    out = []
    for q in queries.split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (q, k) cosine similarities of the k nearest bank rows
        votes = torch.zeros(q.shape[0], c).scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        out.append(votes.argmax(dim=1))
    return torch.cat(out)


def recorded_top1(config: dict[str, Any], n_bank: int, n_query: int, k: int, temperature: float) -> float | None:
    """config.json's kNN top-1 for the same bank / query counts, k and T (None when no record matches)."""
    for m in config.get("metrics") or []:
        p = str(m.get("protocol", ""))
        if (m.get("task"), m.get("metric")) == ("knn", "top1") and f"({n_bank} images)" in p \
                and f"queries: {n_query} images" in p and f"k={k}, T={temperature:g}" in p:
            return float(m["value"])
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the flags, evaluate trained and random-init networks, print and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="folder with model.safetensors and config.json")
    ap.add_argument("--data", type=Path, required=True, help="folder with train.parquet and test.parquet")
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--batch_size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="first N train and N // 5 test rows")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "independent_knn.json")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    config = json.loads((args.checkpoint / "config.json").read_text())
    tf = config.get("transforms") or {}
    if not {"mean", "std", "eval_size"} <= set(tf) or tf.get("eval_resize") is not None:
        raise SystemExit(f"independent_knn: transforms {tf!r} asks for a resize (or lacks mean/std/eval_size)")
    weights = args.checkpoint / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    bank_x, bank_y = load_split(args.data / "train.parquet", args.limit)
    query_x, query_y = load_split(args.data / "test.parquet", args.limit // 5 if args.limit else None)
    if bank_x.shape[-1] != tf["eval_size"] or bank_x.shape[-2] != tf["eval_size"]:
        raise SystemExit(f"independent_knn: images are {tuple(bank_x.shape[-2:])}, transforms want {tf['eval_size']} px")
    decoded, top1, embed_s = time.perf_counter(), {}, {}
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    for name in ("trained", "random_init"):
        torch.manual_seed(0)
        net = build_backbone(config["backbone"])
        if name == "trained":
            net.load_state_dict(load_file(str(weights)), strict=True)
        t0 = time.perf_counter()
        feats = [embed(net, x, tf["mean"], tf["std"], args.batch_size) for x in (bank_x, query_x)]
        embed_s[name] = time.perf_counter() - t0
        pred = knn_predict(feats[0], bank_y, feats[1], k=args.k, temperature=args.temperature, num_classes=num_classes)
        top1[name] = round(100 * (pred == query_y).float().mean().item(), 2)
    recorded = recorded_top1(config, len(bank_y), len(query_y), args.k, args.temperature)
    result = {"checkpoint": str(args.checkpoint), "model_sha256": digest,
              "sha256_matches_config": digest == (config.get("files") or {}).get("model.safetensors", {}).get("sha256"),
              "backbone": config["backbone"], "data": str(args.data), "bank_images": len(bank_y),
              "query_images": len(query_y), "k": args.k, "temperature": args.temperature,
              "top1_trained": top1["trained"], "top1_random_init": top1["random_init"], "recorded_top1": recorded,
              "difference": None if recorded is None else round(top1["trained"] - recorded, 2),
              "cpu": cpu_model(), "threads": args.threads, "seconds": round(time.perf_counter() - start, 1),
              "seconds_decode": round(decoded - start, 1),  # hash, read and PIL-decode both splits
              "seconds_embed_per_1000_images": round(1000 * embed_s["trained"] / (len(bank_y) + len(query_y)), 2)}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

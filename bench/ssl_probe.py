"""Does a short DINO phase make better features on Fashion-MNIST? Loss curves and a k-NN probe.

Figures, not tests. For each (teacher temperature, lr) given, self-distils the `tiny` ViT on the
first 1,024 training images (`trainers.ssl.dino_pretrain`, batch 64, 2 local crops, momentum 0.99)
and prints per epoch the DINO loss and its KL part (loss minus the teacher's entropy), then the
accuracy of a 20-nearest-neighbour classifier (cosine, majority vote) on the pooled features: 1,000
training images as the memory, 1,000 test images queried, before and after the phase. Labels are
used by the probe only.

Run: .venv/bin/python bench/ssl_probe.py [--epochs 6] [--setting 0.02,5e-4 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainers.datasets import load_dataset  # noqa: E402
from trainers.ssl import DinoSettings, dino_pretrain  # noqa: E402
from trainers.vit import build_vit  # noqa: E402


def knn_accuracy(vit, memory, memory_labels, queries, query_labels, k: int = 20) -> float:
    vit.eval()
    with torch.no_grad():

        def embed(x):
            return F.normalize(vit.forward_head(vit.forward_features(x), pre_logits=True), dim=-1)

        neighbours = (embed(queries) @ embed(memory).T).topk(k, dim=1).indices
        votes = memory_labels[neighbours].mode(dim=1).values
    return float((votes == query_labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--setting", action="append", help="teacher_temp,lr (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    data = load_dataset("fashion_mnist")

    def normalise(images):
        return (images.float() / 255 - data.mean[0]) / data.std[0]

    memory, memory_labels = normalise(data.train_images[:1000]), data.train_labels[:1000]
    queries, query_labels = normalise(data.test_images[:1000]), data.test_labels[:1000]
    for setting in args.setting or ["0.02,5e-4", "0.04,1e-4"]:
        teacher_temp, lr = (float(v) for v in setting.split(","))
        torch.manual_seed(0)
        vit = build_vit(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=72,
                        depth=2, num_heads=9, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0,
                        drop_path_rate=0.0)  # fmt: skip
        before = knn_accuracy(vit, memory, memory_labels, queries, query_labels)
        settings = DinoSettings(
            epochs=args.epochs, batch_size=64, local_crops=2, lr=lr, teacher_temp=teacher_temp
        )
        started = time.perf_counter()
        result = dino_pretrain(
            vit, data.train_images[:1024], settings, mean=data.mean, std=data.std,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        vit.load_state_dict(result.backbone)
        after = knn_accuracy(vit, memory, memory_labels, queries, query_labels)
        print(
            f"teacher_temp {teacher_temp} lr {lr}: loss "
            + " ".join(f"{v:.2f}" for v in result.losses)
            + " | KL "
            + " ".join(f"{v:.2f}" for v in result.kls)
            + f" | 20-NN {before:.3f} -> {after:.3f} | {time.perf_counter() - started:.0f} s"
        )


if __name__ == "__main__":
    main()

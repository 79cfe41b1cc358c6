"""Train the digits classifier behind the ``digit`` / ``realism`` rewards and the Fréchet
distance (seeded; ~1 minute on 2 CPU cores).

    python scripts/digits/train_classifier.py   # -> models/digits/digits_classifier.safetensors

It trains on the 1,297-digit train split, seen the way generated images are seen (8x8 digits
upsampled to the 32x32 canvas, then area-pooled back to 8x8), with +-1 pixel shifts, and reports
accuracy on the 500 held-out digits. The file also stores the real-data feature statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from learned_schedules.training.rewards.digits import (
    DEFAULT_CLASSIFIER,
    DigitClassifier,
    feature_stats,
    load_digits_split,
    mahalanobis2,
    save_classifier,
    to_canvas,
    to_classifier_input,
)


def seen(x8: torch.Tensor) -> torch.Tensor:
    """8x8 digits as the classifier sees a generated 32x32 image."""
    return to_classifier_input(to_canvas(x8))


def shift(x8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    pad = F.pad(x8[:, None], (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2,), generator=g).tolist()
    return pad[:, 0, dy:dy + 8, dx:dx + 8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_CLASSIFIER)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    tx, ty, vx, vy = load_digits_split()
    net = DigitClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    steps = args.epochs * ((len(ty) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    bar = tqdm(range(args.epochs), desc="classifier", mininterval=5, ncols=80)
    for _ in bar:
        perm = torch.randperm(len(ty), generator=g)
        for i in range(0, len(ty), 64):
            idx = perm[i:i + 64]
            x = seen(shift(tx[idx], g))
            loss = F.cross_entropy(net(x), ty[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    with torch.no_grad():
        acc = float((net(seen(vx)).argmax(-1) == vy).float().mean())
        acc_raw = float((net(vx[:, None]).argmax(-1) == vy).float().mean())
        stats = feature_stats(net.features(seen(tx)), ty)
        hf = net.features(seen(vx))
        m2 = mahalanobis2(hf, vy, stats)
    stats["m2_mean"] = torch.stack([m2[vy == c].mean() for c in range(10)])
    stats["m2_std"] = torch.stack([m2[vy == c].std() for c in range(10)])
    stats["held_out_features"] = hf
    stats["held_out_labels"] = vy.to(torch.int32)
    stats["held_out_accuracy"] = torch.tensor(acc)
    save_classifier(net, stats, args.out)
    info = {"held_out_accuracy": acc, "held_out_accuracy_raw_8x8": acc_raw,
            "train_seconds": round(time.time() - t0, 1), "epochs": args.epochs}
    print(json.dumps(info))


if __name__ == "__main__":
    main()

"""The judge: a small convolutional classifier that reads a Shapes picture.

It reads the background colour and finds object centres on a 16 x 16 map (a small
CenterNet-like detector), with each object's colour, shape, size and box; an object is in
the grid cell that holds its box centre (at most one per cell, as in the world).
It is trained on renders only, with mild blur, noise and colour jitter so that it can also
read what the models draw.

    python -m playground.starter.judge train   # ~10 minutes on one CPU thread
    python -m playground.starter.judge eval    # held-out accuracy on fresh renders

    judge = Judge.load()
    judge.read(picture)  # {"background": "white", "objects": [{"colour", "shape", "size", "cell", "box"}]}
"""
from __future__ import annotations

import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from .world import BASE, CELLS, COLOURS, SHAPES, SIZE_NAMES, Scene, cell_of, random_scene, render

WEIGHTS = os.path.join(os.path.dirname(__file__), "judge.safetensors")
EVAL_SEED = 9_000_001  # held-out renders; training draws from seeds below 1_000_000
N_CELLS = len(CELLS)
GRID = 16  # the detector's output map: one location per 4 x 4 pixels
# per location: centre logit, colour, shape and size logits, box (centre offset x, y; width, height)
HEADS = {"centre": 1, "colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZE_NAMES), "box": 4}


# ---------------------------------------------------------------- the network

def conv(c_in: int, c_out: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class JudgeNet(nn.Module):
    """A small centre-point detector (CenterNet-like). 64 x 64 RGB in [0, 1] -> background
    logits, and on a 16 x 16 map: is an object's centre here, its colour, shape, size and box."""

    def __init__(self, w: int = 24):
        super().__init__()
        self.down16 = nn.Sequential(conv(3, w, 2), conv(w, 2 * w, 2), conv(2 * w, 2 * w))  # 16 x 16
        self.down8 = nn.Sequential(conv(2 * w, 3 * w, 2), conv(3 * w, 3 * w))              # 8 x 8
        self.down4 = nn.Sequential(conv(3 * w, 3 * w, 2), conv(3 * w, 3 * w))              # 4 x 4
        self.fuse = nn.Sequential(conv(8 * w, 3 * w, k=1), conv(3 * w, 3 * w))
        self.dense = nn.Conv2d(3 * w, sum(HEADS.values()), 1)
        self.background = nn.Linear(3 * w, len(COLOURS))
        with torch.no_grad():
            self.dense.bias[0] = -4.0  # centres are rare: start from a low prior

    def trunk(self, x: torch.Tensor):
        f16 = self.down16(x * 2 - 1)
        f8 = self.down8(f16)
        f4 = self.down4(f8)
        up = [F.interpolate(f, size=f16.shape[-2:], mode="bilinear") for f in (f8, f4)]
        return self.fuse(torch.cat([f16] + up, 1)), f4

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of the whole picture (used for the Frechet distance)."""
        fused, f4 = self.trunk(x)
        return torch.cat([fused.mean((2, 3)), fused.amax((2, 3)), f4.mean((2, 3))], 1)

    def forward(self, x: torch.Tensor) -> dict:
        fused, f4 = self.trunk(x)
        out = dict(zip(HEADS, self.dense(fused).split(list(HEADS.values()), 1)))
        out["centre"] = out["centre"][:, 0]
        out["background"] = self.background(f4.mean((2, 3)))
        return out


# ---------------------------------------------------------------- data

def to_batch(images) -> torch.Tensor:
    """PIL pictures (any size) -> (N, 3, 64, 64) floats in [0, 1]; larger pictures are area-downsampled."""
    arrs = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (BASE, BASE):
            img = img.resize((BASE, BASE), Image.BOX)
        arrs.append(np.asarray(img, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def targets_of(scenes) -> dict:
    """Background index; per object: its batch index, map location (row, col), labels and box."""
    t = {"background": torch.tensor([COLOURS.index(s.background) for s in scenes]),
         "where": [], "colour": [], "shape": [], "size": [], "box": []}
    for i, s in enumerate(scenes):
        for o in s.objects:
            cx, cy = o.centre
            t["where"].append((i, min(int(cy * GRID), GRID - 1), min(int(cx * GRID), GRID - 1)))
            t["colour"].append(COLOURS.index(o.colour))
            t["shape"].append(SHAPES.index(o.shape))
            t["size"].append(SIZE_NAMES.index(o.size))
            t["box"].append((cx * GRID, cy * GRID, (o.box[2] - o.box[0]) * BASE, (o.box[3] - o.box[1]) * BASE))
    return {k: torch.tensor(v) if k != "background" else v for k, v in t.items()}


def training_scene(rng: random.Random) -> Scene:
    """A random scene of the world, or now and then an empty background."""
    return Scene(rng.choice(COLOURS), []) if rng.random() < 0.03 else random_scene(rng)


def render_batch(rng: random.Random, n: int):
    scenes = [training_scene(rng) for _ in range(n)]
    return scenes, to_batch([render(s, BASE) for s in scenes])


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """What a generated picture may show: slight blur, colour shifts, fine and blotchy noise."""
    n = len(x)
    soft = torch.rand(n, generator=g) < 0.5
    if soft.any():
        x = x.clone()
        x[soft] = blur(x[soft], sigma=0.3 + 0.7 * torch.rand(1, generator=g).item())
    scale = 1 + 0.05 * (2 * torch.rand(n, 3, 1, 1, generator=g) - 1)
    shift = 0.03 * (2 * torch.rand(n, 3, 1, 1, generator=g) - 1)
    x = x * scale + shift
    x = x + 0.03 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    blotches = F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=x.shape[-2:], mode="bilinear")
    x = x + 0.02 * torch.rand(n, 1, 1, 1, generator=g) * blotches
    return x.clamp(0, 1)


# ---------------------------------------------------------------- training

def judge_loss(out: dict, t: dict) -> torch.Tensor:
    b, r, c = t["where"].T
    heat = torch.zeros_like(out["centre"])
    heat[b, r, c] = 1
    # near misses (the 8 neighbours of a centre) are neither right nor wrong
    near = F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]
    weight = torch.where(heat > 0, torch.full_like(heat, 20.0), 1.0 - near)
    loss = F.binary_cross_entropy_with_logits(out["centre"], heat, weight=weight, reduction="sum") / len(b)
    loss = loss + F.cross_entropy(out["background"], t["background"])
    for key in ("colour", "shape", "size"):
        loss = loss + F.cross_entropy(out[key][b, :, r, c], t[key])
    box = out["box"][b, :, r, c]
    # centre offset (map cells) and side (pixels) of a 64 px picture
    pred = torch.cat([box[:, :2] + torch.stack([c, r], 1), box[:, 2:] * 16], 1)
    return loss + 0.3 * F.smooth_l1_loss(pred, t["box"].float())


def train(steps: int, batch: int, lr: float, seed: int = 0) -> JudgeNet:
    torch.manual_seed(seed)
    net = JudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:  # short warm-up, then cosine decay
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        scenes, x = render_batch(random.Random(seed * 1_000_000 + step), batch)
        loss = judge_loss(net(augment(x, g)), targets_of(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
        if (step + 1) % 500 == 0:
            net.eval()
            acc = accuracy(Judge(net), n=200, seed=EVAL_SEED + 1)
            print("  held-out:", ", ".join(f"{k} {v:.3f}" for k, v in acc.items() if isinstance(v, float)), flush=True)
            net.train()
    return net.eval()


def save(net: JudgeNet, path: str = WEIGHTS):
    tensors = {k: (v.half() if v.dtype.is_floating_point else v).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, path)


# ---------------------------------------------------------------- reading pictures

class Judge:
    def __init__(self, net: JudgeNet):
        self.net = net.eval()

    @classmethod
    def load(cls, path: str = WEIGHTS) -> "Judge":
        net = JudgeNet()
        net.load_state_dict({k: v.float() if v.dtype.is_floating_point else v for k, v in load_file(path).items()})
        return cls(net)

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        return self.net.embed(to_batch(images)).numpy().astype(np.float64)

    def read(self, image) -> dict:
        return self.read_many([image])[0]

    def read_many(self, images, batch: int = 128) -> list[dict]:
        """Each picture as {"background", "objects": [{"colour", "shape", "size", "cell", "box", "score"}]}."""
        readings = []
        for i in range(0, len(images), batch):
            readings += self.read_tensor(to_batch(images[i:i + batch]))
        return readings

    @torch.no_grad()
    def read_tensor(self, x: torch.Tensor) -> list[dict]:
        """Readings of a (N, 3, 64, 64) batch in [0, 1]."""
        out = self.net(x)
        return [_reading(out, k) for k in range(len(x))]


def _reading(out: dict, k: int) -> dict:
    """Peaks of the centre map above 0.5; at most one object per cell (the most confident)."""
    p = torch.sigmoid(out["centre"][k])
    peaks = (p >= 0.5) & (p == F.max_pool2d(p[None, None], 3, 1, 1)[0, 0])
    best = {}
    for r, c in peaks.nonzero().tolist():
        dx, dy, w, h = out["box"][k, :, r, c].tolist()
        cx, cy, w, h = (c + dx) / GRID, (r + dy) / GRID, w * 16 / BASE, h * 16 / BASE
        box = tuple(min(max(v, 0.0), 1.0) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        obj = {"colour": COLOURS[out["colour"][k, :, r, c].argmax()], "shape": SHAPES[out["shape"][k, :, r, c].argmax()],
               "size": SIZE_NAMES[out["size"][k, :, r, c].argmax()], "cell": cell_of(cx, cy), "box": box,
               "score": float(p[r, c])}
        if obj["cell"] not in best or obj["score"] > best[obj["cell"]]["score"]:
            best[obj["cell"]] = obj
    return {"background": COLOURS[out["background"][k].argmax()],
            "objects": sorted(best.values(), key=lambda o: CELLS.index(o["cell"]))}


# ---------------------------------------------------------------- measuring the judge

def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def accuracy(judge: Judge, n: int = 2000, seed: int = EVAL_SEED) -> dict:
    """Per-attribute accuracy of the judge on `n` fresh renders (objects it misses count as wrong)."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    readings = judge.read_many([render(s, BASE) for s in scenes])
    hits = {"background": 0, "cells": 0, "colour": 0, "shape": 0, "size": 0, "cell": 0}
    ious, n_obj = [], 0
    for scene, reading in zip(scenes, readings):
        hits["background"] += reading["background"] == scene.background
        found = {o["cell"]: o for o in reading["objects"]}
        hits["cells"] += sum((c in found) == any(o.cell == c for o in scene.objects) for c in CELLS)
        for obj in scene.objects:
            n_obj += 1
            got = found.get(obj.cell)
            if got is None:
                ious.append(0.0)
                continue
            hits["cell"] += 1
            for key in ("colour", "shape", "size"):
                hits[key] += got[key] == getattr(obj, key)
            ious.append(iou(got["box"], obj.box))
    return {"renders": n, "objects": n_obj, "background": hits["background"] / n,
            "cell occupancy": hits["cells"] / (n * N_CELLS), "object found (cell)": hits["cell"] / n_obj,
            "colour": hits["colour"] / n_obj, "shape": hits["shape"] / n_obj, "size": hits["size"] / n_obj,
            "box IoU": float(np.mean(ious))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "eval"])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--n", type=int, default=2000, help="renders for eval")
    ap.add_argument("--out", default=WEIGHTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "train":
        save(train(args.steps, args.batch, args.lr), args.out)
        print("wrote", args.out)
    for key, value in accuracy(Judge.load(args.out), args.n).items():
        print(f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}")


if __name__ == "__main__":
    main()

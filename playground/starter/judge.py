"""The judge: a small convolutional classifier that reads a Shapes picture.

It reads the background colour and, for each of the 9 grid cells (the world puts at most
one object in a cell), whether an object is there, its colour, shape and size, and its box.
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

from .world import BASE, CELLS, COLOURS, SHAPES, SIZE_NAMES, random_scene, render

WEIGHTS = os.path.join(os.path.dirname(__file__), "judge.safetensors")
EVAL_SEED = 9_000_001  # held-out renders; training draws from seeds below 1_000_000
N_CELLS = len(CELLS)
# per cell: presence logit, colour logits, shape logits, size logits, box (x0, y0, x1, y1)
CELL_OUT = 1 + len(COLOURS) + len(SHAPES) + len(SIZE_NAMES) + 4
N_OUT = len(COLOURS) + N_CELLS * CELL_OUT


# ---------------------------------------------------------------- the network

def conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class JudgeNet(nn.Module):
    """64 x 64 RGB in [0, 1] -> background logits and per-cell outputs."""

    def __init__(self, width: int = 24, features: int = 256):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            conv(3, w, 2),                                  # 32 x 32
            conv(w, 2 * w, 2), conv(2 * w, 2 * w, 1),       # 16 x 16
            conv(2 * w, 4 * w, 2),                          # 8 x 8
            conv(4 * w, 4 * w, 2))                          # 4 x 4
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, features), nn.ReLU())
        self.head = nn.Linear(features, N_OUT)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The feature vector the heads read (also used for the Frechet distance)."""
        return self.features(self.body(x * 2 - 1))

    def forward(self, x: torch.Tensor) -> dict:
        out = self.head(self.embed(x))
        bg, cells = out[:, :len(COLOURS)], out[:, len(COLOURS):].reshape(-1, N_CELLS, CELL_OUT)
        c, s = len(COLOURS), len(SHAPES)
        return {"background": bg, "present": cells[..., 0], "colour": cells[..., 1:1 + c],
                "shape": cells[..., 1 + c:1 + c + s], "size": cells[..., 1 + c + s:-4],
                "box": cells[..., -4:]}


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
    """Per-scene targets: background index, and per cell presence, labels and box."""
    n = len(scenes)
    t = {"background": torch.tensor([COLOURS.index(s.background) for s in scenes]),
         "present": torch.zeros(n, N_CELLS), "colour": torch.zeros(n, N_CELLS, dtype=torch.long),
         "shape": torch.zeros(n, N_CELLS, dtype=torch.long), "size": torch.zeros(n, N_CELLS, dtype=torch.long),
         "box": torch.zeros(n, N_CELLS, 4)}
    for i, s in enumerate(scenes):
        for o in s.objects:
            j = CELLS.index(o.cell)
            t["present"][i, j] = 1
            t["colour"][i, j] = COLOURS.index(o.colour)
            t["shape"][i, j] = SHAPES.index(o.shape)
            t["size"][i, j] = SIZE_NAMES.index(o.size)
            t["box"][i, j] = torch.tensor(o.box)
    return t


def render_batch(rng: random.Random, n: int):
    scenes = [random_scene(rng) for _ in range(n)]
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
    present = t["present"] > 0
    loss = F.cross_entropy(out["background"], t["background"])
    loss = loss + F.binary_cross_entropy_with_logits(out["present"], t["present"])
    for key in ("colour", "shape", "size"):
        loss = loss + F.cross_entropy(out[key][present], t[key][present])
    # box error in pixels of a 64 px picture
    return loss + 0.1 * F.smooth_l1_loss(out["box"][present] * BASE, t["box"][present] * BASE)


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
    def raw(self, images) -> dict:
        return self.net(to_batch(images))

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        return self.net.embed(to_batch(images)).numpy().astype(np.float64)

    def read(self, image) -> dict:
        return self.read_many([image])[0]

    def read_many(self, images, batch: int = 128) -> list[dict]:
        """Each picture as {"background", "objects": [{"colour", "shape", "size", "cell", "box", "score"}]}."""
        readings = []
        for i in range(0, len(images), batch):
            out = self.raw(images[i:i + batch])
            for k in range(len(out["background"])):
                readings.append(_reading(out, k))
        return readings


def _reading(out: dict, k: int) -> dict:
    objects = []
    scores = torch.sigmoid(out["present"][k])
    for j in range(N_CELLS):
        if scores[j] < 0.5:
            continue
        box = tuple(float(v) for v in out["box"][k, j].clamp(0, 1))
        objects.append({"colour": COLOURS[out["colour"][k, j].argmax()], "shape": SHAPES[out["shape"][k, j].argmax()],
                        "size": SIZE_NAMES[out["size"][k, j].argmax()], "cell": CELLS[j], "box": box,
                        "score": float(scores[j])})
    return {"background": COLOURS[out["background"][k].argmax()], "objects": objects}


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
    ap.add_argument("--steps", type=int, default=6000)
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

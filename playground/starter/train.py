"""Train the starter models on the Shapes world, resumably.

    python -m playground.starter.train vae      --minutes 15
    python -m playground.starter.train text2img --minutes 60
    python -m playground.starter.train layout   --minutes 20   # starts from text2img
    python -m playground.starter.train inpaint  --minutes 20   # starts from text2img
    python -m playground.starter.train upscale  --minutes 20
    python -m playground.starter.train export                  # fp16 diffusers folders

State (weights, EMA, optimiser, step) lives in runs/<task>/state.safetensors and is
saved every few minutes, so a killed run resumes where it stopped; `kill <pid>` (SIGTERM)
ends a run after its current step with the state saved. Progress and loss go
to stdout and runs/<task>/log.txt. On a CUDA machine the same commands use the GPU.
STARTER_RUNS=<folder> keeps the state elsewhere, so an experiment can start from a copy
of runs/<task>/ without touching the main run.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import queue
import random
import re
import signal
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import attention_loss, models
from .captions import SHAPE_WORDS, SIZE_WORDS, caption, layout_phrase, parse
from PIL import Image

from .world import COLOURS, SHAPES, Scene, Obj, random_scene, render

RUNS = os.environ.get("STARTER_RUNS", "runs")
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights")
SAVE_EVERY_S = 180


# ---------------------------------------------------------------- small helpers

def to_tensor(img) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def log(task: str, msg: str):
    line = f"[{time.strftime('%H:%M:%S')}] {task}: {msg}"
    print(line, flush=True)
    with open(os.path.join(RUNS, task, "log.txt"), "a") as f:
        f.write(line + "\n")


class Ema:
    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)


def save_state(path: str, modules: dict, emas: dict, opt, step: int, extra: dict | None = None):
    tensors = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in m.state_dict().items()})
    for name, e in emas.items():
        tensors.update({f"ema_{name}.{k}": v.cpu().contiguous() for k, v in e.shadow.items()})
    for name, p in named_parameters(modules):
        st = opt.state.get(p)
        for k in ("exp_avg", "exp_avg_sq"):
            if st:
                tensors[f"opt.{name}.{k}"] = st[k].cpu().contiguous()
    meta = {"step": str(step), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def load_state(path: str, modules: dict, emas: dict, opt) -> int:
    from safetensors import safe_open

    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        step = int(f.metadata()["step"])
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    for name, e in emas.items():
        pre = f"ema_{name}."
        device = next(modules[name].parameters()).device
        e.shadow = {k[len(pre):]: v.to(device) for k, v in tensors.items() if k.startswith(pre)}
    # states saved before moments had names keep them by position among the trained
    # parameters in module order (the single group those runs used)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    in_order = [(name, p) for name, p in named_parameters(modules) if id(p) in trained]
    for i, (name, p) in enumerate(in_order):
        key = f"opt.{name}" if f"opt.{name}.exp_avg" in tensors else f"opt.{i}"
        if f"{key}.exp_avg" in tensors:
            opt.state[p] = {"step": torch.tensor(float(step)),
                            "exp_avg": tensors[f"{key}.exp_avg"].to(p.device),
                            "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(p.device)}
    return step


def named_parameters(modules: dict):
    """(module.parameter name, parameter) of every module: the optimiser's moments are saved
    under these names, so a run may regroup its parameters and still resume."""
    for module_name, m in modules.items():
        for name, p in m.named_parameters():
            yield f"{module_name}.{name}", p


def ema_module(ema: Ema, build):
    m = build()
    m.load_state_dict(ema.shadow)
    return m


def lr_at(step: int, base: float, warmup: int = 200) -> float:
    return base * min(1.0, (step + 1) / warmup)


def annealed(lr: float, done: float, anneal_to: float) -> float:
    """`lr` falling linearly to `anneal_to` times itself as the run goes from done = 0 to 1
    (anneal_to 1: constant). A lower rate at the end of a run settles the weights the
    constant rate keeps stirring."""
    return lr * (1.0 - (1.0 - anneal_to) * min(1.0, max(0.0, done)))


class Loop:
    """Time- and step-bounded training loop with periodic resumable saves."""

    def __init__(self, task, args, modules, emas, params, extra=None):
        self.task, self.args, self.modules, self.emas = task, args, modules, emas
        self.extra = extra or {}
        os.makedirs(os.path.join(RUNS, task), exist_ok=True)
        self.path = os.path.join(RUNS, task, "state.safetensors")
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        self.step = load_state(self.path, modules, emas, self.opt) if os.path.exists(self.path) else 0
        if self.step:
            log(task, f"resumed at step {self.step}")

    def run(self, loss_fn, batches: "Prefetch | None" = None):
        """Train until the minutes or steps run out; `batches`, if given, is closed at the end."""
        try:
            self._run(loss_fn)
        finally:
            if batches is not None:
                batches.close()

    def _run(self, loss_fn):
        args, t0, last_save, losses = self.args, time.time(), time.time(), []
        first_step = self.step
        stop_asked = []  # `kill <pid>` ends the run after this step, with its state saved
        signal.signal(signal.SIGTERM, lambda *_: stop_asked.append(True))
        while (self.step < args.max_steps and time.time() - t0 < args.minutes * 60
               and not stop_asked):
            done = max((time.time() - t0) / (args.minutes * 60),
                       (self.step - first_step) / max(1, args.max_steps - first_step))
            for g in self.opt.param_groups:
                g["lr"] = annealed(lr_at(self.step, args.lr), done, args.anneal_to) * g.get("lr_scale", 1.0)
            loss = loss_fn(self.step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
            self.opt.step()
            for name, e in self.emas.items():
                e.update(self.modules[name], self.step)
            self.step += 1
            losses.append(loss.item())
            if self.step % 50 == 0:
                el = time.time() - t0
                log(self.task, f"step {self.step} loss {np.mean(losses[-50:]):.4f} "
                               f"({el / 60:.1f} min, {el / max(1, len(losses)):.2f} s/step)")
            if time.time() - last_save > SAVE_EVERY_S:
                self.save()
                last_save = time.time()
        self.save()
        log(self.task, f"stopped at step {self.step}")

    def save(self):
        save_state(self.path, self.modules, self.emas, self.opt, self.step, self.extra)


class Prefetch:
    """`make(step)` for step = first, first + 1, ... in a background thread, up to `depth`
    batches ahead; calling the Prefetch returns them in order (depth 0: made on the call).
    A batch's data side (captions, tokens, each sample's attention targets, renders) is
    Python on the CPU; made ahead, it runs while the model computes. Made in line, it
    kept an H200 busy only about a third of the time (MODEL_CARD.md, "on a GPU"). Only
    the thread uses the random generator `make` draws from, so the batches are the same
    either way."""

    def __init__(self, make, first: int, depth: int):
        self.make, self.step, self.depth = make, first, depth
        self.closing = threading.Event()
        if depth:
            self.ready = queue.Queue(maxsize=depth)
            self.thread = threading.Thread(target=self._fill, daemon=True)
            self.thread.start()

    def _fill(self):
        while not self.closing.is_set():
            try:
                batch = self.make(self.step)
            except Exception as error:  # raised again in the training loop
                self.ready.put(error)
                return
            self.ready.put(batch)
            self.step += 1

    def close(self):
        """Stop the thread and wait for it. A daemon thread still inside torch when a CUDA
        process exits made it abort ("terminate called without an active exception")
        after its state was saved, so a run's exit status said it failed."""
        if not self.depth:
            return
        self.closing.set()
        while self.thread.is_alive():
            try:
                self.ready.get(timeout=0.1)  # frees a slot for a put that waits
            except queue.Empty:
                pass
        self.thread.join()

    def __call__(self):
        if not self.depth:
            self.step += 1
            return self.make(self.step - 1)
        batch = self.ready.get()
        if isinstance(batch, Exception):
            raise batch
        return batch


def device_of(args) -> torch.device:
    if args.device != "auto":
        return torch.device(args.device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matrix products
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")


# ---------------------------------------------------------------- shared parts

def vae_scaling_factor() -> float:
    """The latent scale saved with the VAE's training state (1.0 before it was measured)."""
    from safetensors import safe_open

    with safe_open(os.path.join(RUNS, "vae", "state.safetensors"), "pt") as f:
        return json.loads(f.metadata().get("scaling_factor", "1.0"))


def trained_vae(device) -> torch.nn.Module:
    vae = models.build_vae()
    tensors = load_file(os.path.join(RUNS, "vae", "state.safetensors"))
    vae.load_state_dict({k[len("ema_vae."):]: v for k, v in tensors.items() if k.startswith("ema_vae.")})
    vae.register_to_config(scaling_factor=vae_scaling_factor())
    return vae.to(device).eval().requires_grad_(False)


def state_path(task: str) -> str:
    return os.path.join(RUNS, task, "state.safetensors")


def shared_text_state() -> str:
    """Where the text encoder of layout, inpaint and upscale lives: runs/text once
    text2img has a text encoder of its own (--own-text), runs/text2img before."""
    return state_path("text") if os.path.exists(state_path("text")) else state_path("text2img")


def ema_text_weights(path: str) -> dict:
    tensors = load_file(path)
    return {k[len("ema_text."):]: v for k, v in tensors.items() if k.startswith("ema_text.")}


def trained_text(device, trainable: bool, path: str | None = None):
    """Tokenizer and a trained text encoder (EMA weights): the shared one unless `path`
    names another state."""
    tok = models.build_tokenizer()
    te = models.build_text_encoder(tok)
    te.load_state_dict(ema_text_weights(path or shared_text_state()))
    return tok, te.to(device).train(trainable).requires_grad_(trainable)


def fork_shared_text() -> None:
    """Before text2img trains a text encoder of its own: keep the one the other models
    were trained against in runs/text (once; later runs leave it)."""
    path = state_path("text")
    if os.path.exists(path):
        return
    te = models.build_text_encoder(models.build_tokenizer())
    te.load_state_dict(ema_text_weights(state_path("text2img")))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_state(path, {"text": te}, {"text": Ema(te, 0.999)}, torch.optim.AdamW(te.parameters()), 0)
    log("text", "the shared text encoder kept here; text2img trains its own from now on")


def tokens(tok, texts, device):
    return tok(texts, padding="max_length", max_length=models.MAX_TOKENS, truncation=True,
               return_tensors="pt").input_ids.to(device)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        out.append(vae.encode(images[i:i + batch].to(vae.device)).latent_dist.mode().cpu())
    return torch.cat(out) * vae.config.scaling_factor


def scene_cache(name: str, n: int, size: int, vae, seed: int):
    """Scenes (seeded) with their VAE latents at `size` px; built once, kept on disk."""
    path = os.path.join(RUNS, "cache", f"{name}.safetensors")
    if os.path.exists(path):
        t = load_file(path)
        with open(path + ".json") as f:
            scenes = [Scene(d["background"], [Obj(o["colour"], o["shape"], tuple(o["box"])) for o in d["objects"]])
                      for d in json.load(f)]
        return scenes, t["latents"].float()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    lat = []
    chunks = [scenes[i:i + 256] for i in range(0, n, 256)]
    for i, pixels in enumerate(rendered_chunks(chunks, size)):
        lat.append(encode_latents(vae, pixels_to_tensor(pixels)))
        print(f"cache {name}: {min(n, (i + 1) * 256)}/{n}", flush=True)
    lat = torch.cat(lat)
    save_file({"latents": lat.half()}, path)
    with open(path + ".json", "w") as f:
        json.dump([{"background": s.background, "objects": [{"colour": o.colour, "shape": o.shape,
                                                               "box": list(o.box)} for o in s.objects]}
                   for s in scenes], f)
    return scenes, lat


def render_chunk(scenes: list[Scene], size: int) -> np.ndarray:
    return np.stack([np.asarray(render(s, size)) for s in scenes])


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], as to_tensor does one picture."""
    return torch.from_numpy(pixels).float().div(127.5).sub(1).permute(0, 3, 1, 2).contiguous()


def rendered_chunks(chunks: list[list[Scene]], size: int, parallel_above: int = 20000):
    """Each chunk of scenes drawn at `size` px (uint8, N x H x W x 3), in order. More than
    `parallel_above` scenes (a GPU run's cache) are drawn by one worker process per core."""
    if sum(map(len, chunks)) <= parallel_above:
        yield from (render_chunk(c, size) for c in chunks)
        return
    with multiprocessing.get_context("fork").Pool() as pool:
        yield from pool.imap(functools.partial(render_chunk, size=size), chunks)


def min_snr_weight(sched, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    ac = sched.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


X0_FLOOR = 0.0  # set from --x0-weight-floor


def loss_weight(sched, t: torch.Tensor) -> torch.Tensor:
    """Per-sample weight of the noise-prediction error. An error of e in the predicted
    noise is an error of e / sqrt(SNR) in the predicted picture, so plain noise loss
    weighs the picture by SNR: about 0.005 at t = 999, where nothing but the prompt can
    say where an object goes. With X0_FLOOR set, the picture weighs at least X0_FLOOR."""
    w = min_snr_weight(sched, t)
    if X0_FLOOR:
        ac = sched.alphas_cumprod.to(t.device)[t]
        w = torch.maximum(w, X0_FLOOR * (1 - ac) / ac)
    return w


def set_x0_floor(value: float) -> None:
    global X0_FLOOR
    X0_FLOOR = value


OFFSET_NOISE = 0.1  # set from --offset-noise


def training_noise(latents: torch.Tensor) -> torch.Tensor:
    """Gaussian noise plus a small per-channel constant ("offset noise"). The scaled-linear
    schedule never reaches zero signal, so without the offset the models learn to read a
    picture's overall colour from the mean of the starting noise, and at sampling time the
    background and colours follow the seed instead of the prompt or the low-res input."""
    noise = torch.randn_like(latents)
    if OFFSET_NOISE:
        noise = noise + OFFSET_NOISE * torch.randn(*latents.shape[:2], 1, 1, device=latents.device)
    return noise


def set_offset_noise(value: float) -> None:
    global OFFSET_NOISE
    OFFSET_NOISE = value


HIGH_NOISE_SHARE = 0.0  # set from --high-noise-share
HIGH_NOISE_FROM = 800  # above about t = 800 the noisy latent no longer shows where an object is


def training_timesteps(n: int, sched, device) -> torch.Tensor:
    """Uniform timesteps, except that a share HIGH_NOISE_SHARE of them is drawn again from
    t >= HIGH_NOISE_FROM, where only the prompt can say where an object goes (MODEL_CARD.md,
    "Position"). At share 0 the draws are the plain uniform ones."""
    last = sched.config.num_train_timesteps
    t = torch.randint(0, last, (n,), device=device)
    if HIGH_NOISE_SHARE:
        high = torch.rand(n, device=device) < HIGH_NOISE_SHARE
        t = torch.where(high, torch.randint(HIGH_NOISE_FROM, last, (n,), device=device), t)
    return t


def set_high_noise_share(value: float) -> None:
    global HIGH_NOISE_SHARE
    HIGH_NOISE_SHARE = value


def diffusion_loss(unet, sched, latents, cond, extra_in=None, t=None, **unet_kwargs):
    """Weighted noise-prediction loss at timesteps `t` (drawn by training_timesteps when
    not given)."""
    noise = training_noise(latents)
    if t is None:
        t = training_timesteps(len(latents), sched, latents.device)
    noisy = sched.add_noise(latents, noise, t)
    inp = noisy if extra_in is None else torch.cat([noisy, extra_in], 1)
    pred = unet(inp, t, cond, **unet_kwargs).sample
    per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
    return (per * loss_weight(sched, t)).mean()


def captions_for(scenes, rng, p_empty=0.1):
    return ["" if rng.random() < p_empty else caption(s, rng) for s in scenes]


_AN_OBJECT = re.compile(r"\ban (?!\w+ background)")


def an_object(text: str) -> bool:
    """A caption where an object phrase takes "an" ("an orange circle"), not only a
    background ("on an orange background")."""
    return bool(_AN_OBJECT.search(text))


def an_object_and_a_background(text: str) -> bool:
    """A caption where an object phrase takes "an" and a background is stated: the case
    text-to-image read as an orange background (MODEL_CARD, Known failures)."""
    return an_object(text) and parse(text)["background"] is not None


def caption_where(scene, rng, accept, tries: int = 200) -> str:
    """A caption of `scene` drawn from the grammar until `accept` holds (the grammar's own
    mix within that case); the last one drawn if none does."""
    for _ in range(tries):
        text = caption(scene, rng)
        if accept(text):
            return text
    return text


def orange_objects(scene: Scene) -> list[Obj]:
    return [o for o in scene.objects if o.colour == "orange"]


def with_an_orange_object(scenes) -> list[int]:
    return [i for i, s in enumerate(scenes) if orange_objects(s)]


def captioned_batch(rng, scenes, n: int, orange: list[int], article_share: float,
                    p_empty: float = 0.1):
    """Scene indices and captions for one text2img or layout batch. With probability
    `article_share` a sample is a scene with an orange object, captioned with "an orange
    <shape>" and its background stated; otherwise any scene and any caption (`p_empty` of
    them empty). At share 0 the draws are the same as before the share existed."""
    picked = [article_share > 0 and rng.random() < article_share for _ in range(n)]
    idx = [rng.choice(orange) if p else rng.randrange(len(scenes)) for p in picked]
    texts = [caption_where(scenes[i], rng, an_object_and_a_background) if p
             else captions_for([scenes[i]], rng, p_empty)[0] for i, p in zip(idx, picked)]
    return idx, texts


def decoy_scene(scene: Scene, rng: random.Random, new_looks: bool = False) -> Scene:
    """The scene with its objects' colours, and maybe shapes, passed round among them: the
    same background, boxes, cells and sizes, each look told of another object. With
    `new_looks` each object is told a colour that is neither its own nor the background's and
    any shape instead, so the caption's words say nothing of the looks, not even which
    colours the picture holds."""
    objs = scene.objects
    if new_looks:
        return Scene(scene.background, [
            dataclasses.replace(o, colour=rng.choice([c for c in COLOURS if c not in (o.colour, scene.background)]),
                                shape=rng.choice(SHAPES)) for o in objs])
    n = len(objs)
    by_colour, by_shape = rng.randrange(1, n), rng.randrange(n)
    return Scene(scene.background, [dataclasses.replace(o, colour=objs[(j + by_colour) % n].colour,
                                                        shape=objs[(j + by_shape) % n].shape)
                                    for j, o in enumerate(objs)])


def with_decoys(rng: random.Random, scenes: list[Scene], texts: list[str], boxed: list[bool],
                share: float, new_looks: bool = False) -> tuple[list[str], list[Scene]]:
    """--decoy-share (layout): captions, and the scenes they tell of, where a share of the
    captioned samples of 2-3 objects whose boxes are given have a decoy caption, one of
    decoy_scene's. The picture and the boxes' phrases stay true, so only the phrases can say
    which look goes in which box: the stock model mixes the looks of the caption's objects
    (MODEL_CARD.md, "Each box reading its own words"). At share 0 nothing is drawn."""
    told, texts = list(scenes), list(texts)
    for i, scene in enumerate(scenes):
        if share > 0 and texts[i] and boxed[i] and len(scene.objects) > 1 and rng.random() < share:
            told[i] = decoy_scene(scene, rng, new_looks)
            texts[i] = caption(told[i], rng)
    return texts, told


# ---------------------------------------------------------------- tasks

def train_vae(args, device):
    vae = models.build_vae().to(device)
    ema = Ema(vae, 0.998)
    if args.decoder_only:
        return train_vae_decoder(args, device, vae, ema)
    loop = Loop("vae", args, {"vae": vae}, {"vae": ema}, list(vae.parameters()))
    rng = random.Random(1000 + loop.step)

    def batch():
        crops = []
        for _ in range(args.batch):
            size = rng.choice([64, 64, 128, 256])
            img = to_tensor(render(random_scene(rng), size))
            c = args.crop
            x, y = rng.randrange(0, size - c + 1), rng.randrange(0, size - c + 1)
            crops.append(img[:, y:y + c, x:x + c])
        return torch.stack(crops).to(device)

    def loss_fn(step):
        x = batch()
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        rec = (y - x).abs().mean() + F.mse_loss(y, x)
        return rec + 1e-6 * post.kl().mean()

    loop.run(loss_fn)
    # latents are scaled to unit variance for the UNets
    final = ema_module(ema, models.build_vae).to(device).eval()
    imgs = torch.stack([to_tensor(render(random_scene(random.Random(i)), 64)) for i in range(256)])
    with torch.no_grad():
        std = torch.cat([final.encode(imgs[i:i + 64].to(device)).latent_dist.mode() for i in range(0, 256, 64)]).std()
    loop.extra["scaling_factor"] = float(1 / std)
    loop.save()
    log("vae", f"scaling_factor {1 / std:.4f}; L1 on 64 px renders "
               f"{vae_l1(final, imgs[:64].to(device)):.4f}")


def train_vae_decoder(args, device, vae, ema):
    """Fine-tune the decoder alone, the encoder frozen: every latent any model has learned
    keeps its meaning (and the scaling factor stays), only the pictures drawn from latents
    get sharper and truer in colour. Crops come from 64 px renders (the 64 px models) and
    256 px renders (the upscaler), half each."""
    extra = {"scaling_factor": vae_scaling_factor()}
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    loop = Loop("vae", args, {"vae": vae}, {"vae": ema}, params, extra)
    frozen = ("encoder.", "quant_conv.")  # the shipped (EMA) encoder, so latents match the UNets'
    vae.load_state_dict({k: v for k, v in ema.shadow.items() if k.startswith(frozen)}, strict=False)
    log("vae", f"decoder-only fine-tuning from step {loop.step}")
    rng = random.Random(7000 + loop.step)

    def batch():
        crops = []
        for i in range(args.batch):
            size = 64 if i % 2 else 256
            img = to_tensor(render(random_scene(rng), size))
            c = min(args.crop, size)
            x, y = 4 * rng.randrange(0, (size - c) // 4 + 1), 4 * rng.randrange(0, (size - c) // 4 + 1)
            crops.append(img[:, y:y + c, x:x + c])
        return torch.stack(crops).to(device)

    def loss_fn(step):
        x = batch()
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample
        return (y - x).abs().mean() + F.mse_loss(y, x)

    loop.run(loss_fn)
    final = ema_module(ema, models.build_vae).to(device).eval()
    imgs = torch.stack([to_tensor(render(random_scene(random.Random(i)), 64)) for i in range(64)]).to(device)
    log("vae", f"L1 on 64 px renders {vae_l1(final, imgs):.4f}")


@torch.no_grad()
def vae_l1(vae, imgs) -> float:
    return (vae.decode(vae.encode(imgs).latent_dist.mode()).sample.clamp(-1, 1) - imgs).abs().mean().item()


def train_text2img(args, device):
    vae = trained_vae(device)
    scenes, lat = scene_cache("scenes64", args.cache, 64, vae, seed=1)
    tok = models.build_tokenizer()
    if args.own_text:
        fork_shared_text()
    te = models.build_text_encoder(tok).to(device).train()
    unet = models.build_unet("text2img").to(device).train()
    sched = models.build_scheduler()
    emas = {"unet": Ema(unet, 0.999), "text": Ema(te, 0.999)}
    loop = Loop("text2img", args, {"unet": unet, "text": te}, emas,
                [{"params": list(unet.parameters()), "lr_scale": args.unet_lr_scale},
                 {"params": list(te.parameters())}])
    rng = random.Random(2000 + loop.step)
    if args.freeze_text or args.cell_words_only:
        # the other starter models were trained against this text encoder: keep it fixed
        # (all of it, or all but the cell words' embeddings)
        te.load_state_dict(emas["text"].shadow)
        te.requires_grad_(False)
    if args.cell_words_only:
        train_only_cell_words(te, tok)
    if args.quiet_tail:
        quieten_tail(te, tok, args.quiet_tail, emas["text"])
    if args.freeze_unet:
        unet.requires_grad_(False)  # the loss's gradient still reaches the text encoder through it

    attention = AttentionSupervision("text2img", unet, tok, args.attention_loss,
                                     record=bool(args.cell_attention_loss or args.crowding_loss))
    cells = CellAttentionSupervision(attention, args.cell_attention_loss, args.cell_loss_max_grid)
    crowding = CrowdingSupervision(attention, args.crowding_loss)
    tail = TailHold(args.hold_tail, tok, device)
    orange = with_an_orange_object(scenes)

    def make_batch(step):
        idx, texts = captioned_batch(rng, scenes, args.batch, orange, args.article_share)
        batch_scenes = [scenes[i] for i in idx]
        return (idx, tokens(tok, texts, "cpu"), attention.targets(texts, batch_scenes),
                cells.targets(texts), crowding.targets(texts))

    batches = Prefetch(make_batch, loop.step, args.prefetch)

    def loss_fn(step):
        idx, ids, targets, cell_words, phrases = batches()
        cond = te(ids.to(device))[0]
        attention.start_pass()
        t = cells.timesteps(args.batch, sched, device)
        loss = diffusion_loss(unet, sched, lat[idx].to(device), cond, t=t)
        loss = attention.added_to(loss, step, targets)
        loss = crowding.added_to(loss, step, targets, phrases)
        loss = tail.added_to(loss, step, ids.to(device), cond)
        return cells.added_to(loss, step, targets, cell_words, t)

    loop.run(loss_fn, batches)


def cell_word_ids(tok) -> list[int]:
    return sorted(tok.convert_tokens_to_ids(list(attention_loss.CELL_WORD_SET)))


def train_only_cell_words(te, tok) -> None:
    """--cell-words-only: of the text encoder, only the cell words' rows of the input
    embedding learn; every other weight stays as forked. The encoder is causal and the cell
    phrase follows its object's words, so the object words' outputs (which the UNet reads
    colour and shape from) stay exactly as before; what changes is what the cell words
    (and the words after them) say."""
    te.requires_grad_(False)
    table = te.get_input_embeddings().weight
    learns = torch.zeros(table.shape[0], 1, device=table.device)
    learns[cell_word_ids(tok)] = 1.0
    table.requires_grad_(True)
    table.register_hook(lambda grad: grad * learns)


TAIL_TOKENS = ("[SEP]", "[PAD]")


@torch.no_grad()
def quieten_tail(te, tok, norm: float, ema: Ema | None = None) -> None:
    """--quiet-tail: set the input embeddings of [SEP] and [PAD] (and their EMA) to length
    `norm`. In the causal text encoder those positions read every word of the caption, and
    the UNet reads much of each object's look there, where the objects mix (MODEL_CARD.md,
    "A tail that says nothing"). Far longer than any layer's output, their residual stream
    stays their own, so after the final layer norm they say the same for every caption; the
    words before them, which never read them, are unchanged. The same length twice changes
    nothing, so a resumed run may ask again."""
    ids = tok.convert_tokens_to_ids(list(TAIL_TOKENS))
    tables = [te.get_input_embeddings().weight] + ([ema.shadow[embedding_key(ema)]] if ema else [])
    for table in tables:
        rows = table[ids]
        table[ids] = rows / rows.norm(dim=1, keepdim=True) * norm


def embedding_key(ema: Ema) -> str:
    return next(k for k in ema.shadow if k.endswith("token_embedding.weight"))


def tracked(history: list[float], value: float, step: int, task: str, label: str,
            digits: int = 3) -> None:
    """Keep a loss term's value and log its mean over the last 50 steps every 50 steps."""
    history.append(value)
    if (step + 1) % 50 == 0:
        log(task, f"{label} {np.mean(history[-50:]):.{digits}f}")


class BoxSupervision:
    """Beside the noise loss, `weight` times the share of some attention that falls outside
    the boxes it belongs in (attention_loss.outside_box_loss), read by a recorder set on the
    UNet's attention layers for the forward pass (none when `weight` is 0)."""

    label = "attention outside the boxes"
    max_grid = None  # all layers

    def __init__(self, task: str, recorder, weight: float):
        self.task, self.recorder, self.weight = task, recorder, weight
        self.history: list[float] = []

    def start_pass(self) -> None:
        if self.recorder is not None:
            self.recorder.records.clear()

    def weighted(self, loss, step: int, boxes, valid):
        outside = attention_loss.outside_box_loss(self.recorder.records, boxes, valid,
                                                  max_grid=self.max_grid)
        tracked(self.history, outside.item(), step, self.task, self.label)
        return loss + self.weight * outside


class AttentionSupervision(BoxSupervision):
    """--attention-loss: the share of each object's words' cross-attention that falls
    outside its box (attention_loss.py). Inpainting trains with it too, meant to help the
    model tell which of the caption's objects the mask hides; it barely did (MODEL_CARD.md,
    "Attention on the boxes")."""

    def __init__(self, task: str, unet, tok, weight: float, record: bool = False):
        recorder = attention_loss.record_cross_attention(unet) if weight or record else None
        super().__init__(task, recorder, weight)
        self.tok = tok

    def targets(self, texts, scenes, n_tokens: int = models.MAX_TOKENS):
        """(boxes, valid) for each caption's tokens (None when the loss is off)."""
        if self.recorder is None:
            return None
        return attention_loss.token_targets(self.tok, texts, scenes, n_tokens)

    def added_to(self, loss, step: int, targets):
        if self.recorder is None or not self.weight:
            return loss
        return self.weighted(loss, step, *targets)


class CellAttentionSupervision(BoxSupervision):
    """--cell-attention-loss (text2img): the share of the cell words' cross-attention that
    falls outside their object's box, on samples at t >= HIGH_NOISE_FROM only. There the
    noisy latent no longer shows where the object is, so the attention can only land in
    the box if the cell words themselves steer it; the plain attention loss is met by
    attention that follows the object drawn (MODEL_CARD.md, "Position")."""

    label = "cell words' attention outside the boxes at high noise"

    def __init__(self, attention: AttentionSupervision, weight: float,
                 max_grid: int | None = None):
        super().__init__(attention.task, attention.recorder if weight else None, weight)
        self.tok, self.max_grid = attention.tok, max_grid

    def targets(self, texts, n_tokens: int = models.MAX_TOKENS):
        """(batch, tokens) mask of each caption's cell words (None when the loss is off)."""
        return attention_loss.cell_word_mask(self.tok, texts, n_tokens) if self.weight else None

    def timesteps(self, n: int, sched, device):
        """The batch's timesteps, drawn here when the loss needs them (None: diffusion_loss
        draws them, exactly as before this loss existed)."""
        return training_timesteps(n, sched, device) if self.weight else None

    def added_to(self, loss, step: int, targets, cell_words, t):
        if not self.weight:
            return loss
        boxes, valid = targets
        high = (t >= HIGH_NOISE_FROM).float().cpu()[:, None]
        return self.weighted(loss, step, boxes, valid * cell_words * high)


class CrowdingSupervision:
    """--crowding-loss (text2img): the cell words' share of the attention that their phrase's
    words get inside the object's box (attention_loss.cell_share_in_box), at every noise
    level. The cell-word loss pulled the cell words' attention into the box, where it
    crowded out the colour and shape words and the look was lost (MODEL_CARD.md, "Cell
    words"); this keeps the look words' part of the box."""

    label = "cell words' share of the attention in the box"

    def __init__(self, attention: AttentionSupervision, weight: float):
        self.task, self.tok, self.weight = attention.task, attention.tok, weight
        self.recorder = attention.recorder if weight else None
        self.history: list[float] = []

    def targets(self, texts, n_tokens: int = models.MAX_TOKENS):
        """(cell word mask, object index) per token (None when the loss is off)."""
        if not self.weight:
            return None
        return (attention_loss.cell_word_mask(self.tok, texts, n_tokens),
                attention_loss.token_objects(self.tok, texts, n_tokens))

    def added_to(self, loss, step: int, targets, phrases):
        if not self.weight:
            return loss
        (boxes, valid), (cell_words, objects) = targets, phrases
        share = attention_loss.cell_share_in_box(self.recorder.records, boxes, valid,
                                                 cell_words, objects)
        tracked(self.history, share.item(), step, self.task, self.label)
        return loss + self.weight * share


class OwnWordsSupervision:
    """--own-words-loss (layout): the share of the attention inside each object's box that goes
    to another object's words or to [SEP] and the pads, which read every word of the caption
    (attention_loss.foreign_share_in_boxes). With each object's words held inside its box
    and nothing else, stock layout still mixed the looks (0.71 of phrases right against
    0.73); with each box reading its phrase alone, regional prompts get 0.92 (MODEL_CARD.md,
    "Each box reading its own words")."""

    label = "attention in the boxes on other objects' words or the tail"

    def __init__(self, attention: AttentionSupervision, weight: float, n_objects: int,
                 strict: bool = False):
        self.task, self.tok, self.weight, self.n_objects = attention.task, attention.tok, weight, n_objects
        self.strict = strict  # count every token but the object's own words, the start token too
        if strict:
            self.label = "attention in the boxes off their own object's words"
        self.recorder = attention.recorder if weight else None
        self.history: list[float] = []

    def targets(self, texts, scenes, ids, n_tokens: int = models.MAX_TOKENS):
        """(object boxes, valid, object index per token, tail) (None when the loss is off)."""
        if not self.weight:
            return None
        boxes, valid = attention_loss.object_box_targets(self.tok, texts, scenes, self.n_objects)
        tail = None if self.strict else attention_loss.from_sep_on(ids, self.tok.sep_token_id)[..., 0]
        return boxes, valid, attention_loss.token_objects(self.tok, texts, n_tokens), tail

    def added_to(self, loss, step: int, targets):
        if not self.weight:
            return loss
        share = attention_loss.foreign_share_in_boxes(self.recorder.records, *targets)
        tracked(self.history, share.item(), step, self.task, self.label)
        return loss + self.weight * share


class TailHold:
    """--hold-tail (text2img, own text encoder): W times how far the own encoder's outputs
    after the caption's words ([SEP] and the pads) moved from the shared encoder's, relative
    to their size. The encoder is causal, so those positions read every word, cell words
    included, and the shipped UNet reads much of an object's colour and shape from them:
    with the shared encoder's outputs there, the cell-word run's lost looks came back
    (MODEL_CARD.md, "Cell words"). Held, the cell words must place the object by their own
    positions."""

    def __init__(self, weight: float, tok, device):
        self.weight, self.tok, self.history = weight, tok, []
        self.shared = trained_text(device, trainable=False, path=state_path("text"))[1] if weight else None

    def after_words(self, ids) -> torch.Tensor:
        """(batch, tokens, 1): 1 from each caption's [SEP] on."""
        return attention_loss.from_sep_on(ids, self.tok.sep_token_id).float()

    def added_to(self, loss, step: int, ids, cond):
        if not self.weight:
            return loss
        with torch.no_grad():
            held = self.shared(ids)[0]
        tail = self.after_words(ids)
        moved = (((cond - held) ** 2) * tail).sum() / ((held ** 2) * tail).sum().clamp_min(1e-8)
        tracked(self.history, moved.item(), step, "text2img", "text after the words moved", 4)
        return loss + self.weight * moved


MAX_OBJECTS = 30  # box slots the layout pipeline feeds the UNet (diffusers' GLIGEN default)


class GroundingSupervision(BoxSupervision):
    """--grounding-loss (layout): the share of each box's attention, from the picture's
    tokens in a gated layer, that comes from outside that box. The gates start shut and
    pass the gated layers almost no gradient, so on the noise loss alone they never learned
    where a box is (MODEL_CARD.md, "Position"); this teaches their attention directly,
    whatever the gates are."""

    label = "grounding attention outside the boxes"

    def __init__(self, unet, weight: float):
        recorder = attention_loss.record_grounding_attention(unet, MAX_OBJECTS) if weight else None
        super().__init__("layout", recorder, weight)

    def added_to(self, loss, step: int, gligen: dict):
        if self.recorder is None:
            return loss
        return self.weighted(loss, step, gligen["boxes"].cpu(), gligen["masks"].cpu())


def gligen_boxes(scenes, rng, tok, max_objs=MAX_OBJECTS, p_drop=0.1):
    """The CPU side of gligen_inputs: boxes, masks, each sample's phrase count and the
    phrases' token ids (None when every sample dropped its boxes)."""
    b = len(scenes)
    boxes = torch.zeros(b, max_objs, 4)
    masks = torch.zeros(b, max_objs)
    phrases = [[] for _ in range(b)]
    for i, s in enumerate(scenes):
        if rng.random() < p_drop:
            continue
        for j, o in enumerate(s.objects):
            boxes[i, j] = torch.tensor(o.box)
            masks[i, j] = 1
            phrases[i].append(layout_phrase(o, rng))
    flat = [p for ps in phrases for p in ps]
    ids = tok(flat, padding=True, return_tensors="pt").input_ids if flat else None
    return boxes, masks, [len(ps) for ps in phrases], ids


def gligen_inputs(parts, te, device):
    """Boxes, phrase embeddings and masks in the layout StableDiffusionGLIGENPipeline feeds
    the UNet, from gligen_boxes' parts."""
    boxes, masks, counts, ids = parts
    emb = torch.zeros(*masks.shape, te.config.hidden_size, device=device)
    if ids is not None:
        pooled = te(ids.to(device)).pooler_output
        k = 0
        for i, n in enumerate(counts):
            emb[i, :n] = pooled[k:k + n]
            k += n
    return {"boxes": boxes.to(device), "positive_embeddings": emb, "masks": masks.to(device)}


def ema_unet_weights(task: str) -> dict:
    """The EMA UNet weights in runs/<task>/state.safetensors, by the UNet's own names."""
    tensors = load_file(os.path.join(RUNS, task, "state.safetensors"))
    return {k[len("ema_unet."):]: v for k, v in tensors.items() if k.startswith("ema_unet.")}


def init_from_text2img(unet, device):
    """Copy the text2img UNet weights into a UNet of another kind (extra input channels zero)."""
    src = ema_unet_weights("text2img")
    own = unet.state_dict()
    for k, v in src.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v
        elif k == "conv_in.weight":
            w = torch.zeros_like(own[k])
            w[:, :v.shape[1]] = v
            own[k] = w
    unet.load_state_dict(own)
    return unet.to(device)


def base_from_text2img(loop, gated) -> None:
    """--base-from-text2img: every layer of the layout UNet but the gated (GLIGEN) ones
    takes text2img's current EMA weights, in the model and in its EMA, with fresh
    optimiser moments; the gated layers keep what they learned. The layout UNet began as
    an early text2img checkpoint, whose cross-attention was spread over the whole picture
    (MODEL_CARD.md, "Layout on the newer base")."""
    base = ema_unet_weights("text2img")
    unet, ema = loop.modules["unet"], loop.emas["unet"]
    taken = 0
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if gated(name) or name not in base:
                continue
            p.copy_(base[name])
            ema.shadow[name] = base[name].clone().to(ema.shadow[name].dtype)
            loop.opt.state.pop(p, None)
            taken += 1
    log("layout", f"{taken} base tensors taken from text2img's EMA at step {loop.step}")


GATES = (".alpha_attn", ".alpha_dense")  # the gated layers' gates, tanh(alpha) each


def open_gates(loop, value: float) -> None:
    """--open-gates V: set every gated layer's gate to tanh(alpha) = V, in the model and
    its EMA. Closed gates pass the gated layers almost no gradient (their output is
    multiplied by tanh(alpha) ~ 0), and at this training budget they stayed shut."""
    unet, ema = loop.modules["unet"], loop.emas["unet"]
    alpha = math.atanh(value)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith(GATES):
                p.fill_(alpha)
                ema.shadow[name].fill_(alpha)
                loop.opt.state.pop(p, None)
    log("layout", f"gates opened to {value} at step {loop.step}")


def every_layout_phrase() -> list[str]:
    """Every phrase layout_phrase can write: [size] colour shape, each word any synonym."""
    sizes = [""] + [f"{w} " for words in SIZE_WORDS.values() for w in words]
    shapes = [w for words in SHAPE_WORDS.values() for w in words]
    return [f"{size}{colour} {shape}" for size in sizes for colour in COLOURS for shape in shapes]


PHRASE_LAYER = ("position_net.linears.0.weight", "position_net.linears.0.bias",
                "position_net.null_positive_feature")


@torch.no_grad()
def amplified_phrases(weights: dict, mean: torch.Tensor, gain: float) -> dict:
    """The position net's tensors with what sets one phrase apart from the mean phrase
    multiplied by `gain` at its first layer: the mean phrase, and an absent object (the
    null feature), give that layer the same output as before."""
    w, b = weights["position_net.linears.0.weight"], weights["position_net.linears.0.bias"]
    null = weights["position_net.null_positive_feature"]
    n = mean.numel()
    mean = mean.to(w.dtype)
    phrase = w[:, :n]
    return {"position_net.linears.0.weight": torch.cat([phrase * gain, w[:, n:]], dim=1),
            "position_net.linears.0.bias": b + (1 - gain) * phrase @ mean,
            "position_net.null_positive_feature": mean + (null - mean) / gain}


def amplify_phrases(loop, te, tok, device, gain: float) -> None:
    """--phrase-gain K, once: the text encoder's pooled outputs, the phrases the grounding
    tokens start from, are within cosine 0.995 of one another, so at the position net's
    first layer what one phrase says beyond the mean phrase was about a tenth of its output
    (MODEL_CARD.md, "Decoy captions and louder phrases"). This multiplies that part by K in the model and its
    EMA, with fresh optimiser moments for the three tensors."""
    ids = tok(every_layout_phrase(), padding=True, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        mean = te(ids).pooler_output.float().mean(0)
    unet, ema = loop.modules["unet"], loop.emas["unet"]
    params = dict(unet.named_parameters())
    for tensors in (params, ema.shadow):
        new = amplified_phrases({k: tensors[k].detach() for k in PHRASE_LAYER}, mean, gain)
        with torch.no_grad():
            for k, v in new.items():
                tensors[k].copy_(v.to(tensors[k].dtype))
    for k in PHRASE_LAYER:
        loop.opt.state.pop(params[k], None)
    log("layout", f"phrases amplified {gain}x at the position net's first layer at step {loop.step}")


def hold_gates(loop, value: float) -> None:
    """--hold-gates V: open every gate to tanh(alpha) = V and keep it there for this run.
    Opened gates that are free to move shut again within a few hundred steps
    (MODEL_CARD.md, "Layout on the newer base"); held open, the gated layers must learn to
    be of use."""
    open_gates(loop, value)
    for name, p in loop.modules["unet"].named_parameters():
        if name.endswith(GATES):
            p.requires_grad_(False)
    log("layout", f"gates held at {value} for this run")


def state_extra(task: str) -> dict:
    """The extra metadata saved with runs/<task>/state.safetensors ({} when none)."""
    from safetensors import safe_open

    if not os.path.exists(state_path(task)):
        return {}
    with safe_open(state_path(task), "pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items() if k != "step"}


def reads_own_text(task: str) -> bool:
    """Whether the layout or inpaint run reads text2img's own text encoder
    (--text-of-text2img, kept in its state) rather than the shared one."""
    return state_extra(task).get("text") == "text2img" and shared_text_state() != state_path("text2img")


def text_for(task: str, args, device):
    """Tokenizer and the frozen text encoder a layout or inpaint run reads."""
    own = args.text_of_text2img or reads_own_text(task)
    tok, te = trained_text(device, trainable=False, path=state_path("text2img") if own else None)
    return tok, te, ({"text": "text2img"} if own else None)


def said_which_text(task: str, args, loop) -> None:
    if args.text_of_text2img:
        log(task, f"reads text2img's own text encoder from step {loop.step}")


def gated(name: str) -> bool:
    """A layout UNet's GLIGEN layers: the gated self-attention and the box encoder."""
    return ".fuser." in name or name.startswith("position_net.")


def places_words(name: str) -> bool:
    """Cross-attention's queries and keys, which decide where each word's attention falls."""
    return ".attn2.to_q." in name or ".attn2.to_k." in name


def layout_param_groups(unet, args) -> list[dict]:
    """The base layers at --lr; the gated layers, which start closed (tanh(alpha) = 0) and at
    the base rate stayed closed over 1,500 steps (MODEL_CARD.md, "Layout"), at
    --gated-lr-scale times it; the cross-attention queries and keys, what --attention-loss
    asks to move, at --cross-attention-lr-scale times it."""
    named = list(unet.named_parameters())
    return [{"params": [p for n, p in named if not gated(n) and not places_words(n)]},
            {"params": [p for n, p in named if gated(n)], "lr_scale": args.gated_lr_scale},
            {"params": [p for n, p in named if not gated(n) and places_words(n)],
             "lr_scale": args.cross_attention_lr_scale}]


def train_layout(args, device):
    vae = trained_vae(device)
    scenes, lat = scene_cache("scenes64", args.cache, 64, vae, seed=1)
    tok, te, which_text = text_for("layout", args, device)
    unet = models.build_unet("layout")
    fresh = not os.path.exists(os.path.join(RUNS, "layout", "state.safetensors"))
    if fresh:
        init_from_text2img(unet, device)
    unet = unet.to(device).train()
    sched = models.build_scheduler()
    loop = Loop("layout", args, {"unet": unet}, {"unet": Ema(unet, 0.999)}, layout_param_groups(unet, args),
                extra=which_text)
    said_which_text("layout", args, loop)
    if args.base_from_text2img:
        base_from_text2img(loop, gated)
    if args.open_gates:
        open_gates(loop, args.open_gates)
    if args.phrase_gain != 1:
        amplify_phrases(loop, te, tok, device, args.phrase_gain)
    if args.hold_gates:
        hold_gates(loop, args.hold_gates)
    rng = random.Random(3000 + loop.step)
    attention = AttentionSupervision("layout", unet, tok, args.attention_loss, record=bool(args.own_words_loss))
    own_words = OwnWordsSupervision(attention, args.own_words_loss, n_objects=3,  # the world draws 1-3
                                    strict=args.own_words_strict)
    grounding = GroundingSupervision(unet, args.grounding_loss)

    orange = with_an_orange_object(scenes)

    def make_batch(step):
        idx, texts = captioned_batch(rng, scenes, args.batch, orange, args.article_share, p_empty=0.3)
        batch_scenes = [scenes[i] for i in idx]
        boxes = gligen_boxes(batch_scenes, rng, tok)
        texts, told = with_decoys(rng, batch_scenes, texts, (boxes[1].sum(1) > 0).tolist(),
                                  args.decoy_share, args.decoy_new_looks)
        ids = tokens(tok, texts, "cpu")
        return (idx, ids, boxes, (attention.targets(texts, told), own_words.targets(texts, told, ids)))

    batches = Prefetch(make_batch, loop.step, args.prefetch)

    def loss_fn(step):
        idx, ids, boxes, (targets, own_targets) = batches()
        with torch.no_grad():
            cond = te(ids.to(device))[0]
            gligen = gligen_inputs(boxes, te, device)
        attention.start_pass()
        grounding.start_pass()
        loss = diffusion_loss(unet, sched, lat[idx].to(device), cond,
                              cross_attention_kwargs={"gligen": gligen})
        loss = grounding.added_to(loss, step, gligen)
        loss = own_words.added_to(loss, step, own_targets)
        return attention.added_to(loss, step, targets)

    loop.run(loss_fn, batches)


def random_mask(rng: random.Random, scene: Scene, size: int = 64, over_object: bool = False,
                among: list[Obj] | None = None) -> torch.Tensor:
    """White (1) = repaint: a box or blob over one object (one of `among` if given), or over
    empty background (always over an object when `over_object`)."""
    from PIL import Image, ImageDraw

    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    if scene.objects and (over_object or rng.random() < 0.75):
        x0, y0, x1, y1 = rng.choice(among or scene.objects).box
        pad = rng.uniform(0.02, 0.1)
        box = [max(0, x0 - pad), max(0, y0 - pad), min(1, x1 + pad), min(1, y1 + pad)]
    else:
        w, h = rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        box = [x, y, x + w, y + h]
    box = [v * size for v in box]
    (d.ellipse if rng.random() < 0.4 else d.rectangle)(box, fill=255)
    return torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0)[None]


def inpaint_batch(rng: random.Random, scenes: list[Scene], crowded: list[int], n: int,
                  binding_share: float, orange: tuple[int, ...] | list[int] = (), article_share: float = 0.0,
                  focus_share: float = 0.0) -> tuple[list[int], torch.Tensor, list[str], list[Scene]]:
    """Scene indices, masks, captions and the scene each caption tells of, for one batch.
    With probability `article_share` a sample is a scene with an orange object, that object
    hidden and the caption calling it "an orange <shape>" (the case inpainting read as an
    orange background); else with probability `focus_share` a scene of 2-3 objects
    (`crowded`) with one hidden and the caption naming only that one, the way people prompt
    an inpainter; else with probability `binding_share` such a scene where the caption,
    which names them all, must say which one is missing; otherwise any scene and any mask,
    and any caption (10% empty). At article and focus share 0 the draws are the same as
    before those shares existed."""
    idx, masks, article, focus = [], [], [], []
    for _ in range(n):
        wanted = article_share > 0 and rng.random() < article_share
        focused = not wanted and focus_share > 0 and rng.random() < focus_share
        binding = not wanted and not focused and binding_share > 0 and rng.random() < binding_share
        i = rng.choice(orange) if wanted else rng.choice(crowded) if focused or binding else rng.randrange(len(scenes))
        hidden = [rng.choice(scenes[i].objects)] if focused else orange_objects(scenes[i]) if wanted else None
        idx.append(i)
        article.append(wanted)
        focus.append(hidden[0] if focused else None)
        masks.append(random_mask(rng, scenes[i], over_object=wanted or focused or binding, among=hidden))
    told = [Scene(scenes[i].background, [obj]) if obj else scenes[i] for i, obj in zip(idx, focus)]
    texts = [caption_where(scene, rng, an_object) if wanted
             else captions_for([scene], rng, p_empty=0.0 if obj else 0.1)[0]
             for scene, wanted, obj in zip(told, article, focus)]
    return idx, torch.stack(masks), texts, told


def train_inpaint(args, device):
    vae = trained_vae(device)
    scenes, lat = scene_cache("scenes64", args.cache, 64, vae, seed=1)
    tok, te, which_text = text_for("inpaint", args, device)
    unet = models.build_unet("inpaint")
    if not os.path.exists(os.path.join(RUNS, "inpaint", "state.safetensors")):
        init_from_text2img(unet, device)
    unet = unet.to(device).train()
    sched = models.build_scheduler()
    loop = Loop("inpaint", args, {"unet": unet}, {"unet": Ema(unet, 0.999)}, list(unet.parameters()),
                extra=which_text)
    said_which_text("inpaint", args, loop)
    rng = random.Random(4000 + loop.step)
    attention = AttentionSupervision("inpaint", unet, tok, args.attention_loss,
                                     record=bool(args.cell_attention_loss))
    cells = CellAttentionSupervision(attention, args.cell_attention_loss, args.cell_loss_max_grid)
    crowded = [i for i, s in enumerate(scenes) if len(s.objects) > 1]
    orange = with_an_orange_object(scenes)

    def make_batch(step):
        idx, masks, texts, told = inpaint_batch(rng, scenes, crowded, args.batch, args.binding_share,
                                                orange, args.article_share, args.focus_share)
        images = pixels_to_tensor(render_chunk([scenes[i] for i in idx], 64))
        return (idx, masks, images, tokens(tok, texts, "cpu"), attention.targets(texts, told),
                cells.targets(texts))

    batches = Prefetch(make_batch, loop.step, args.prefetch)

    def loss_fn(step):
        idx, masks, images, ids, targets, cell_words = batches()
        images, masks = images.to(device), masks.to(device)
        with torch.no_grad():
            cond = te(ids.to(device))[0]
            masked = encode_latents(vae, images * (masks < 0.5)).to(device)
        small = F.interpolate(masks, size=lat.shape[-2:])
        attention.start_pass()
        t = cells.timesteps(args.batch, sched, device)
        loss = diffusion_loss(unet, sched, lat[idx].to(device), cond, extra_in=torch.cat([small, masked], 1), t=t)
        loss = attention.added_to(loss, step, targets)
        return cells.added_to(loss, step, targets, cell_words, t)

    loop.run(loss_fn, batches)


def upscale_cache(n: int, crop: int, vae, seed: int):
    """Pairs for the upscaler: a random crop (side `crop` px) of a scene drawn at 256 px,
    as VAE latents, with the same area of the scene area-downsampled to 64 px."""
    path = os.path.join(RUNS, "cache", f"upscale{crop}_{n}.safetensors")
    if os.path.exists(path):
        t = load_file(path)
        return t["latents"].float(), t["lows"].float()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = random.Random(seed)
    lat, lows = [], []
    for i in range(0, n, 64):
        highs, smalls = [], []
        for _ in range(min(64, n - i)):
            big = render(random_scene(rng), 256)
            x, y = 4 * rng.randrange(0, (256 - crop) // 4 + 1), 4 * rng.randrange(0, (256 - crop) // 4 + 1)
            small = big.resize((64, 64), Image.BOX)
            highs.append(to_tensor(big.crop((x, y, x + crop, y + crop))))
            smalls.append(to_tensor(small.crop((x // 4, y // 4, (x + crop) // 4, (y + crop) // 4))))
        lat.append(encode_latents(vae, torch.stack(highs)))
        lows.append(torch.stack(smalls))
        print(f"cache upscale: {i + len(highs)}/{n}", flush=True)
    lat, lows = torch.cat(lat), torch.cat(lows)
    save_file({"latents": lat.half(), "lows": lows.half()}, path)
    return lat, lows


def low_res_noise_levels(n: int, low_share: float, device) -> torch.Tensor:
    """Noise levels for the upscaler's low-res input: uniform over 0-350 (the pipeline's
    max_noise_level), except a `low_share` of them uniform over 0-40, around the default
    20 that most pictures are upscaled at."""
    level = torch.randint(0, 351, (n,), device=device)
    low = torch.rand(n, device=device) < low_share
    return torch.where(low, torch.randint(0, 41, (n,), device=device), level)


def train_upscale(args, device):
    from diffusers import DDPMScheduler

    vae = trained_vae(device)
    lat, lows = upscale_cache(args.cache_up, 128, vae, seed=2)
    tok, te = trained_text(device, trainable=False)
    unet = models.build_unet("upscale").to(device).train()
    sched, low_sched = models.build_scheduler(), DDPMScheduler(num_train_timesteps=1000)
    loop = Loop("upscale", args, {"unet": unet}, {"unet": Ema(unet, 0.999)}, list(unet.parameters()))
    rng = random.Random(5000 + loop.step)
    c = args.crop_up  # crop side in latent (= low-res) pixels
    side = lat.shape[-1]

    def loss_fn(step):
        idx = [rng.randrange(len(lat)) for _ in range(args.batch)]
        x, y = rng.randrange(0, side - c + 1), rng.randrange(0, side - c + 1)
        z = lat[idx][:, :, y:y + c, x:x + c].to(device)
        low = lows[idx][:, :, y:y + c, x:x + c].to(device)
        level = low_res_noise_levels(len(idx), args.low_noise_share, device)
        low = low_sched.add_noise(low, torch.randn_like(low), level)
        with torch.no_grad():
            # crops show part of a scene, so the upscaler mostly learns without a caption
            cond = te(tokens(tok, ["" for _ in idx], device))[0]
        return diffusion_loss(unet, sched, z, cond, extra_in=low, class_labels=level)

    loop.run(loss_fn)


# ---------------------------------------------------------------- export

def _ema_unet(task: str):
    unet = models.build_unet(task)
    unet.load_state_dict(ema_unet_weights(task))
    return unet


UPSCALER_SCALING = 0.08333  # StableDiffusionUpscalePipeline forces this onto any VAE it is given


def upscaler_vae(vae):
    """A copy of the shared VAE for the upscale pipeline, exactly equivalent at its scale.

    StableDiffusionUpscalePipeline rewrites `vae.config.scaling_factor` to 0.08333 when it
    is built, so it decodes `latents / 0.08333`, while our upscaler learned latents scaled
    by the VAE's own factor. The 1x1 convolutions around the latent absorb the ratio k:
    the decoder's post_quant_conv takes k*z as it took z, and the encoder's quant_conv
    gives k*z (mean times k, log-variance plus 2 ln k), so encode and decode agree."""
    import copy

    k = vae.config.scaling_factor / UPSCALER_SCALING
    up = copy.deepcopy(vae)
    with torch.no_grad():
        up.post_quant_conv.weight /= k
        c = vae.config.latent_channels
        up.quant_conv.weight[:c] *= k
        up.quant_conv.bias[:c] *= k
        up.quant_conv.bias[c:] += 2 * math.log(k)
    up.register_to_config(scaling_factor=UPSCALER_SCALING)
    return up


def export(args):
    """Write the four pipelines as fp16 diffusers folders. A part used by several
    pipelines (tokenizer, VAE, the shared text encoder) is stored once, in the first folder
    whose pipeline has it (text2img, layout, inpaint, upscale), and linked from the others."""
    import shutil
    from diffusers import (DDPMScheduler, StableDiffusionGLIGENPipeline, StableDiffusionInpaintPipeline,
                           StableDiffusionPipeline, StableDiffusionUpscalePipeline)

    vae = trained_vae("cpu")
    tok, te = trained_text("cpu", trainable=False)
    sched = models.build_default_scheduler()
    common = dict(vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched)
    no_checker = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    up_vae = upscaler_vae(vae)  # rescaled in float32, before a pipeline turns `vae` to fp16

    own = []  # text2img's own encoder, built once, so that layout can share it

    def own_text():
        if shared_text_state() == state_path("text2img"):
            return te
        if not own:
            own.append(trained_text("cpu", trainable=False, path=state_path("text2img"))[1])
        return own[0]

    builders = {  # built only for the tasks that have a state
        "text2img": lambda: StableDiffusionPipeline(**dict(common, text_encoder=own_text()),
                                                    unet=_ema_unet("text2img"), **no_checker),
        "layout": lambda: StableDiffusionGLIGENPipeline(
            **dict(common, text_encoder=own_text() if reads_own_text("layout") else te),
            unet=_ema_unet("layout"), **no_checker),
        "inpaint": lambda: StableDiffusionInpaintPipeline(
            **dict(common, text_encoder=own_text() if reads_own_text("inpaint") else te),
            unet=_ema_unet("inpaint"), **no_checker),
        "upscale": lambda: StableDiffusionUpscalePipeline(
            **dict(common, vae=up_vae, scheduler=models.build_default_scheduler("upscale")),
            unet=_ema_unet("upscale"), low_res_scheduler=DDPMScheduler(num_train_timesteps=1000),
            max_noise_level=350),
    }
    home = {}  # id of a shared part -> the folder that stores it
    for name, build in builders.items():
        if not os.path.exists(state_path(name)):
            continue
        pipe = build()
        out = os.path.join(args.weights, name)
        shutil.rmtree(out, ignore_errors=True)
        pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
        for part in ("vae", "text_encoder", "tokenizer"):
            stored = home.setdefault(id(getattr(pipe, part)), name)
            if stored != name:  # the upscaler's rescaled VAE is its own (upscaler_vae)
                shutil.rmtree(os.path.join(out, part))
                os.symlink(os.path.join("..", stored, part), os.path.join(out, part))
        print("wrote", out, flush=True)
    steps = {}
    for task in ("vae", "text2img", "layout", "inpaint", "upscale"):
        p = os.path.join(RUNS, task, "state.safetensors")
        if os.path.exists(p):
            from safetensors import safe_open
            with safe_open(p, "pt") as f:
                steps[task] = int(f.metadata()["step"])
    minutes = {task: trained_minutes(task) for task in steps}
    with open(os.path.join(args.weights, "training.json"), "w") as f:
        json.dump({"steps": steps, "minutes": minutes, "device": "cpu (2 shared cores)"
                   if not torch.cuda.is_available() else torch.cuda.get_device_name()}, f, indent=1)


def trained_minutes(task: str) -> float:
    """Wall-clock training minutes from runs/<task>/log.txt: the sum over its sessions of
    the last elapsed time logged before each stop."""
    total, last = 0.0, 0.0
    path = os.path.join(RUNS, task, "log.txt")
    if not os.path.exists(path):
        return 0.0
    with open(path) as f:
        for line in f:
            if "state recreated from the shipped weights" in line and " after " in line:
                total, last = float(line.rsplit(" after ", 1)[1].split(" min")[0]), 0.0
            elif " min, " in line:
                last = float(line.rsplit("(", 1)[1].split(" min")[0])
            elif "stopped at step" in line or "resumed at step" in line:
                total, last = total + last, 0.0
    return round(total + last, 1)


def shared_text_folder(weights: str) -> str | None:
    """The folder of the text encoder that upscale (and layout and inpaint, unless they read
    text2img's own) were trained against, or None when the set has no other than text2img's."""
    own = os.path.realpath(os.path.join(weights, "text2img", "text_encoder"))
    for task in ("upscale", "inpaint", "layout"):
        folder = os.path.realpath(os.path.join(weights, task, "text_encoder"))
        if os.path.isdir(folder) and folder != own:
            return folder
    return None


def own_text_encoder(weights: str) -> str | None:
    """text2img's own text encoder folder in a shipped set, or None when it is the one
    the other pipelines share."""
    own = os.path.realpath(os.path.join(weights, "text2img", "text_encoder"))
    return own if shared_text_folder(weights) else None


def ships_own_text(weights: str, task: str) -> bool:
    """Whether the shipped pipeline of `task` reads text2img's own text encoder."""
    own = own_text_encoder(weights)
    return own is not None and os.path.realpath(os.path.join(weights, task, "text_encoder")) == own


def state_from_shipped(task: str, weights: str) -> bool:
    """Recreate runs/<task>/state.safetensors from the shipped fp16 folders, so training
    continues on a fresh clone (weights and EMA from the shipped model, optimiser afresh)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    # the shared text encoder's folder is None when all four read one: it lives in text2img's state
    folder = (shared_text_folder(weights) if task == "text"
              else os.path.join(weights, {"vae": "text2img"}.get(task, task)))
    info = os.path.join(weights, "training.json")
    if not (folder and os.path.isdir(folder) and os.path.exists(info)):
        return False
    with open(info) as f:
        shipped = json.load(f)
    step, minutes = shipped["steps"].get(task, 0), shipped.get("minutes", {}).get(task, 0.0)
    if not step and task != "text":  # the shared text encoder trains with text2img: no steps of its own
        return False
    f32 = dict(torch_dtype=torch.float32)
    if task == "text":
        mods, extra = {"text": CLIPTextModel.from_pretrained(folder, **f32)}, {}
    elif task == "vae":
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **f32)
        mods, extra = {"vae": vae}, {"scaling_factor": vae.config.scaling_factor}
    elif task == "text2img":
        mods = {"unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **f32),
                "text": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **f32)}
        extra = {}
    else:
        mods, extra = {"unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **f32)}, {}
        if task in ("layout", "inpaint") and ships_own_text(weights, task):
            extra = {"text": "text2img"}
    emas = {name: Ema(m, 0.999) for name, m in mods.items()}
    opt = torch.optim.AdamW([p for m in mods.values() for p in m.parameters()])
    os.makedirs(os.path.join(RUNS, task), exist_ok=True)
    save_state(os.path.join(RUNS, task, "state.safetensors"), mods, emas, opt, step, extra)
    log(task, f"state recreated from the shipped weights at step {step} after {minutes} min")
    return True


TASKS = {"vae": train_vae, "text2img": train_text2img, "layout": train_layout,
         "inpaint": train_inpaint, "upscale": train_upscale}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=list(TASKS) + ["export"])
    ap.add_argument("--minutes", type=float, default=30, help="stop after this long (resume later)")
    ap.add_argument("--max-steps", type=int, default=10 ** 9, help="stop at this total step")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--anneal-to", type=float, default=1.0,
                    help="learning rate at the end of this run, as a multiple of --lr, reached "
                         "linearly over --minutes or --max-steps, whichever ends the run first (1: constant)")
    ap.add_argument("--crop", type=int, default=32, help="VAE training crop (px)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="vae: fine-tune the decoder alone (encoder frozen, latents keep their meaning)")
    ap.add_argument("--crop-up", type=int, default=24, help="upscaler training crop (low-res px)")
    ap.add_argument("--low-noise-share", type=float, default=0.0,
                    help="upscale: share of samples whose low-res noise level is drawn from 0-40 "
                         "(around the pipeline's default 20) instead of 0-350")
    ap.add_argument("--cache", type=int, default=20000, help="scenes cached for the 64 px models")
    ap.add_argument("--cache-up", type=int, default=1500, help="256 px scene crops cached for the upscaler")
    ap.add_argument("--freeze-text", action="store_true",
                    help="text2img: keep the text encoder fixed (once other models use it)")
    ap.add_argument("--own-text", action="store_true",
                    help="text2img: train a text encoder of its own; the one layout, inpaint and "
                         "upscale were trained against is kept in runs/text first (fork_shared_text)")
    ap.add_argument("--cell-words-only", action="store_true",
                    help="text2img with --own-text: of its text encoder, train only the cell "
                         "words' input embeddings (see train_only_cell_words)")
    ap.add_argument("--freeze-unet", action="store_true",
                    help="text2img: keep the UNet fixed (with --cell-words-only, only the cell "
                         "words' embeddings learn)")
    ap.add_argument("--unet-lr-scale", type=float, default=1.0,
                    help="text2img: the UNet's learning rate as a multiple of --lr (the text "
                         "encoder's is --lr)")
    ap.add_argument("--attention-loss", type=float, default=0.0,
                    help="text2img, layout, inpaint: weight of the loss keeping each object's "
                         "words' cross-attention inside its box (see attention_loss.py)")
    ap.add_argument("--cell-attention-loss", type=float, default=0.0,
                    help=f"text2img, inpaint: weight of the loss keeping the cell words' cross-attention "
                         f"inside their object's box at t >= {HIGH_NOISE_FROM} (see "
                         "CellAttentionSupervision)")
    ap.add_argument("--cell-loss-max-grid", type=int, default=None,
                    help="text2img: the cell-word loss only on cross-attention layers whose grid "
                         "is at most this many latent pixels on a side (4: the coarsest)")
    ap.add_argument("--hold-tail", type=float, default=0.0,
                    help="text2img with --own-text: weight of how far the own encoder's outputs "
                         "after the caption's words moved from the shared encoder's (TailHold)")
    ap.add_argument("--quiet-tail", type=float, default=0.0,
                    help="text2img with --own-text: set the input embeddings of [SEP] and [PAD] to "
                         "this length (1000 makes the encoder's outputs from [SEP] on the same for "
                         "every caption, so the UNet must read the looks from the words; 0: leave them)")
    ap.add_argument("--crowding-loss", type=float, default=0.0,
                    help="text2img: weight of the cell words' share of their phrase's attention "
                         "inside the object's box (CrowdingSupervision)")
    ap.add_argument("--x0-weight-floor", type=float, default=0.0,
                    help="least weight of the predicted picture's error at any noise level "
                         "(0: plain min-SNR noise loss; see loss_weight)")
    ap.add_argument("--high-noise-share", type=float, default=0.0,
                    help=f"share of each batch whose timestep is drawn from t >= {HIGH_NOISE_FROM}, "
                         "where only the prompt says where an object goes (see training_timesteps)")
    ap.add_argument("--offset-noise", type=float, default=OFFSET_NOISE,
                    help="per-channel constant added to the training noise (0: plain noise)")
    ap.add_argument("--binding-share", type=float, default=0.0,
                    help="inpaint: share of samples that hide one object of a 2-3-object scene")
    ap.add_argument("--focus-share", type=float, default=0.0,
                    help="inpaint: share of samples that hide one object of a 2-3-object scene "
                         "and name only that object (a prompt of what goes in the mask)")
    ap.add_argument("--article-share", type=float, default=0.0,
                    help="text2img and layout: share of samples with an orange object, captioned "
                         "\"an orange <shape> ... on a <colour> background\"; inpaint: share of "
                         "samples with an orange object hidden, captioned \"an orange <shape> ...\"")
    ap.add_argument("--base-from-text2img", action="store_true",
                    help="layout: once, at the start of this run, take every non-gated layer "
                         "from text2img's current weights (the gated layers keep theirs)")
    ap.add_argument("--text-of-text2img", action="store_true",
                    help="layout, inpaint: read text2img's own text encoder (which tells the cell words "
                         "apart) instead of the shared one, from this run on (kept in the state)")
    ap.add_argument("--phrase-gain", type=float, default=1.0,
                    help="layout: once, at the start of this run, multiply what sets each GLIGEN "
                         "phrase apart from the mean phrase by this at the position net's first "
                         "layer (the mean phrase and absent objects unchanged; see amplify_phrases)")
    ap.add_argument("--open-gates", type=float, default=0.0,
                    help="layout: once, at the start of this run, set every gate tanh(alpha) "
                         "of the gated layers to this value (0: leave them)")
    ap.add_argument("--grounding-loss", type=float, default=0.0,
                    help="layout: weight of the loss keeping each box's attention in the gated "
                         "layers inside that box (see GroundingSupervision)")
    ap.add_argument("--hold-gates", type=float, default=0.0,
                    help="layout: set every gate tanh(alpha) to this value and keep it fixed "
                         "for this run (0: the gates learn)")
    ap.add_argument("--gated-lr-scale", type=float, default=1.0,
                    help="layout: learning rate of the gated (GLIGEN) layers, as a multiple of --lr")
    ap.add_argument("--own-words-loss", type=float, default=0.0,
                    help="layout: weight of the loss keeping the attention inside each object's box "
                         "off the other objects' words and off [SEP] and the pads")
    ap.add_argument("--own-words-strict", action="store_true",
                    help="layout, with --own-words-loss: count every token but the object's own "
                         "words (the start token and the caption's other words too)")
    ap.add_argument("--decoy-share", type=float, default=0.0,
                    help="layout: share of captioned samples of 2-3 objects with boxes whose caption "
                         "tells the objects' colours and shapes of one another (the boxes' "
                         "phrases stay true; see with_decoys)")
    ap.add_argument("--decoy-new-looks", action="store_true",
                    help="layout, with --decoy-share: the decoy captions give each object a colour "
                         "and shape drawn anew (never its own colour) instead of another object's")
    ap.add_argument("--cross-attention-lr-scale", type=float, default=1.0,
                    help="layout: learning rate of the cross-attention queries and keys (where "
                         "each word's attention falls), as a multiple of --lr")
    ap.add_argument("--prefetch", type=int, default=4,
                    help="batches made ahead in a background thread (0: each made in line; "
                         "the batches are the same either way)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--weights", default=WEIGHTS, help="export target folder")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    set_offset_noise(args.offset_noise)
    set_x0_floor(args.x0_weight_floor)
    set_high_noise_share(args.high_noise_share)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.task == "export":
        export(args)
    else:
        needed = {"vae": ["vae"]}.get(args.task, ["vae", "text", "text2img", args.task])
        for task in needed:
            if not os.path.exists(os.path.join(RUNS, task, "state.safetensors")):
                state_from_shipped(task, args.weights)
        TASKS[args.task](args, device_of(args))


if __name__ == "__main__":
    main()

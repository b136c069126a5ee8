"""Does the cell named in the prompt move the object? For one object asked in each of the
nine cells, makes pictures over a few seeds with the playground's defaults, and prints where
the judge finds the object (mean box centre, as fractions of the picture), how often it
lands in the asked cell, and how often it has the asked colour and shape (a model can learn
the cells and lose the shapes of prompts that name a cell).

    python -m playground.starter.probe_position [--seeds 6] [--steps 20] [--weights DIR]
                                                [--object "a small red circle"]
    python -m playground.starter.probe_position --weights DIR --shared-tail
    python -m playground.starter.probe_position --why
    python -m playground.starter.probe_position [--why] --state runs/text2img/state.safetensors
    python -m playground.starter.probe_position --gates [--state runs/layout/state.safetensors]

If the model follows the cell words, the nine mean centres spread over the picture (the
true renders' centres are about 0.17, 0.5 and 0.83 in each direction); if it ignores
them, they all sit in one spot and the "spread" line is near 0.

`--state` probes a text2img training state (its current, not EMA, UNet and text encoder
weights over the shipped folder): a quick check that a run is moving position.

`--shared-tail` gives text2img's own text encoder (a cell-word run's) the shared
encoder's outputs from [SEP] on: whether the UNet reads the object's look there.

`--gates` prints how far the layout model's gated (GLIGEN) layers are open: tanh(alpha)
of each layer's attention and dense gate, in the shipped layout UNet or, with `--state`,
in a layout training state's EMA weights. Gates near 0 mean the boxes hardly reach the
picture.

`--why` measures what a position word needs on its way to the picture:
  1. at which noise levels the noisy latent still shows where the object is (if it does
     up to t = 999, a model can learn to read the place from the noise instead);
  2. whether the UNet's features, where cross-attention reads the prompt, know where
     they are (a linear probe from features to coordinates, R^2 on held-out noise);
  3. how far apart the text encoder puts two prompts that differ only in the cell words,
     against two that differ only in the colour word;
  4. the same for the picture the UNet predicts from pure noise (t 999).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from .world import BASE, CELLS, cell_of

OBJECT = "a small red circle"


def cell_phrase(cell: str) -> str:
    return "in the centre" if cell == "centre" else f"in the {cell}"


def object_centre(reading: dict):
    """Centre (x, y) of the object the judge is surest of (whatever its colour: only
    the place matters here), or None when it finds none."""
    if not reading["objects"]:
        return None
    x0, y0, x1, y1 = max(reading["objects"], key=lambda o: o["score"])["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def looks_asked(reading: dict, colour: str, shape: str) -> bool:
    """The object the judge is surest of has the asked colour and shape."""
    if not reading["objects"]:
        return False
    surest = max(reading["objects"], key=lambda o: o["score"])
    return surest["colour"] == colour and surest["shape"] == shape


def probe(pg, judge, seeds, steps: int, obj: str = OBJECT) -> dict:
    """{cell: (mean centre or None, share of pictures with the object in that cell,
    share with its colour and shape right)} for `obj` ("a <size> <colour> <shape>")."""
    colour, shape = obj.split()[-2:]
    out = {}
    for cell in CELLS:
        prompt = f"{obj} {cell_phrase(cell)}"
        images = [pg.text_to_image(prompt, steps=steps, seed=s) for s in seeds]
        readings = judge.read_many(images)
        centres = [object_centre(r) for r in readings]
        found = [c for c in centres if c is not None]
        mean = tuple(np.mean(found, axis=0)) if found else None
        out[cell] = (mean, sum(cell_of(*c) == cell for c in found) / len(seeds),
                     sum(looks_asked(r, colour, shape) for r in readings) / len(seeds))
    return out


def spread(result: dict) -> float:
    """Largest distance between two cells' mean centres (0: the words move nothing)."""
    centres = [np.array(v[0]) for v in result.values() if v[0] is not None]
    return max((float(np.linalg.norm(a - b)) for a in centres for b in centres), default=0.0)


# ---------------------------------------------------------------- why (--why)

def one_object_latents(vae, n: int, seed: int = 7):
    """(scenes, latents scaled like the UNet's) for n one-object renders."""
    import random

    import torch

    from .train import encode_latents, to_tensor
    from .world import random_scene, render

    rng = random.Random(seed)
    scenes = [random_scene(rng, n_objects=1) for _ in range(n)]
    with torch.no_grad():
        latents = encode_latents(vae, torch.stack([to_tensor(render(s)) for s in scenes]))
    return scenes, latents.float()


def place_from_noisy_latent(latent, box, t_alpha_bar: float, generator) -> str:
    """The cell an observer guesses from the noisy latent at one noise level, knowing the
    object's look (its mean latent against the background's) and size but not its place:
    a matched filter, the best simple reading of where the object is."""
    import torch
    import torch.nn.functional as F

    n = latent.shape[-1]
    x0, y0, x1, y1 = (int(round(v * n)) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    inside = torch.zeros(n, n)
    inside[y0:y1, x0:x1] = 1
    background = (latent * (1 - inside)).sum((1, 2)) / (1 - inside).sum()
    look = (latent * inside).sum((1, 2)) / inside.sum() - background
    a = torch.tensor(t_alpha_bar)
    noisy = a.sqrt() * latent + (1 - a).sqrt() * torch.randn(latent.shape, generator=generator)
    score = ((noisy - a.sqrt() * background[:, None, None]) * look[:, None, None]).sum(0)
    k = x1 - x0
    pooled = F.avg_pool2d(score[None, None], k, stride=1, padding=k // 2, count_include_pad=False)[0, 0]
    row, col = divmod(int(pooled.argmax()), pooled.shape[1])
    return cell_of((col + 0.5) / pooled.shape[1], (row + 0.5) / pooled.shape[0])


def place_visible(vae, alphas_cumprod, timesteps, n: int = 300) -> dict:
    """{t: share of one-object latents whose cell the matched filter finds at t} (1/9 is chance)."""
    import torch

    scenes, latents = one_object_latents(vae, n)
    g = torch.Generator().manual_seed(0)
    return {t: float(np.mean([place_from_noisy_latent(z, s.objects[0].box, float(alphas_cumprod[t]), g)
                              == s.objects[0].cell for s, z in zip(scenes, latents)]))
            for t in timesteps}


def cross_attention_inputs(unet, cond, t: int, samples: int, seed: int = 0) -> dict:
    """{layer: (samples, pixels, channels)} features each cross-attention layer reads the
    prompt with, for pure-noise latents at timestep t."""
    import torch

    found, hooks = {}, []
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, name=name: found.setdefault(name, []).append(args[0].detach().float())))
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    try:
        with torch.no_grad():
            for _ in range(samples):
                noise = torch.randn(1, unet.config.in_channels, size, size, generator=g)
                unet(noise.to(unet.dtype), t, cond)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(f).numpy() for name, f in found.items()}


def position_r2(features: np.ndarray, ridge: float = 0.1) -> float:
    """How well a linear map from a pixel's features gives the pixel's (x, y): R^2 on the
    second half of the samples, fitted on the first half."""
    samples, pixels, channels = features.shape
    side = int(round(pixels ** 0.5))
    rows, cols = np.divmod(np.arange(pixels), side)
    where = np.stack([(cols + 0.5) / side, (rows + 0.5) / side], 1) - 0.5
    half = samples // 2
    fit, test = features[:half].reshape(-1, channels), features[half:].reshape(-1, channels)
    mean = fit.mean(0)
    fit, test = fit - mean, test - mean
    target = np.tile(where, (half, 1))
    w = np.linalg.solve(fit.T @ fit + ridge * np.eye(channels), fit.T @ target)
    truth = np.tile(where, (samples - half, 1))
    return float(1 - ((test @ w - truth) ** 2).sum() / (truth ** 2).sum())


def encoded(pipe, prompt: str):
    """The text encoder's output for `prompt`, padded to the tokenizer's full length."""
    import torch

    ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def prompt_gap(pipe, a: str, b: str) -> float:
    """Distance between the text encoder's outputs for two prompts (all 77 positions)."""
    return float((encoded(pipe, a) - encoded(pipe, b)).float().norm())


def predicted_picture_gap(pipe, a: str, b: str, t: int = 999, samples: int = 16) -> float:
    """Mean distance between the clean latents the UNet predicts at timestep t for prompts
    a and b, from the same pure-noise latents."""
    import torch

    ca, cb = encoded(pipe, a), encoded(pipe, b)
    alpha_bar = pipe.scheduler.alphas_cumprod[t]
    g = torch.Generator().manual_seed(0)
    size = pipe.unet.config.sample_size
    gaps = []
    for _ in range(samples):
        x = torch.randn(1, pipe.unet.config.in_channels, size, size, generator=g)
        with torch.no_grad():
            ea, eb = pipe.unet(x, t, ca).sample, pipe.unet(x, t, cb).sample
        gaps.append(float(((1 - alpha_bar).sqrt() * (eb - ea) / alpha_bar.sqrt()).norm()))
    return float(np.mean(gaps))


def text2img_pipeline(folder: str, state: str | None = None):
    """The text2img pipeline in `folder` (float32), with a training state's current UNet
    and text encoder weights when `state` is given."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if state:
        tensors = load_file(state)
        for module, prefix in ((pipe.unet, "unet."), (pipe.text_encoder, "text.")):
            module.load_state_dict({k[len(prefix):]: v.float() for k, v in tensors.items()
                                    if k.startswith(prefix)})
    return pipe


class PipelinePictures:
    """`text_to_image(prompt, steps, seed)` straight from a pipeline, at the starter
    text2img's default guidance (what `Playground.text_to_image` gives for the starter)."""

    def __init__(self, pipe, guidance: float):
        self.pipe, self.guidance = pipe, guidance

    def text_to_image(self, prompt: str, steps: int, seed: int):
        import torch

        return self.pipe(prompt, num_inference_steps=steps, guidance_scale=self.guidance,
                         height=BASE, width=BASE, generator=torch.Generator().manual_seed(seed)).images[0]


def gate_openings(tensors: dict) -> dict:
    """{"attention": [...], "dense": [...]}: tanh(alpha) of every gated layer's gates."""
    import torch

    return {kind: [float(torch.tanh(v.float())) for k, v in sorted(tensors.items())
                   if k.endswith(f".alpha_{short}")]
            for kind, short in (("attention", "attn"), ("dense", "dense"))}


def print_gates(folder: str, state: str | None) -> None:
    from safetensors.torch import load_file

    if state:
        tensors = {k[len("ema_unet."):]: v for k, v in load_file(state).items()
                   if k.startswith("ema_unet.")}
    else:
        tensors = load_file(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    for kind, values in gate_openings(tensors).items():
        opening = np.abs(values)
        print(f"{kind} gates ({len(values)} layers): largest {opening.max():.4f}, "
              f"median {np.median(opening):.4f}")


def with_shared_tail(pipe, shared_folder: str) -> None:
    """From now on, `pipe`'s text encoder gives the shared (inpaint and upscale) encoder's outputs from
    each caption's [SEP] on, its own before: does the UNet read the object's look from the
    positions after the words?"""
    import torch
    from transformers import CLIPTextModel

    from .attention_loss import from_sep_on

    shared = CLIPTextModel.from_pretrained(shared_folder).eval()

    def after_words(module, args, kwargs, output):
        ids = args[0] if args else kwargs["input_ids"]
        tail = from_sep_on(ids, pipe.tokenizer.sep_token_id)
        with torch.no_grad():
            held = shared(ids)[0].to(output[0].dtype)
        output[0].copy_(torch.where(tail, held, output[0]))
        return output

    pipe.text_encoder.register_forward_hook(after_words, with_kwargs=True)


def why(pipe) -> None:
    ac = pipe.scheduler.alphas_cumprod
    print("1. Where the object is, read from the noisy latent by a matched filter "
          "(300 one-object renders; chance 0.11):")
    for t, share in place_visible(pipe.vae, ac, [999, 950, 900, 800, 600]).items():
        snr = float(ac[t] / (1 - ac[t]))
        print(f"   t {t:4d}  signal-to-noise {snr:.4f}  right cell {share:.2f}")
    base, other_cell = PROMPT.format(where="in the top left"), PROMPT.format(where="in the bottom right")
    other_colour = base.replace("red", "blue")
    print("2. Position R^2 of the features each cross-attention layer reads the prompt with "
          "(t 999, 64 noise samples):")
    for name, f in cross_attention_inputs(pipe.unet, encoded(pipe, base), 999, 64).items():
        side = int(round(f.shape[1] ** 0.5))
        print(f"   {name:52s} {side:2d} x {side:<2d} R^2 {position_r2(f):.2f}")
    cell, colour = prompt_gap(pipe, base, other_cell), prompt_gap(pipe, base, other_colour)
    print(f"3. Text encoder: 'top left' vs 'bottom right' {cell:.1f}, 'red' vs 'blue' {colour:.1f} "
          f"(ratio {cell / colour:.2f})")
    cell, colour = predicted_picture_gap(pipe, base, other_cell), predicted_picture_gap(pipe, base, other_colour)
    print(f"4. Predicted clean latent at t 999 (16 noise samples): 'top left' vs 'bottom right' "
          f"{cell:.2f}, 'red' vs 'blue' {colour:.2f} (ratio {cell / colour:.2f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default=None, help="starter weights folder to probe")
    ap.add_argument("--object", default=OBJECT, help='the object asked for: "a <size> <colour> <shape>"')
    ap.add_argument("--why", action="store_true", help="measure why (see above) instead")
    ap.add_argument("--state", default=None,
                    help="a text2img (or, with --gates, layout) training state to probe (see above)")
    ap.add_argument("--gates", action="store_true", help="print the layout model's gates instead")
    ap.add_argument("--shared-tail", action="store_true",
                    help="text2img's own encoder, but the shared one's outputs from [SEP] on")
    args = ap.parse_args(argv)
    import torch

    from .. import registry

    if args.weights:
        registry.STARTER_DIR = args.weights
    if args.gates:
        return print_gates(os.path.join(registry.STARTER_DIR, registry.STARTER_FOLDERS["layout_to_image"]),
                           args.state)
    torch.set_num_threads(args.threads)
    folder = os.path.join(registry.STARTER_DIR, registry.STARTER_FOLDERS["text_to_image"])
    if args.why:
        return why(text2img_pipeline(folder, args.state))
    from .. import Playground
    from .judge import Judge

    if args.state:
        from .evaluate import default_guidance

        pictures = PipelinePictures(text2img_pipeline(folder, args.state), default_guidance("text2img"))
    else:
        pictures = Playground(device="cpu")
    if args.shared_tail:
        pipe = pictures.pipe if args.state else pictures.registry.pipeline("starter", "text_to_image")
        with_shared_tail(pipe, os.path.join(registry.STARTER_DIR, registry.STARTER_FOLDERS["inpaint"],
                                            "text_encoder"))
    result = probe(pictures, Judge.load(), range(args.seeds), args.steps, args.object)
    for cell, (centre, right, looks) in result.items():
        where = "no object found" if centre is None else f"x {centre[0]:.2f} y {centre[1]:.2f}"
        print(f"asked {cell:12s} mean centre {where}; in the asked cell {right:.2f}; "
              f"colour and shape right {looks:.2f}")
    n = args.seeds * len(result)
    print(f"in the asked cell {round(sum(v[1] for v in result.values()) * args.seeds)} of {n}; "
          f"colour and shape right {round(sum(v[2] for v in result.values()) * args.seeds)} of {n}")
    print(f"spread of the mean centres: {spread(result):.2f} (the renders: about 0.9)")


if __name__ == "__main__":
    main()

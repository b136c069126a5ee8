"""HTTP endpoints for the views inside the sampler: `/forward_noise`, `/denoise_trace`
and `/attention_maps`, over the same `Playground` methods as the Learn tab and notebooks.
Pictures come back as lossless PNG files.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    noisy, noise, info = client.predict(image=handle_file("picture.png"), t=500,
                                        api_name="/forward_noise")        # info["snr"]
    frames, settings = client.predict(prompt="a red circle", steps=10, seed=1,
                                      show_steps=[2, 5, 10], api_name="/denoise_trace")
    # frames: [{"step": 2, "x_t": path, "x0": path}, ...]
    maps, settings = client.predict(prompt="a red circle", seed=1, api_name="/attention_maps")
    # maps: [{"token": "red", "map": path (overlay PNG), "weights": [[...]]}, ...]
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio.data_classes import FileData
from PIL import Image

from .. import Playground
from .api import register_endpoints, uploaded_picture
from .common import call_core, settings_json

ENDPOINTS = ("forward_noise", "denoise_trace", "attention_maps")


class LearnEndpoints:
    def __init__(self, pg: Playground, output_dir):
        self.pg = pg
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def register(self, *, concurrency_limit: int | None, concurrency_id: str = "sampling"):
        register_endpoints(self, ENDPOINTS, concurrency_limit=concurrency_limit,
                           concurrency_id=concurrency_id)

    def forward_noise(self, image: FileData, t: int, scheduler: str | None = None,
                      model: str = "starter", seed: int = 0) -> tuple[FileData, FileData, dict]:
        """Noise a picture to training step t (0..999 for the starter):
        x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. Returns (x_t PNG, the
        noise added PNG, {t, alpha_bar, snr, sigma, seed, scheduler})."""
        picture = uploaded_picture(image, "image")
        result = call_core(self.pg.forward_noise, picture, t, scheduler=scheduler or None,
                           model=model, seed=seed)
        return self._png(result.noisy, "x_t.png"), self._png(result.noise, "noise.png"), \
            result.info()

    def denoise_trace(self, prompt: str, negative_prompt: str = "", model: str = "starter",
                      scheduler: str | None = None, steps: int = 20, guidance: float | None = None,
                      seed: int = -1, width: int | None = None, height: int | None = None,
                      show_steps: list[int] | None = None,
                      place_objects: bool = False,
                      colour_hints: bool = False,
                      regional_prompts: bool = False,
                      compose_objects: bool = False) -> tuple[list[dict], dict]:
        """A text-to-image run as a filmstrip. show_steps: step numbers 1..steps (default
        six spread out, the last included; with compose_objects the steps run on across the
        passes, 1..steps x objects, and part says which: "object 2 of 2"). Returns
        ([{step, timestep, part, x_t PNG, x0 PNG}], settings of the final picture, which
        equals /text_to_image's)."""
        image, frames = call_core(
            self.pg.denoise_trace, prompt, show_steps=show_steps or None,
            negative_prompt=negative_prompt, model=model, scheduler=scheduler or None,
            steps=steps, guidance=guidance, seed=seed, width=width, height=height,
            place_objects=place_objects, colour_hints=colour_hints,
            regional_prompts=regional_prompts, compose_objects=compose_objects)
        strip = [{"step": f.step, "timestep": f.timestep, "part": f.part,
                  "x_t": self._png(f.x_t, f"x_t_{f.step}.png"),
                  "x0": self._png(f.x0, f"x0_{f.step}.png")} for f in frames]
        return strip, settings_json(image)

    def attention_maps(self, prompt: str, negative_prompt: str = "", model: str = "starter",
                       scheduler: str | None = None, steps: int = 20, guidance: float | None = None,
                       seed: int = -1, width: int | None = None, height: int | None = None,
                       show_steps: list[int] | None = None,
                       place_objects: bool = False,
                       colour_hints: bool = False) -> tuple[list[dict], dict]:
        """Cross-attention per prompt token (averaged over heads, layers and show_steps,
        default all steps). Returns ([{token, map: overlay PNG, weights: latent-grid
        rows summing to 1}], settings of the picture made)."""
        result = call_core(
            self.pg.attention_maps, prompt, show_steps=show_steps or None,
            negative_prompt=negative_prompt, model=model, scheduler=scheduler or None,
            steps=steps, guidance=guidance, seed=seed, width=width, height=height,
            place_objects=place_objects, colour_hints=colour_hints)
        maps = [{"token": token, "map": self._png(picture, f"map_{i}.png"),
                 "weights": weights.round(6).tolist()}
                for i, (token, picture, weights)
                in enumerate(zip(result.tokens, result.overlays, result.maps))]
        return maps, settings_json(result.image)

    def _png(self, picture: Image.Image, name: str) -> FileData:
        handle, path = tempfile.mkstemp(suffix=".png", prefix="learn-", dir=self.output_dir)
        os.close(handle)
        picture.save(path, format="PNG")
        return FileData(path=path, orig_name=name, mime_type="image/png")

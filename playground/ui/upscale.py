"""The Super-resolution tab: a small picture in, one 4 times larger out, shown side by
side at the same display size so the added detail is visible."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from .. import Playground
from .common import (DISPLAY_HEIGHT, model_defaults, png_ready, preview_and_status, run_buttons,
                     sampling_controls, settings_json, stream_to_ui, wire_run)
from .examples import example_picture_file
from .runs import ActiveRuns

TASK = "upscale"
TAB = "upscale"
# Input and output pictures drawn in boxes of one size, pixels kept sharp.
CSS = f"""
#{TAB}-input img, #{TAB}-result img {{
    width: {DISPLAY_HEIGHT - 40}px; height: {DISPLAY_HEIGHT - 40}px;
    object-fit: contain; image-rendering: pixelated;
}}
"""


@dataclass
class UpscaleTab:
    source: gr.Image
    result: gr.Image
    send_to_inpaint: gr.Button
    fields: dict = field(default_factory=dict)  # settings key -> widget


def build(pg: Playground, runs: ActiveRuns, *, concurrency_limit: int | None) -> UpscaleTab:
    d = model_defaults(pg, pg.models(TASK)[0], TASK) if pg.models(TASK) else {}
    with gr.Row(equal_height=True):
        source = gr.Image(label="Input", type="pil", image_mode="RGB", format="png",
                          sources=["upload", "clipboard"], height=DISPLAY_HEIGHT,
                          elem_id=f"{TAB}-input")
        result = gr.Image(label="Output x4 (PNG)", format="png", type="filepath", interactive=False,
                          height=DISPLAY_HEIGHT, elem_id=f"{TAB}-result")
    with gr.Row():
        with gr.Column():
            example = gr.Button("Use an example picture", size="sm")
            prompt = gr.Textbox(label="Prompt (optional caption of the picture)",
                                elem_id=f"{TAB}-prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id=f"{TAB}-negative")
            noise = gr.Slider(0, d.get("max_noise_level", 350), value=d.get("noise_level", 20),
                              step=1, label="Noise level (higher: the model invents more)",
                              elem_id=f"{TAB}-noise")
            buttons = run_buttons(TAB, "Upscale")
            controls = sampling_controls(pg, TASK, TAB)
        with gr.Column():
            send_to_inpaint = gr.Button("Send to Inpainting", size="sm")
            preview, status = preview_and_status(TAB)
            settings = gr.JSON(label="Settings used", open=False)

    example.click(example_picture_file, None, source, queue=False, api_visibility="private")
    controls.model.change(lambda m: noise_update(pg, m), controls.model, noise, queue=False,
                          api_visibility="private")

    def generate(picture, prompt, negative, noise_level, model, scheduler, steps, guidance,
                 seed, request: gr.Request, progress=gr.Progress()):
        def call(control):
            return pg.upscale(picture, prompt, negative_prompt=negative, model=model,
                              scheduler=scheduler, steps=steps, guidance=guidance,
                              noise_level=int(noise_level), seed=seed, control=control)

        def on_done(image):
            return png_ready(image), settings_json(image)

        yield from stream_to_ui(call, steps=steps, runs=runs, request=request, tab=TAB,
                                progress=progress, n_results=2, on_done=on_done)

    wire_run(buttons, generate, [source, prompt, negative, noise, *controls.inputs],
             [result, settings], preview, status, controls.seed_used, runs=runs, tab=TAB,
             concurrency_id="sampling", concurrency_limit=concurrency_limit)
    fields = {"prompt": prompt, "negative_prompt": negative, **controls.fields,
              "noise_level": noise}
    return UpscaleTab(source, result, send_to_inpaint, fields)


def noise_update(pg: Playground, model: str):
    d = model_defaults(pg, model, TASK)
    return gr.update(maximum=d.get("max_noise_level", 350), value=d.get("noise_level", 20))

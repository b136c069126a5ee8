"""The Inpainting tab: bring a picture, paint over what should change, describe the
picture wanted; pixels outside the painted mask come back unchanged."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
import numpy as np
from PIL import Image

from .. import Playground
from .common import (DISPLAY_HEIGHT, model_defaults, png_ready, preview_and_status, run_buttons,
                     sampling_controls, settings_json, stream_to_ui, wire_run)
from .examples import example_picture_file
from .runs import ActiveRuns

TASK = "inpaint"
TAB = "inpaint"


@dataclass
class InpaintTab:
    editor: gr.ImageEditor
    result: gr.Image
    send_to_upscale: gr.Button
    fields: dict = field(default_factory=dict)  # settings key -> widget


def split_editor_value(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """(picture, mask) from the editor: the background, and white wherever any layer
    was painted (the union of the layers' alpha; brush edges count as painted)."""
    if not value or value.get("background") is None:
        return None, None
    background = value["background"]
    picture = background.convert("RGB")
    alpha = np.zeros((picture.height, picture.width), dtype=np.uint8)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        layer = layer.convert("RGBA")
        if layer.size != picture.size:
            layer = layer.resize(picture.size, Image.NEAREST)
        alpha = np.maximum(alpha, np.asarray(layer)[:, :, 3])
    return picture, Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), mode="L")


def editor_value(picture: Image.Image | str | None):
    """What the editor shows for a brought picture: it as background, no paint yet."""
    if picture is None:
        return None
    return {"background": picture, "layers": [], "composite": picture}


def build(pg: Playground, runs: ActiveRuns, *, concurrency_limit: int | None) -> InpaintTab:
    d = model_defaults(pg, pg.models(TASK)[0], TASK) if pg.models(TASK) else {}
    with gr.Row():
        with gr.Column():
            editor = gr.ImageEditor(label="Picture: paint over what should change",
                                    type="pil", image_mode="RGBA", format="png",
                                    sources=["upload", "clipboard"], layers=False,
                                    brush=gr.Brush(colors=["#ff00ff"], default_size=6,
                                                   color_mode="fixed"),
                                    height=DISPLAY_HEIGHT + 80, elem_id=f"{TAB}-editor")
            example = gr.Button("Use an example picture", size="sm")
            prompt = gr.Textbox(label="Prompt: what to paint in the mask",
                                info="or the whole picture wanted after repainting",
                                value="a green triangle", elem_id=f"{TAB}-prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id=f"{TAB}-negative")
            # On from the start: a prompt of the whole picture comes out right in the mask
            # far more often read down to the object there (model card, "Focus on the mask")
            focus = gr.Checkbox(value=True, label="Focus on the mask",
                                info="a prompt that places several objects (\"... in the top "
                                     "left and ... in the bottom right\") paints only the one "
                                     "placed where the mask is; one that names them without "
                                     "places, the one whose colour is missing outside it",
                                elem_id=f"{TAB}-focus")
            strength = gr.Slider(0.01, 1.0, value=d.get("strength", 1.0), step=0.01,
                                 label="Strength (1 = repaint from pure noise)",
                                 elem_id=f"{TAB}-strength")
            buttons = run_buttons(TAB)
            controls = sampling_controls(pg, TASK, TAB)
        with gr.Column():
            with gr.Row():
                mask_used = gr.Image(label="Mask used (white = repaint)", format="png",
                                     interactive=False, height=DISPLAY_HEIGHT,
                                     elem_id=f"{TAB}-mask")
                result = gr.Image(label="Result (PNG)", format="png", type="filepath",
                                  interactive=False, height=DISPLAY_HEIGHT,
                                  elem_id=f"{TAB}-result")
            send_to_upscale = gr.Button("Send to Super-resolution", size="sm")
            preview, status = preview_and_status(TAB)
            settings = gr.JSON(label="Settings used", open=False)

    example.click(lambda: editor_value(example_picture_file()), None, editor, queue=False,
                  api_visibility="private")

    def generate(value, prompt, negative, focused, strength, model, scheduler, steps, guidance,
                 seed, request: gr.Request, progress=gr.Progress()):
        picture, mask = split_editor_value(value)

        def call(control):
            return pg.inpaint(picture, mask, prompt, negative_prompt=negative, model=model,
                              scheduler=scheduler, steps=steps, guidance=guidance,
                              strength=strength, seed=seed, control=control,
                              focus_on_mask=focused)

        def on_done(image):
            return mask, png_ready(image), settings_json(image)

        yield from stream_to_ui(call, steps=steps, runs=runs, request=request, tab=TAB,
                                progress=progress, n_results=3, on_done=on_done)

    wire_run(buttons, generate, [editor, prompt, negative, focus, strength, *controls.inputs],
             [mask_used, result, settings], preview, status, controls.seed_used, runs=runs,
             tab=TAB, concurrency_id="sampling", concurrency_limit=concurrency_limit,
             progress_on=result)
    fields = {"prompt": prompt, "negative_prompt": negative, **controls.fields,
              "strength": strength, "focus_on_mask": focus}
    return InpaintTab(editor, result, send_to_upscale, fields)

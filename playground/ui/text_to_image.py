"""The Text to image tab: a caption in, one or more pictures out."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from .. import Playground
from .common import (DISPLAY_HEIGHT, call_core, gallery_css, model_defaults, png_ready,
                     preview_and_status, run_buttons, sampling_controls, settings_json,
                     stream_to_ui, wire_run)
from .runs import ActiveRuns

TASK = "text_to_image"
TAB = "t2i"
MAX_IMAGES = 8
CSS = gallery_css(f"{TAB}-result", DISPLAY_HEIGHT)


@dataclass
class TextToImageTab:
    gallery: gr.Gallery
    selected: gr.State
    send_to_inpaint: gr.Button
    send_to_upscale: gr.Button
    fields: dict = field(default_factory=dict)  # settings key -> widget


def build(pg: Playground, runs: ActiveRuns, *, concurrency_limit: int | None) -> TextToImageTab:
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", value="a red circle", lines=2,
                                elem_id=f"{TAB}-prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id=f"{TAB}-negative")
            buttons = run_buttons(TAB)
            controls = sampling_controls(pg, TASK, TAB)
            width, height, count = size_and_count(pg, controls.model.value)
            place = gr.Checkbox(label="Place objects where the prompt says (top left, centre, "
                                "above, to the left of, ...)", value=False, elem_id=f"{TAB}-place",
                                info="Steers the starting noise before sampling; about +0.7 s "
                                     "per picture on the starter model.")
            hints = gr.Checkbox(label="Colour hints: paint each placed object's colour into "
                                "its cell", value=False, elem_id=f"{TAB}-hints",
                                info="Adds the colour (red, yellow, ...) faintly to the "
                                     "starting noise there, sized by size words, and a named "
                                     "background's colour around them; with Place objects it "
                                     "keeps the colours steering alone loses.")
            regional = gr.Checkbox(label="Regional prompts: each placed object's cell reads "
                                   "only its words", value=False, elem_id=f"{TAB}-regional",
                                   info="Keeps two objects' colours and shapes apart (\"a blue "
                                        "disc in the bottom left and a yellow square in the "
                                        "top right\").")
            compose = gr.Checkbox(label="Compose object by object: paint each placed object "
                                  "by itself", value=False, elem_id=f"{TAB}-compose",
                                  info="A canvas of the named background, then the model's "
                                       "inpainter paints each object in its place, reading "
                                       "only its words: two objects come out right far more "
                                       "often. One pass per object; replaces the three "
                                       "options above.")
        with gr.Column():
            gallery = gr.Gallery(label="Result (PNG)", format="png", type="filepath",
                                 columns=2, height=DISPLAY_HEIGHT, object_fit="contain",
                                 interactive=False, elem_id=f"{TAB}-result")
            selected = gr.State(0)
            with gr.Row():
                send_to_inpaint = gr.Button("Send to Inpainting", size="sm")
                send_to_upscale = gr.Button("Send to Super-resolution", size="sm")
            preview, status = preview_and_status(TAB)
            settings = gr.JSON(label="Settings used", open=False)

    controls.model.change(lambda m: size_updates(pg, m), controls.model, [width, height],
                          queue=False, api_visibility="private")
    gallery.select(remember_selection, None, selected, queue=False, api_visibility="private")

    def generate(prompt, negative, model, scheduler, steps, guidance, seed, width, height,
                 count, place, hinted, regional_on, composing, request: gr.Request,
                 progress=gr.Progress()):
        def call(control):
            return pg.text_to_image(prompt, negative, model=model, scheduler=scheduler,
                                    steps=steps, guidance=guidance, seed=seed, width=width,
                                    height=height, num_images=count, control=control,
                                    place_objects=place, colour_hints=hinted,
                                    regional_prompts=regional_on, compose_objects=composing)
        yield from stream_to_ui(call, steps=steps, runs=runs, request=request, tab=TAB,
                                progress=progress, n_results=3, on_done=show_results)

    wire_run(buttons, generate,
             [prompt, negative, *controls.inputs, width, height, count, place, hints, regional,
              compose],
             [gallery, settings, selected], preview, status, controls.seed_used,
             runs=runs, tab=TAB, concurrency_id="sampling", concurrency_limit=concurrency_limit)
    fields = {"prompt": prompt, "negative_prompt": negative, **controls.fields,
              "width": width, "height": height, "num_images": count, "place_objects": place,
              "colour_hints": hints, "regional_prompts": regional, "compose_objects": compose}
    return TextToImageTab(gallery, selected, send_to_inpaint, send_to_upscale, fields)


def remember_selection(evt: gr.SelectData) -> int:
    return evt.index


def show_results(result) -> tuple:
    images = result if isinstance(result, list) else [result]
    return [png_ready(image) for image in images], settings_json(images[0]), 0


def size_and_count(pg: Playground, model: str | None):
    d = model_defaults(pg, model, TASK) if model else {}
    multiple = d.get("size_multiple", 8)
    max_side = d.get("max_side", 1024)
    with gr.Row():
        width = gr.Slider(multiple, max_side, value=d.get("width", 512), step=multiple,
                          label="Width", elem_id=f"{TAB}-width")
        height = gr.Slider(multiple, max_side, value=d.get("height", 512), step=multiple,
                           label="Height", elem_id=f"{TAB}-height")
        count = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Number of images",
                          elem_id=f"{TAB}-count")
    return width, height, count


def size_updates(pg: Playground, model: str) -> tuple:
    d = call_core(pg.defaults, model, TASK)
    multiple, max_side = d.get("size_multiple", 8), d.get("max_side", 1024)
    return tuple(gr.update(value=d.get(side), minimum=multiple, maximum=max_side, step=multiple)
                 for side in ("width", "height"))

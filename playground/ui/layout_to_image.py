"""The Layout to image tab: draw boxes on a canvas, name each box with a phrase, and
GLIGEN puts those objects in those boxes."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
from gradio_image_annotation import image_annotator
from PIL import Image, ImageDraw

from .. import Playground
from ..registry import DEFAULT_GROUNDING
from .common import (DISPLAY_HEIGHT, model_defaults, png_ready, preview_and_status,
                     run_buttons, sampling_controls, settings_json, stream_to_ui, wire_run)
from .examples import picture_file
from .runs import ActiveRuns

TASK = "layout_to_image"
TAB = "layout"
CANVAS_SIDE = 512  # pixels of the drawing canvas (boxes are sent as fractions of it)
EXAMPLE_BOXES = [("a red circle", (0.08, 0.1, 0.45, 0.47)),
                 ("a blue square", (0.55, 0.5, 0.92, 0.87))]


@dataclass
class LayoutTab:
    result: gr.Image
    send_to_inpaint: gr.Button
    send_to_upscale: gr.Button
    fields: dict = field(default_factory=dict)  # settings key -> widget (boxes: the canvas)


def canvas_picture(width: int = CANVAS_SIDE, height: int = CANVAS_SIDE) -> Image.Image:
    """A white canvas with a faint 3 x 3 grid (the starter world's named cells)."""
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i in (1, 2):
        draw.line([(width * i // 3, 0), (width * i // 3, height)], fill=(225, 225, 225))
        draw.line([(0, height * i // 3), (width, height * i // 3)], fill=(225, 225, 225))
    return canvas


def canvas_value(boxes=()) -> dict:
    """The annotator's value: the blank canvas and (phrase, fractional box) pairs."""
    return {"image": picture_file(canvas_picture),
            "boxes": [{"label": phrase, "xmin": round(x0 * CANVAS_SIDE),
                       "ymin": round(y0 * CANVAS_SIDE), "xmax": round(x1 * CANVAS_SIDE),
                       "ymax": round(y1 * CANVAS_SIDE)}
                      for phrase, (x0, y0, x1, y1) in boxes]}


def phrases_and_boxes(annotation: dict | None) -> tuple[list[str], list[list[float]]]:
    """The annotator's pixel boxes as phrases and [x0, y0, x1, y1] fractions of the canvas."""
    if not annotation or annotation.get("image") is None:
        return [], []
    width, height = picture_size(annotation["image"])
    phrases, boxes = [], []
    for box in annotation.get("boxes") or []:
        phrases.append((box.get("label") or "").strip())
        boxes.append([fraction(box["xmin"], width), fraction(box["ymin"], height),
                      fraction(box["xmax"], width), fraction(box["ymax"], height)])
    return phrases, boxes


def fraction(pixel: float, side: int) -> float:
    """pixel / side as the shortest decimal that lands on the same canvas pixel: the
    canvas keeps whole pixels, so a box restored from settings (0.1 -> pixel 51) reads
    back as 0.1, not 0.0996, and makes the same picture again."""
    for digits in range(1, 4):
        short = round(pixel / side, digits)
        if round(short * side) == round(pixel):
            return short
    return round(pixel / side, 4)


def picture_size(image) -> tuple[int, int]:
    """(width, height) of a numpy array, PIL image or picture file."""
    if hasattr(image, "shape"):
        return image.shape[1], image.shape[0]
    if isinstance(image, str):
        with Image.open(image) as opened:
            return opened.size
    return image.size


def boxes_table(annotation: dict | None) -> list[list]:
    phrases, boxes = phrases_and_boxes(annotation)
    return [[phrase, *box] for phrase, box in zip(phrases, boxes)]


def boxes_over(image: Image.Image, phrases: list[str], boxes: list[list[float]]):
    """The AnnotatedImage value: the result with each box (in its pixels) and phrase."""
    w, h = image.size
    return (image, [((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)), phrase)
                    for phrase, (x0, y0, x1, y1) in zip(phrases, boxes)])


def grounding_default(pg: Playground, model: str | None) -> float:
    return model_defaults(pg, model, TASK)["grounding"] if model else DEFAULT_GROUNDING


def grounding_slider(pg: Playground, model: str | None) -> gr.Slider:
    """GLIGEN's scheduled sampling: the boxes steer the first steps, the caption the rest."""
    return gr.Slider(0, 1, value=grounding_default(pg, model), step=0.05,
                     label="Grounding: share of the steps the boxes steer",
                     elem_id=f"{TAB}-grounding",
                     info="1 = every step (the starter model keeps colours and shapes best "
                          "so); 0.3 = the first third, then the caption alone (diffusers' "
                          "default: large models draw more natural pictures).")


def build(pg: Playground, runs: ActiveRuns, *, concurrency_limit: int | None) -> LayoutTab:
    with gr.Row():
        with gr.Column():
            gr.Markdown("Drag on the canvas to draw a box, type its phrase (e.g. *a red "
                        "circle*), drag or resize boxes to move them.")
            canvas = image_annotator(canvas_value(), label="Boxes", image_type="numpy",
                                     sources=[], show_clear_button=False,
                                     show_download_button=False, height=CANVAS_SIDE,
                                     elem_id=f"{TAB}-canvas")
            with gr.Row():
                example = gr.Button("Example layout", size="sm")
                clear = gr.Button("Clear boxes", size="sm")
            table = gr.Dataframe(boxes_table(canvas_value()),
                                 headers=["phrase", "x0", "y0", "x1", "y1"],
                                 label="Boxes sent to the model (0..1)", interactive=False,
                                 elem_id=f"{TAB}-table")
            prompt = gr.Textbox(label="Global prompt", value="a red circle and a blue square",
                                elem_id=f"{TAB}-prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id=f"{TAB}-negative")
            buttons = run_buttons(TAB)
            controls = sampling_controls(pg, TASK, TAB)
            grounding = grounding_slider(pg, controls.model.value)
            # Off from the start: with regional prompts and colour hints (below) the starter
            # layout model keeps more attributes unsteered at about the same box fit (model
            # card, "regional + colour hints" rows), and a picture costs no gradients
            place = gr.Checkbox(label="Steer the objects into their boxes", value=False,
                                elem_id=f"{TAB}-place",
                                info="For models that ignore their boxes: steers the "
                                     "starting noise toward them before sampling (20 passes "
                                     "with gradients: about +1 s per picture on the starter "
                                     "model, far more on large models).")
            # On from the start: each box reads only its phrase, so two objects keep their
            # own colours and shapes (README, "Regional prompts and colour hints")
            regional = gr.Checkbox(label="Regional prompts: each box reads only its phrase",
                                   value=True, elem_id=f"{TAB}-regional",
                                   info="Keeps two objects' colours and shapes apart (a red "
                                        "circle stays a circle beside a blue square); the "
                                        "boxes are fitted a little less tightly.")
            # On from the start as well: colours held in their boxes (model card, "regional
            # + colour hints" rows) for one VAE encoding per colour
            hints = gr.Checkbox(label="Colour hints: paint each box's colour into the noise",
                                value=True, elem_id=f"{TAB}-hints",
                                info="Adds the colour a phrase names (red, yellow, ...) "
                                     "faintly to the starting noise inside its box.")
        with gr.Column():
            with gr.Row():
                result = gr.Image(label="Result (PNG)", format="png", type="filepath",
                                  interactive=False, height=DISPLAY_HEIGHT,
                                  elem_id=f"{TAB}-result")
                overlay = gr.AnnotatedImage(label="Boxes over the result", format="png",
                                            height=DISPLAY_HEIGHT, elem_id=f"{TAB}-overlay")
            with gr.Row():
                send_to_inpaint = gr.Button("Send to Inpainting", size="sm")
                send_to_upscale = gr.Button("Send to Super-resolution", size="sm")
            preview, status = preview_and_status(TAB)
            settings = gr.JSON(label="Settings used", open=False)

    canvas.change(boxes_table, canvas, table, queue=False, api_visibility="private")
    example.click(lambda: canvas_value(EXAMPLE_BOXES), None, canvas, queue=False,
                  api_visibility="private")
    clear.click(lambda: canvas_value(), None, canvas, queue=False, api_visibility="private")

    controls.model.change(lambda m: gr.update(value=grounding_default(pg, m)), controls.model,
                          grounding, queue=False, api_visibility="private")

    def generate(annotation, prompt, negative, model, scheduler, steps, guidance, seed, share,
                 place, regional, hinted, request: gr.Request, progress=gr.Progress()):
        phrases, boxes = phrases_and_boxes(annotation)
        if not boxes:  # the core's message, plus the tab's own way out
            raise gr.Error("no boxes given: drag on the canvas to draw a box and type its "
                           "phrase, or press Example layout", print_exception=False)

        def call(control):
            return pg.layout_to_image(prompt, phrases, boxes, negative_prompt=negative,
                                      model=model, scheduler=scheduler, steps=steps,
                                      guidance=guidance, seed=seed, control=control,
                                      place_objects=place, regional_prompts=regional,
                                      colour_hints=hinted, grounding=share)

        def on_done(image):
            return png_ready(image), boxes_over(image, phrases, boxes), settings_json(image)

        yield from stream_to_ui(call, steps=steps, runs=runs, request=request, tab=TAB,
                                progress=progress, n_results=3, on_done=on_done)

    wire_run(buttons, generate,
             [canvas, prompt, negative, *controls.inputs, grounding, place, regional, hints],
             [result, overlay, settings], preview, status, controls.seed_used, runs=runs,
             tab=TAB, concurrency_id="sampling", concurrency_limit=concurrency_limit)
    fields = {"prompt": prompt, "negative_prompt": negative, **controls.fields,
              "boxes": canvas, "grounding": grounding, "place_objects": place, "regional_prompts": regional,
              "colour_hints": hints}
    return LayoutTab(result, send_to_inpaint, send_to_upscale, fields)

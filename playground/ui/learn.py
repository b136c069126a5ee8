"""The Learn tab: see inside the sampler. The forward noising explorer, a denoising
filmstrip that fills in while sampling (with a slider to scrub through the steps),
cross-attention maps per prompt token, the code that makes the picture again, and
short explanations with the equations. Every view calls a `Playground` method."""
from __future__ import annotations

import tempfile
import threading
import uuid
from pathlib import Path

import gradio as gr

from .. import Cancelled, Playground
from ..teach import explain, forward
from .common import (DISPLAY_HEIGHT, call_core, run_buttons, sampling_controls, session_of,
                     stage_message, user_error)
from .examples import example_picture_file
from .runs import ActiveRuns, stream_run

TASK = "text_to_image"
TAB = "learn"


def build(pg: Playground, runs: ActiveRuns, *, concurrency_limit: int | None) -> None:
    with gr.Accordion("How diffusion works (the equations)", open=False):
        gr.Markdown(explain.all_cells(), latex_delimiters=explain.LATEX_DELIMITERS)
    forward_explorer(pg)
    sampler_views(pg, runs, concurrency_limit=concurrency_limit)


# ---------------------------------------------------------------- forward explorer

def forward_explorer(pg: Playground) -> None:
    gr.Markdown("## Forward noising: what training does to a picture")
    models = pg.models(TASK)
    model = models[0] if models else None

    def show(picture, model, scheduler, t, seed):
        result = call_core(pg.forward_noise, picture, t, scheduler=scheduler or None,
                           model=model, seed=seed if seed is not None else 0)
        schedule = call_core(forward.noise_schedule, pg.registry, model=model,
                             scheduler=scheduler or None)
        text = (f"$t = {result.t}$, $\\bar\\alpha_t = {result.alpha_bar:.4f}$, "
                f"$\\mathrm{{SNR}} = {result.snr:.4g}$, $\\sigma_t = {result.sigma:.4g}$")
        return (result.noisy, result.noise, text,
                forward.schedule_plot(schedule, current_t=result.t))

    # the page opens with the example picture already noised, so there is something to read
    try:
        first = show(example_picture_file(), model, None, 300, 0)
    except gr.Error:  # e.g. a hub model whose schedule cannot be read offline: start empty
        first = (None,) * 4
    with gr.Row():
        with gr.Column():
            image = gr.Image(value=example_picture_file(), type="pil", format="png",
                             label="Any picture", height=200, elem_id="learn-fwd-image")
            with gr.Row():
                model_box = gr.Dropdown(models, value=model, label="Model (its noise schedule)")
                scheduler = gr.Dropdown(call_core(pg.schedulers, model, TASK) if model else [],
                                        value=None, label="Scheduler (default: the model's)")
            t = gr.Slider(0, 999, value=300, step=1, label="Timestep t", elem_id="learn-fwd-t")
            seed = gr.Number(0, precision=0, label="Noise seed")
        with gr.Column():
            with gr.Row():
                noisy = gr.Image(first[0], label="x_t", format="png", height=200,
                                 interactive=False, elem_id="learn-fwd-noisy")
                noise = gr.Image(first[1], label="noise added", format="png", height=200,
                                 interactive=False)
            numbers = gr.Markdown(first[2], elem_id="learn-fwd-snr",
                                  latex_delimiters=explain.LATEX_DELIMITERS)
            plot = gr.Image(first[3], label="Noise schedule", format="png", interactive=False)

    inputs = [image, model_box, scheduler, t, seed]
    outputs = [noisy, noise, numbers, plot]
    for trigger in (t.release, image.change, scheduler.change, seed.change):
        trigger(show, inputs, outputs, api_visibility="private", trigger_mode="always_last")
    model_box.change(lambda m: gr.update(choices=call_core(pg.schedulers, m, TASK), value=None),
                     model_box, scheduler, queue=False, api_visibility="private")


# ---------------------------------------------------------------- filmstrip and attention

def sampler_views(pg: Playground, runs: ActiveRuns, *, concurrency_limit) -> None:
    gr.Markdown("## Inside a text-to-image run\nThe filmstrip shows, at chosen steps, the "
                "current latent $x_t$ decoded and the model's prediction of the clean "
                "picture $\\hat x_0$; it fills in while sampling.",
                latex_delimiters=explain.LATEX_DELIMITERS)
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", value="a large red circle", elem_id="learn-prompt")
            negative = gr.Textbox(label="Negative prompt")
            show_steps = gr.Textbox(label="Steps to show (e.g. 1, 5, 10; empty = six spread out)",
                                    elem_id="learn-show-steps")
            controls = sampling_controls(pg, TASK, TAB)
            buttons = run_buttons(TAB, "Run with filmstrip")
            maps_button = gr.Button("Attention maps", elem_id="learn-maps")
            place = gr.Checkbox(label="Place objects where the prompt says (see how the "
                                "steered start moves the words' attention)", value=False,
                                elem_id="learn-place")
            hints = gr.Checkbox(label="Colour hints: paint each placed object's colour into "
                                "its cell (see it in the first frames)", value=False,
                                elem_id="learn-hints")
            regional = gr.Checkbox(label="Regional prompts: each placed cell reads only its "
                                   "object's words (filmstrip only: the maps need one "
                                   "attention per word)", value=False,
                                   elem_id="learn-regional")
            compose_box = gr.Checkbox(label="Compose object by object: one inpainting pass "
                                      "per placed object, its frames numbered on across the "
                                      "passes (filmstrip only)", value=False,
                                      elem_id="learn-compose")
        with gr.Column():
            strip = gr.Gallery(label="Filmstrip: x_t and predicted x0 per step", columns=4,
                               height=DISPLAY_HEIGHT, object_fit="contain", format="png",
                               interactive=False, elem_id="learn-strip")
            scrub = gr.Slider(1, 2, value=1, step=1, label="Scrub: frame", interactive=True,
                              elem_id="learn-scrub")
            with gr.Row():
                frame_xt = gr.Image(label="x_t", format="png", height=160, interactive=False,
                                    elem_id="learn-frame-xt")
                frame_x0 = gr.Image(label="predicted x0", format="png", height=160,
                                    interactive=False)
            status = gr.HTML(elem_id="learn-status")
            maps = gr.Gallery(label="Where the words go (one overlay per token)", columns=4,
                              height=DISPLAY_HEIGHT, format="png", interactive=False,
                              elem_id="learn-maps-gallery")
            with gr.Accordion("Show code: plain diffusers that makes this picture again",
                              open=False):
                code = gr.Code(language="python", elem_id="learn-code")
    frames = gr.State([])
    folder = Path(tempfile.mkdtemp(prefix="playground-learn-"))

    def run_trace(prompt, negative, model, scheduler, steps, guidance, seed, show, place,
                  hinted, regions, composed, request: gr.Request):
        collected, lock = [], threading.Lock()

        def on_frame(frame):
            with lock:
                collected.append(save_frame(folder, frame))

        def call(control):
            return pg.denoise_trace(prompt, show_steps=parse_steps(show), on_frame=on_frame,
                                    negative_prompt=negative, model=model,
                                    scheduler=scheduler or None, steps=steps,
                                    guidance=guidance, seed=seed, control=control,
                                    place_objects=place, colour_hints=hinted,
                                    regional_prompts=regions, compose_objects=composed)
        shown = -1
        try:
            for update in stream_run(call, steps=int(steps or 1), runs=runs,
                                     session=session_of(request), tab=TAB):
                with lock:
                    now = list(collected)
                if update.done:
                    image, _ = update.result
                    yield (strip_items(now), now, gr.update(maximum=max(len(now), 2),
                           value=len(now)), *frame_pictures(now, len(now)),
                           f"Done in {update.seconds:.1f} s", call_core(pg.show_code, image))
                    return
                if update.stage:
                    yield (gr.skip(),) * 5 + (stage_message(update), gr.skip())
                    continue
                if len(now) != shown:
                    shown = len(now)
                    yield (strip_items(now), now, gr.skip(), gr.skip(), gr.skip(),
                           f"Step {update.step}/{update.total}", gr.skip())
        except Cancelled:
            yield (gr.skip(),) * 5 + ("Stopped.", gr.skip())
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            raise user_error(error) from error

    event = buttons.generate.click(
        run_trace, [prompt, negative, *controls.inputs, show_steps, place, hints, regional,
                    compose_box],
        [strip, frames, scrub, frame_xt, frame_x0, status, code],
        concurrency_id="sampling", concurrency_limit=concurrency_limit,
        api_visibility="private", show_progress_on=status)
    def stop(request: gr.Request):
        runs.stop(session_of(request), TAB)
        return "Stopped."

    buttons.stop.click(stop, None, status, cancels=[event], queue=False,
                       api_visibility="private")
    scrub.change(frame_pictures, [frames, scrub], [frame_xt, frame_x0], queue=False,
                 api_visibility="private")

    def run_maps(prompt, negative, model, scheduler, steps, guidance, seed, show, place, hinted,
                 regions, composed):
        result = call_core(pg.attention_maps, prompt, show_steps=parse_steps(show),
                           negative_prompt=negative, model=model, scheduler=scheduler or None,
                           steps=steps, guidance=guidance, seed=seed, place_objects=place,
                           colour_hints=hinted, regional_prompts=regions,
                           compose_objects=composed)
        from ..teach.attention import peak_ratio
        items = [(result.image, "picture")] + [
            (picture, f"{token} (peak {peak_ratio(weights):.2f}x mean)")
            for token, picture, weights in zip(result.tokens, result.overlays, result.maps)]
        return items, call_core(pg.show_code, result.image)

    maps_button.click(run_maps, [prompt, negative, *controls.inputs, show_steps, place, hints,
                                 regional, compose_box],
                      [maps, code],
                      concurrency_id="sampling", concurrency_limit=concurrency_limit,
                      api_visibility="private")


def parse_steps(text) -> list[int] | None:
    """'1, 5, 10' -> [1, 5, 10]; empty -> None (the default choice)."""
    if text is None or not str(text).strip():
        return None
    values = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise gr.Error(f"Steps to show must be whole numbers separated by commas, got "
                           f"{part!r}", print_exception=False) from None
    return values or None


def save_frame(folder: Path, frame) -> tuple[str, str, str]:
    """(caption, x_t file, x0 file): "step 27" or, composed, "step 27, object 2 of 2"."""
    base = folder / f"{uuid.uuid4().hex}-{frame.step}"
    xt, x0 = f"{base}-xt.png", f"{base}-x0.png"
    frame.x_t.save(xt)
    frame.x0.save(x0)
    return ", ".join(filter(None, [f"step {frame.step}", frame.part])), xt, x0


def strip_items(frames: list) -> list[tuple[str, str]]:
    items = []
    for caption, xt, x0 in frames:
        items += [(xt, f"{caption}: x_t"), (x0, f"{caption}: predicted x0")]
    return items


def frame_pictures(frames: list, index) -> tuple:
    if not frames:
        return None, None
    i = min(max(int(index or 1), 1), len(frames)) - 1
    return frames[i][1], frames[i][2]

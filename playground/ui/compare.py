"""The Compare tab: X/Y grids over scheduler, steps, guidance and seed, a guidance
sweep, the quality-vs-cost measurement on the starter models, and a notebook of this
browser session's runs. Every button calls a `Playground` method.

The session's runs for the notebook: the results the task tabs put in the session
history (`runs.history`, a `share.history.Histories`, when the app keeps one) plus the
grids made here (kept per browser session in a `gr.State`)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import Cancelled, Playground, RunControl
from ..share.pngmeta import save_png
from ..teach import grid as grid_mod
from ..teach import quality as quality_mod
from .common import call_core, session_of
from .runs import ActiveRuns

TAB = "compare"
TASK = "text_to_image"
MAX_GRIDS_KEPT = 20  # per session, for the notebook
_FILES = Path(tempfile.mkdtemp(prefix="playground-compare-"))
atexit.register(shutil.rmtree, _FILES, ignore_errors=True)


@dataclass
class CompareTab:
    grid_picture: gr.Image
    table: gr.Dataframe
    notebook: gr.File
    grids: gr.State


def build(pg: Playground, runs: ActiveRuns, *, concurrency_limit: int | None) -> CompareTab:
    models = pg.models(TASK)
    model = models[0] if models else None
    defaults = call_core(pg.defaults, model, TASK) if model else {}
    schedulers = call_core(pg.schedulers, model, TASK) if model else []
    gr.Markdown("Every cell starts from the **same noise** (the seed), so only the varied "
                "setting changes the picture. Under each cell: seconds per picture, and the "
                "mean pixel difference (0-255) to the most converged picture: the cell with "
                "most steps on its line, or the same settings at *reference steps*.")
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox("a red circle in the centre", label="Prompt",
                                elem_id=f"{TAB}-prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id=f"{TAB}-negative")
            model_box = gr.Dropdown(models, value=model, label="Model", elem_id=f"{TAB}-model")
            with gr.Row():
                x_axis = gr.Dropdown(list(grid_mod.AXES), value="steps", label="X axis (across)",
                                     elem_id=f"{TAB}-x-axis")
                x_values = gr.Textbox("2, 5, 10, 20", label="X values (comma-separated)",
                                      elem_id=f"{TAB}-x-values")
            with gr.Row():
                y_axis = gr.Dropdown(["none", *grid_mod.AXES], value="scheduler",
                                     label="Y axis (down)", elem_id=f"{TAB}-y-axis")
                y_values = gr.Textbox(", ".join(s for s in ("DDIM", "Euler a", "DPM++ 2M")
                                                if s in schedulers) or "",
                                      label="Y values (comma-separated)",
                                      elem_id=f"{TAB}-y-values")
            gr.Markdown("Settings not on an axis:")
            with gr.Row():
                scheduler = gr.Dropdown(schedulers, value=defaults.get("scheduler"),
                                        label="Scheduler", elem_id=f"{TAB}-scheduler")
                seed = gr.Number(0, precision=0, label="Seed", elem_id=f"{TAB}-seed")
            with gr.Row():
                steps = gr.Slider(1, 150, value=defaults.get("steps", 20), step=1, label="Steps")
                guidance = gr.Slider(0, 30, value=defaults.get("guidance", 7.5), step=0.5,
                                     label="Guidance")
            reference_steps = gr.Slider(0, 150, value=grid_mod.REFERENCE_STEPS, step=1,
                                        label="Reference steps (when steps is not an axis; "
                                              "0 = no distances)")
            with gr.Row():
                make_grid = gr.Button("Make grid", variant="primary", scale=3,
                                      elem_id=f"{TAB}-make-grid")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id=f"{TAB}-stop")
            with gr.Row():
                sweep_values = gr.Textbox(", ".join(map(str, grid_mod.GUIDANCE_SWEEP)),
                                          label="Guidance sweep values", scale=3)
                sweep = gr.Button("Guidance sweep", scale=1, elem_id=f"{TAB}-sweep")
        with gr.Column():
            grid_picture = gr.Image(label="Grid (PNG, settings inside)", format="png",
                                    show_label=False,
                                    type="filepath", interactive=False,
                                    elem_id=f"{TAB}-grid")
            curve = gr.Image(label="Distance to the most converged picture", format="png",
                             show_label=False,
                             type="pil", interactive=False, elem_id=f"{TAB}-curve")
            table = gr.Dataframe(label="Seconds and distance per cell", interactive=False,
                                 headers=["x value", "y value", "seconds", "distance",
                                          "reference"], elem_id=f"{TAB}-table")
    grids = gr.State([])
    with gr.Accordion("Quality vs cost (starter models)", open=False):
        gr.Markdown("Judge accuracy and the Frechet distance on judge features, against "
                    "steps and seconds per picture, for several schedulers, on held-out "
                    "prompts of the starter world (seed i for prompt i). A few prompts keep it "
                    "quick; the figures are noisy with few prompts. The full run: "
                    "`python -m playground.teach.quality`.")
        with gr.Row():
            q_schedulers = gr.Textbox(", ".join(quality_mod.DEFAULT_SCHEDULERS),
                                      label="Schedulers")
            q_steps = gr.Textbox("2, 4, 8, 16", label="Steps")
            q_prompts = gr.Slider(2, 24, value=4, step=1, label="Prompts")
        measure = gr.Button("Measure", elem_id=f"{TAB}-measure")
        q_plot = gr.Image(label="Quality vs cost", format="png", type="pil", interactive=False,
                          elem_id=f"{TAB}-quality-plot")
        q_text = gr.Markdown(elem_id=f"{TAB}-quality-text")
        q_example = gr.Image(label="A lower distance, a worse picture", format="png",
                             type="pil", interactive=False)
        q_table = gr.Dataframe(label="Figures", interactive=False,
                               headers=["scheduler", "steps", "seconds", "accuracy",
                                        "attribute_accuracy", "frechet"])
    with gr.Accordion("Export notebook", open=False):
        gr.Markdown("This session's results (from every tab) and grids as a Jupyter "
                    "notebook: markdown, code that makes each picture again, and the "
                    "pictures embedded. It runs top to bottom in a fresh kernel with this "
                    "package installed.")
        export = gr.Button("Export notebook", elem_id=f"{TAB}-export")
        notebook = gr.File(label="Notebook (.ipynb)", interactive=False,
                           elem_id=f"{TAB}-notebook")

    def grid_answer(result, kept):
        path = _FILES / f"grid-{id(result)}.png"
        save_png(result.picture, path)
        kept = (list(kept or []) + [{"settings": result.settings, "image": str(path)}])
        return str(path), result.curve, result.frame(), kept[-MAX_GRIDS_KEPT:]

    def on_make_grid(prompt, negative, model, x_axis, x_values, y_axis, y_values, scheduler,
                     steps, guidance, seed, reference_steps, kept, request: gr.Request,
                     progress=gr.Progress()):
        result = stoppable(runs, request, progress, pg.compare_grid, prompt, x_axis, x_values,
                           None if y_axis == "none" else y_axis, y_values,
                           negative_prompt=negative, model=model, scheduler=scheduler,
                           steps=steps, guidance=guidance, seed=seed,
                           reference_steps=reference_steps)
        return grid_answer(result, kept)

    def on_sweep(prompt, negative, model, scheduler, steps, guidance, seed, values,
                 reference_steps, kept, request: gr.Request, progress=gr.Progress()):
        del guidance  # the sweep varies it
        result = stoppable(runs, request, progress, pg.guidance_sweep, prompt, values,
                           negative_prompt=negative, model=model, scheduler=scheduler,
                           steps=steps, seed=seed, reference_steps=reference_steps)
        return grid_answer(result, kept)

    def on_measure(schedulers_text, steps_text, n_prompts, request: gr.Request,
                   progress=gr.Progress()):
        result = stoppable(runs, request, progress, pg.quality_vs_cost,
                           schedulers=schedulers_text, steps=steps_text,
                           n_prompts=int(n_prompts))
        return (result.plot,
                quality_mod.counterexample_text(result.counterexample, result.prompts),
                result.counterexample_picture, result.frame())

    def on_export(kept, request: gr.Request):
        session_runs = history_runs(runs, request) + list(kept or [])
        if not session_runs:
            raise gr.Error("Nothing to export yet: make a picture or a grid first.",
                           print_exception=False)
        path = _FILES / f"session-{abs(hash(session_of(request)))}.ipynb"
        call_core(pg.export_notebook, session_runs, path)
        return str(path)

    sampling = {"concurrency_id": "sampling", "concurrency_limit": concurrency_limit,
                "api_visibility": "private"}
    outputs = [grid_picture, curve, table, grids]
    make_grid.click(on_make_grid, [prompt, negative, model_box, x_axis, x_values, y_axis,
                                   y_values, scheduler, steps, guidance, seed, reference_steps,
                                   grids], outputs, **sampling)
    sweep.click(on_sweep, [prompt, negative, model_box, scheduler, steps, guidance, seed,
                           sweep_values, reference_steps, grids], outputs, **sampling)
    measure.click(on_measure, [q_schedulers, q_steps, q_prompts],
                  [q_plot, q_text, q_example, q_table], **sampling)
    export.click(on_export, grids, notebook, **sampling)

    def on_stop(request: gr.Request):
        runs.stop(session_of(request), TAB)

    stop.click(on_stop, None, None, queue=False, api_visibility="private")
    model_box.change(lambda m: _scheduler_choices(pg, m), model_box, scheduler, queue=False,
                     api_visibility="private")
    return CompareTab(grid_picture, table, notebook, grids)


def history_runs(runs: ActiveRuns, request: gr.Request | None) -> list[dict]:
    """The session's results from the task tabs, oldest first, as notebook runs."""
    histories = getattr(runs, "history", None)
    if histories is None:
        return []
    items = reversed(histories.of(session_of(request)).items())
    return [{"settings": item.settings, "image": str(item.path)} for item in items
            if item.path.exists()]


def stoppable(runs: ActiveRuns, request: gr.Request | None, progress: gr.Progress, fn,
              *args, **kwargs):
    """`fn(*args, control=..., **kwargs)` with progress shown and this session's Stop
    button able to end it (at the next sampling step)."""
    control = RunControl(on_progress=lambda done, total: progress((done, total), unit="steps"))
    session = session_of(request)
    runs.start(session, TAB, control)
    try:
        return call_core(_stopped_as_error, fn, *args, control=control, **kwargs)
    finally:
        runs.finish(session, TAB, control)


def _stopped_as_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Cancelled as error:
        raise gr.Error("Stopped.", print_exception=False) from error


def _scheduler_choices(pg: Playground, model: str):
    d = call_core(pg.defaults, model, TASK)
    return gr.update(choices=call_core(pg.schedulers, model, TASK), value=d.get("scheduler"))

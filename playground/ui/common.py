"""What every tab shares: the sampling controls, the Generate/Stop pair, turning a
`Playground` call into a live Gradio stream, and core errors into `gr.Error`.

Nothing here decides anything about a picture: values go to `Playground` unchanged,
and whatever it refuses comes back to the user as its own message.
"""
from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr
from PIL import Image

from .. import Cancelled, Playground, PlaygroundError, settings_of
from .runs import ActiveRuns, stream_run

log = logging.getLogger("playground.ui")

DISPLAY_HEIGHT = 320  # pixels on screen for pictures; the starter's are 64 px, shown enlarged


def gallery_css(elem_id: str, height: int) -> str:
    """A gallery lays out a lone picture as wide as the gallery and square, so in a gallery
    less tall than wide it was cut off at the bottom: every picture fits the height."""
    side = height - 40  # the label and the padding
    return (f"#{elem_id} .thumbnail-item {{ max-width: {side}px; max-height: {side}px; "
            "justify-self: center; }\n")


# ---------------------------------------------------------------- errors

def user_error(error: BaseException) -> gr.Error:
    """The `gr.Error` a user sees for an exception from the core."""
    if isinstance(error, PlaygroundError):
        return gr.Error(str(error), print_exception=False)
    log.exception("unexpected error in a request", exc_info=error)
    return gr.Error(f"Something went wrong inside the playground ({type(error).__name__}: "
                    f"{error}). The app is still running; please try again or change the "
                    f"settings.", print_exception=False)


def call_core(fn: Callable, *args, **kwargs):
    """`fn(*args, **kwargs)` with core errors raised as `gr.Error`."""
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes a message
        raise user_error(error) from error


# ---------------------------------------------------------------- pictures

def png_ready(image: Image.Image) -> Image.Image:
    """A copy whose `info` holds the settings as JSON text and the AUTOMATIC1111
    `parameters` line, so that Gradio's PNG writer puts them in PNG text chunks (it
    keeps only text values)."""
    from ..share.pngmeta import with_text
    return with_text(image)


def settings_json(image: Image.Image) -> dict:
    """The settings of a result, made JSON-safe (what the settings panel shows)."""
    return json.loads(json.dumps(settings_of(image), default=str))


def done_message(settings: dict) -> str:
    """The status line after a run: time, seed, scheduler, and any warnings."""
    line = " · ".join([f"Done in {settings.get('seconds', 0):.2f} s",
                       f"seed {settings.get('seed')}",
                       f"{settings.get('scheduler')}, {settings.get('steps')} steps",
                       f"guidance {settings.get('guidance')}"])
    warnings = "".join(f"<li>{html.escape(str(w))}</li>" for w in settings.get("warnings") or [])
    return f"<div>{html.escape(line)}</div>" + (f"<ul>{warnings}</ul>" if warnings else "")


def step_message(step: int, total: int, seconds: float, label: str = "Step") -> str:
    """The status line while sampling: a progress bar and the step count."""
    return (f'<progress value="{step}" max="{total}" style="width: 100%"></progress>'
            f"<div>{label} {step}/{total} · {seconds:.1f} s</div>")


def stage_message(update) -> str:
    """The status line before sampling starts, e.g. while objects are being placed."""
    return step_message(update.step, update.total, update.seconds, update.stage.capitalize())


# ---------------------------------------------------------------- controls

@dataclass
class SamplingControls:
    model: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    guidance: gr.Slider
    seed: gr.Number
    random_seed: gr.Button
    seed_used: gr.Number
    reuse_seed: gr.Button

    @property
    def inputs(self) -> list:
        """In the order `Playground` methods take them: model, scheduler, steps, guidance, seed."""
        return [self.model, self.scheduler, self.steps, self.guidance, self.seed]

    @property
    def fields(self) -> dict:
        """Settings key -> widget (for restoring settings and making links)."""
        return dict(zip(("model", "scheduler", "steps", "guidance", "seed"), self.inputs))


def model_defaults(pg: Playground, model: str, task: str) -> dict:
    return call_core(pg.defaults, model, task)


def sampling_controls(pg: Playground, task: str, tab: str) -> SamplingControls:
    """Model, scheduler, steps, guidance and seed, with defaults of the first model."""
    models = pg.models(task)
    model = models[0] if models else None
    d = model_defaults(pg, model, task) if model else {}
    schedulers = call_core(pg.schedulers, model, task) if model else []
    with gr.Row():
        model_box = gr.Dropdown(models, value=model, label="Model", elem_id=f"{tab}-model")
        scheduler = gr.Dropdown(schedulers, value=d.get("scheduler"), label="Scheduler",
                                elem_id=f"{tab}-scheduler")
    with gr.Row():
        steps = gr.Slider(*d.get("steps_range", (1, 150)), value=d.get("steps", 20), step=1,
                          label="Steps", elem_id=f"{tab}-steps")
        guidance = gr.Slider(*d.get("guidance_range", (0, 30)), value=d.get("guidance", 7.5),
                             step=0.5, label="Guidance", elem_id=f"{tab}-guidance")
    with gr.Row(equal_height=True):
        seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", elem_id=f"{tab}-seed",
                         scale=3)
        random_seed = gr.Button("Random", size="sm", scale=1, min_width=60)
        seed_used = gr.Number(label="Seed used", precision=0, interactive=False,
                              elem_id=f"{tab}-seed-used", scale=3)
        reuse_seed = gr.Button("Reuse", size="sm", scale=1, min_width=60)
    controls = SamplingControls(model_box, scheduler, steps, guidance, seed, random_seed,
                                seed_used, reuse_seed)
    random_seed.click(lambda: -1, None, seed, queue=False, api_visibility="private")
    reuse_seed.click(lambda used: -1 if used is None else used, seed_used, seed, queue=False,
                     api_visibility="private")
    model_box.change(lambda m: model_updates(pg, m, task), model_box,
                     [scheduler, steps, guidance], queue=False, api_visibility="private")
    return controls


def model_updates(pg: Playground, model: str, task: str) -> tuple:
    """Scheduler choices and slider defaults when the model changes."""
    d = model_defaults(pg, model, task)
    schedulers = call_core(pg.schedulers, model, task)
    return (gr.update(choices=schedulers, value=d.get("scheduler")),
            gr.update(value=d.get("steps"), minimum=d.get("steps_range", (1, 150))[0],
                      maximum=d.get("steps_range", (1, 150))[1]),
            gr.update(value=d.get("guidance")))


@dataclass
class RunButtons:
    generate: gr.Button
    stop: gr.Button


def run_buttons(tab: str, label: str = "Generate") -> RunButtons:
    with gr.Row():
        generate = gr.Button(label, variant="primary", elem_id=f"{tab}-generate")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{tab}-stop")
    return RunButtons(generate, stop)


def preview_and_status(tab: str) -> tuple[gr.Image, gr.HTML]:
    preview = gr.Image(label="Preview while sampling", format="png", interactive=False,
                       height=160, elem_id=f"{tab}-preview")
    status = gr.HTML("", elem_id=f"{tab}-status")
    return preview, status


# ---------------------------------------------------------------- one run, streamed

def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def stream_to_ui(call: Callable, *, steps: Any, runs: ActiveRuns, request: gr.Request | None,
                 tab: str, progress: gr.Progress, n_results: int,
                 on_done: Callable[[Any], tuple]) -> Iterator[tuple]:
    """Yield (n_results result updates..., preview, status, seed_used) while `call`
    samples: the step count and previews live, then the results, time and seed."""
    skip = (gr.skip(),) * n_results
    total_steps = int(steps) if isinstance(steps, (int, float)) and steps >= 1 else 1
    try:
        for update in stream_run(call, steps=total_steps, runs=runs,
                                 session=session_of(request), tab=tab):
            if update.done:
                first = update.result[0] if isinstance(update.result, list) else update.result
                settings = settings_of(first)
                keep_in_history(runs, request, update.result)
                yield (*on_done(update.result), gr.skip(), done_message(settings),
                       settings.get("seed"))
                return
            if update.stage:
                progress((update.step, update.total), desc=update.stage.capitalize(),
                         unit="passes")
                yield (*skip, gr.skip(), stage_message(update), gr.skip())
                continue
            progress((update.step, update.total), desc="Sampling", unit="steps")
            preview = update.preview if update.preview is not None else gr.skip()
            yield (*skip, preview, step_message(update.step, update.total, update.seconds),
                   gr.skip())
    except Cancelled:
        yield (*skip, gr.skip(), "Stopped.", gr.skip())
    except gr.Error:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes a message
        raise user_error(error) from error


def keep_in_history(runs: ActiveRuns, request: gr.Request | None, result) -> None:
    """Add a finished run's pictures to the session's History (when the app keeps one:
    `build_app` puts a `share.history.Histories` on `runs.history`)."""
    histories = getattr(runs, "history", None)
    if histories is not None:
        histories.add(session_of(request), result)


def wire_run(buttons: RunButtons, fn: Callable, inputs: list, results: list, preview,
             status, seed_used, *, runs: ActiveRuns, tab: str, concurrency_id: str,
             concurrency_limit: int | None, progress_on=None):
    """Generate runs `fn` (a generator over `stream_to_ui`), its progress bar drawn over
    `progress_on` (default: the first result) so the preview stays visible; Stop
    cancels only this browser session's run of this tab."""
    event = buttons.generate.click(
        fn, inputs, [*results, preview, status, seed_used], show_progress="full",
        show_progress_on=progress_on or results[0], concurrency_id=concurrency_id,
        concurrency_limit=concurrency_limit, api_visibility="private")

    def stop(request: gr.Request):
        runs.stop(session_of(request), tab)
        return "Stopped."

    buttons.stop.click(stop, None, status, cancels=[event], queue=False,
                       api_visibility="private")
    return event

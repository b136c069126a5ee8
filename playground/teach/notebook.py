"""Export runs as a Jupyter notebook (.ipynb, built with nbformat).

The notebook has a markdown cell per run (what was asked, the settings, the time), a
code cell that makes the result again with the playground's Python API, and that
cell's output embedded (the picture as image/png), so it reads like a notebook that has
been run, and runs top to bottom in a fresh kernel with this package installed.
Pictures are made again pixel for pixel: every run records its seed, scheduler, steps
and guidance, and the first cell builds the same model registry on the same device and
dtype.

A run is any of:
- a result picture (its `info["settings"]` says how it was made),
- a compare grid (`GridResult`),
- a dict {"settings": {...}, "image": picture or PNG path (optional),
  "inputs": {"image": picture, "mask": picture} (inpaint / upscale; optional)},
- a bare settings dict: its picture is made now, to embed it.

Inpainting and super-resolution need their input pictures; they are embedded in the
code cell as PNG text (base64) when the run carries them, else the cell shows the
result and its settings only (the inputs are not part of a settings record).
"""
from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

from PIL import Image

from ..errors import BadInput
from ..registry import STARTER_DIR
from ..run import settings_of

TASK_TITLES = {"text_to_image": "Text to image", "layout_to_image": "Layout to image",
               "inpaint": "Inpainting", "upscale": "Super-resolution",
               "compare_grid": "Compare grid"}
CALL_ARGS = {  # keyword arguments that make a run again, per task, in signature order
    "text_to_image": ("prompt", "negative_prompt", "model", "scheduler", "steps", "guidance",
                      "seed", "width", "height", "place_objects", "colour_hints",
                      "regional_prompts", "compose_objects"),
    "layout_to_image": ("prompt", "phrases", "boxes", "negative_prompt", "model", "scheduler",
                        "steps", "guidance", "seed", "place_objects", "regional_prompts",
                        "colour_hints", "grounding"),
    "inpaint": ("prompt", "negative_prompt", "model", "scheduler", "steps", "guidance",
                "strength", "seed", "focus_on_mask"),
    "upscale": ("prompt", "negative_prompt", "model", "scheduler", "steps", "guidance",
                "noise_level", "seed"),
    "compare_grid": ("prompt", "x_axis", "x_values", "y_axis", "y_values", "negative_prompt",
                     "model", "scheduler", "steps", "guidance", "seed", "width", "height",
                     "reference_steps"),
}
SHOWN_SETTINGS = ("model", "scheduler", "steps", "guidance", "seed", "width", "height",
                  "phrases", "boxes", "strength", "noise_level", "x_axis", "x_values",
                  "y_axis", "y_values", "seconds", "device", "dtype")
MAX_RUNS = 100


# ---------------------------------------------------------------- runs in, records out

def run_record(pg, run: Any) -> dict:
    """{"settings", "image" (PIL), "inputs"} of one run, making the picture if missing."""
    from .grid import GridResult

    if isinstance(run, GridResult):
        return {"settings": dict(run.settings), "image": run.picture, "inputs": {}}
    if isinstance(run, Image.Image):
        return {"settings": settings_of(run), "image": run, "inputs": {}}
    if not isinstance(run, dict):
        raise BadInput(f"a run must be a result picture, a compare grid or a settings dict, "
                       f"got {type(run).__name__}")
    settings = run.get("settings", run)
    if not isinstance(settings, dict) or settings.get("task") not in TASK_TITLES:
        raise BadInput(f"a run's settings must say its task (one of: "
                       f"{', '.join(TASK_TITLES)}), got {str(settings)[:80]!r}")
    image = run.get("image") if "settings" in run else None
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    inputs = run.get("inputs") or {} if "settings" in run else {}
    if image is None:
        image = remake(pg, settings, inputs)
    return {"settings": dict(settings), "image": image, "inputs": inputs}


def remake(pg, settings: dict, inputs: dict | None = None) -> Image.Image:
    """The picture of a run, made again from its settings."""
    task = settings["task"]
    kwargs = call_kwargs(settings)
    if task == "compare_grid":
        return pg.compare_grid(**kwargs).picture
    if task in ("inpaint", "upscale"):
        if not inputs or "image" not in inputs or (task == "inpaint" and "mask" not in inputs):
            raise BadInput(f"a {task} run can be made again only with its input pictures "
                           f"(inputs={{'image': ..., 'mask': ...}})")
        return getattr(pg, task)(*_input_args(task, inputs), **kwargs)
    return getattr(pg, task)(**kwargs)


def call_kwargs(settings: dict) -> dict:
    return {k: settings[k] for k in CALL_ARGS[settings["task"]] if k in settings}


def _input_args(task: str, inputs: dict) -> list:
    return [inputs["image"], inputs["mask"]] if task == "inpaint" else [inputs["image"]]


# ---------------------------------------------------------------- the notebook

def build_notebook(pg, runs: list):
    """A notebook of `runs` (see the module docstring), outputs embedded."""
    import nbformat.v4 as nbf

    if not isinstance(runs, (list, tuple)) or not runs:
        raise BadInput("there are no runs to export yet: make a picture first")
    if len(runs) > MAX_RUNS:
        raise BadInput(f"at most {MAX_RUNS} runs go in one notebook, got {len(runs)}")
    records = [run_record(pg, run) for run in runs]
    cells = [nbf.new_markdown_cell(_introduction(records))]
    count = 1
    cells.append(nbf.new_code_cell(setup_code(pg, records), execution_count=count))
    for number, record in enumerate(records, start=1):
        cells.append(nbf.new_markdown_cell(_run_markdown(number, record)
                                           + _plain_diffusers(pg, record["settings"])))
        code = run_code(number, record)
        if code is None:
            cells.append(nbf.new_markdown_cell(_not_runnable(record)))
            continue
        count += 1
        cells.append(nbf.new_code_cell(code, execution_count=count,
                                       outputs=[picture_output(record["image"], count)]))
    notebook = nbf.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    import nbformat
    nbformat.validate(notebook)
    return notebook


def write_notebook(pg, runs: list, path: str | os.PathLike) -> str:
    """Build the notebook of `runs` and write it to `path`; returns the path."""
    import nbformat

    notebook = build_notebook(pg, runs)
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        nbformat.write(notebook, f)
    return path


def picture_output(image: Image.Image, count: int):
    """The cell output Jupyter shows for a PIL picture: image/png display data."""
    import nbformat.v4 as nbf

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return nbf.new_output("execute_result", execution_count=count, data={
        "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "text/plain": f"<PIL.Image.Image image mode=RGB size={image.width}x{image.height}>"})


# ---------------------------------------------------------------- code

def setup_code(pg, records: list[dict]) -> str:
    """The first code cell: the same registry (models, device, dtype) the runs used."""
    first = records[0]["settings"]
    device = first.get("device") or _first_cell_setting(records, "device") or "cpu"
    dtype = first.get("dtype") or _first_cell_setting(records, "dtype")
    models = sorted({r["settings"].get("model", "starter") for r in records})
    others = [m for m in models if m != "starter"]
    lines = ["from playground import Playground", ""]
    if not others:
        lines.append(f"pg = Playground(device={device!r}, dtype={dtype!r})")
        return "\n".join(lines)
    lines[0] = "from playground import ModelEntry, Playground, Registry"
    lines.insert(1, "from playground.registry import Source, starter_entry")
    entries, folders = [], []
    for name in others:
        entry = pg.registry.entry(name)
        sources = ", ".join(f"{task!r}: Source({s.location!r}, revision={s.revision!r})"
                            for task, s in entry.sources.items())
        entries.append(f"    ModelEntry({name!r}, {{{sources}}}, options={entry.options!r}),")
        folders += [os.path.dirname(s.location) for s in entry.sources.values() if s.is_local]
    folders = sorted({f for f in folders if not f.startswith(STARTER_DIR)})
    lines += ["entries = [", "    starter_entry(),", *entries, "]",
              f"registry = Registry(entries, device={device!r}, dtype={dtype!r}, "
              f"allowed_dirs={folders!r})",
              "pg = Playground(registry)"]
    return "\n".join(lines)


def _first_cell_setting(records: list[dict], key: str):
    for record in records:
        for cell in record["settings"].get("cells") or []:
            if key in cell:
                return cell[key]
    return None


def run_code(number: int, record: dict) -> str | None:
    """Code that makes run `number` again and shows it; None when it cannot run."""
    settings, inputs = record["settings"], record["inputs"]
    task = settings["task"]
    args = ",\n    ".join(f"{k}={_literal(v)}" for k, v in call_kwargs(settings).items())
    if task == "compare_grid":
        return f"grid_{number} = pg.compare_grid(\n    {args})\ngrid_{number}.picture"
    if task in ("inpaint", "upscale"):
        names = ["image", "mask"] if task == "inpaint" else ["image"]
        if not all(isinstance(inputs.get(n), Image.Image) for n in names):
            return None
        lines = ["import base64, io", "from PIL import Image", ""]
        for n in names:
            lines.append(f"{n}_{number} = Image.open(io.BytesIO(base64.b64decode(\n"
                         f"    {_png_text(inputs[n])!r})))")
        pictures = ", ".join(f"{n}_{number}" for n in names)
        lines.append(f"result_{number} = pg.{task}(\n    {pictures},\n    {args})")
        lines.append(f"result_{number}")
        return "\n".join(lines)
    return f"image_{number} = pg.{task}(\n    {args})\nimage_{number}"


def _literal(value) -> str:
    """Python source for a JSON-like value (tuples become lists, as JSON has them)."""
    return repr(json.loads(json.dumps(value)))


def _png_text(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------- words

def _introduction(records: list[dict]) -> str:
    tasks = sorted({TASK_TITLES[r["settings"]["task"]] for r in records})
    return ("# Diffusion playground session\n\n"
            f"{len(records)} run(s): {', '.join(tasks)}. Each code cell makes its picture "
            "again with the playground's Python API: the same seed gives the same starting "
            "noise, and the same scheduler, steps and guidance give the same pixels on the "
            "same device and dtype. Run the cells top to bottom (the first builds the "
            "model registry).")


def _run_markdown(number: int, record: dict) -> str:
    settings = record["settings"]
    task = settings["task"]
    lines = [f"## Run {number}: {TASK_TITLES[task]}", ""]
    if settings.get("prompt"):
        lines += [f"Prompt: *{_escape(settings['prompt'])}*", ""]
    if settings.get("negative_prompt"):
        lines += [f"Negative prompt: *{_escape(settings['negative_prompt'])}*", ""]
    for key in SHOWN_SETTINGS:
        if settings.get(key) is not None:
            lines.append(f"- {key}: `{settings[key]}`")
    if task == "compare_grid":
        lines += ["", "Every cell starts from the same noise (the grid's seed, or each seed "
                  "on a seed axis); under each cell are its seconds per picture and its "
                  "distance to the most converged picture. Seconds differ between machines, "
                  "so the cells match and the timings under them may not."]
    for warning in settings.get("warnings") or []:
        lines.append(f"- note: {_escape(str(warning))}")
    return "\n".join(lines)


def _plain_diffusers(pg, settings: dict) -> str:
    """The run as a plain-diffusers script (`Playground.show_code`), folded away; empty
    where there is none (compare grids)."""
    if settings["task"] == "compare_grid" or not hasattr(pg, "show_code"):
        return ""
    try:
        script = pg.show_code(settings)
    except Exception:  # noqa: BLE001 - the notebook stands without this extra
        return ""
    return ("\n\n<details><summary>The same in plain diffusers</summary>\n\n"
            f"```python\n{script.rstrip()}\n```\n\n</details>")


def _not_runnable(record: dict) -> str:
    settings = record["settings"]
    buffer = io.BytesIO()
    record["image"].convert("RGB").save(buffer, format="PNG")
    picture = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"The input pictures of this {TASK_TITLES[settings['task']].lower()} run are not "
            "part of its record, so it has no code cell here; the result as it was made:\n\n"
            f"![result](data:image/png;base64,{picture})")


def _escape(text: str) -> str:
    return text.replace("*", r"\*").replace("_", r"\_")

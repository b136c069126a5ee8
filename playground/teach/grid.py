"""Compare grids: text-to-image over any two of scheduler, steps, guidance and seed.

Every cell is an ordinary `Playground.text_to_image` run. Cells share the starting
noise: the initial latents come from a CPU generator seeded with the grid's seed, so
all cells start from the same x_T (when seed is an axis, each seed value gives its own
x_T, shared along the other axis). A cell is therefore exactly the picture a plain run
with its settings gives.

Under each cell: the seconds the pipeline took and how far (mean absolute pixel
difference, 0..255) the cell is from its reference, the most converged picture with
the same other settings: with steps as an axis, the cell with most steps on its line;
otherwise the same settings run with `reference_steps` steps.

    grid = compare_grid(pg, "a red circle", "scheduler", ["DDIM", "Euler", "DPM++ 2M"],
                        "steps", [5, 10, 20], seed=1)
    grid.picture, grid.curve, grid.table()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .. import run as run_mod
from ..errors import BadInput
from ..run import RunControl, settings_of
from ..tasks import checks
from . import chart

AXES = ("scheduler", "steps", "guidance", "seed")
MAX_CELLS = 64
REFERENCE_STEPS = 50
GUIDANCE_SWEEP = (1.0, 3.0, 5.0, 7.5, 10.0, 15.0)


@dataclass
class GridCell:
    x: Any
    y: Any
    image: Image.Image          # the run's own picture, settings in info["settings"]
    seconds: float
    distance: float | None      # mean |pixel - reference pixel|, 0..255
    reference: str              # which picture the distance is measured to


@dataclass
class GridResult:
    x_axis: str
    x_values: list
    y_axis: str | None
    y_values: list              # [None] when the grid has one axis
    rows: list[list[GridCell]]  # rows[j][i]: y value j, x value i
    settings: dict              # everything needed to make the grid again
    picture: Image.Image | None = None
    curve: Image.Image | None = None
    references: dict = field(default_factory=dict, repr=False)

    @property
    def cells(self) -> list[GridCell]:
        return [cell for row in self.rows for cell in row]

    def cell(self, x, y=None) -> GridCell:
        return self.rows[self.y_values.index(y)][self.x_values.index(x)]

    def table(self) -> list[dict]:
        """One row per cell: the axis values, seconds and distance to the reference."""
        out = []
        for cell in self.cells:
            row = {self.x_axis: cell.x}
            if self.y_axis:
                row[self.y_axis] = cell.y
            row.update(seconds=round(cell.seconds, 3),
                       distance=None if cell.distance is None else round(cell.distance, 3),
                       reference=cell.reference)
            out.append(row)
        return out

    def frame(self):
        """The table as a pandas DataFrame."""
        import pandas as pd
        return pd.DataFrame(self.table())


# ---------------------------------------------------------------- checking the axes

def parse_values(axis: str, values) -> list:
    """Axis values from a list or a comma-separated string ("5, 10, 20")."""
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    if not isinstance(values, (list, tuple)) or not values:
        raise BadInput(f"values for the {axis} axis must be a non-empty list "
                       f"(or comma-separated text such as '5, 10, 20'), got {values!r}")
    return [_parse_value(axis, v) for v in values]


def _parse_value(axis: str, value):
    if axis == "scheduler":
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"scheduler axis values must be scheduler names, got {value!r}")
        return value.strip()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadInput(f"{axis} axis value {value!r} is not a number") from None
    if axis == "steps":
        return checks.steps(value)
    if axis == "guidance":
        return checks.guidance(value)
    seed = run_mod.check_seed(value)
    if seed == -1:
        raise BadInput("seed axis values must be fixed seeds 0..2**32-1 (not -1), so the "
                       "grid can be made again")
    return seed


def check_axes(pg, model: str, x_axis: str, x_values, y_axis, y_values) -> tuple:
    if x_axis not in AXES:
        raise BadInput(f"unknown x axis {x_axis!r}; choose one of: {', '.join(AXES)}")
    if y_axis in ("", "none", "None"):
        y_axis = None
    if y_axis is not None and y_axis not in AXES:
        raise BadInput(f"unknown y axis {y_axis!r}; choose one of: {', '.join(AXES)} or none")
    if y_axis == x_axis:
        raise BadInput(f"the two axes must differ; both are {x_axis!r}")
    x_values = parse_values(x_axis, x_values)
    y_values = parse_values(y_axis, y_values) if y_axis else [None]
    for axis, values in ((x_axis, x_values), (y_axis, y_values)):
        if len(set(values)) != len(values):
            raise BadInput(f"the {axis} axis repeats a value: {values}")
        if axis == "scheduler":
            allowed = pg.schedulers(model, "text_to_image")
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise BadInput(f"unknown scheduler(s) {unknown} for model {model!r}; choose "
                               f"from: {', '.join(allowed)}")
    if len(x_values) * len(y_values) > MAX_CELLS:
        raise BadInput(f"a grid has at most {MAX_CELLS} cells; "
                       f"{len(x_values)} x {len(y_values)} asked")
    return x_axis, x_values, y_axis, y_values


# ---------------------------------------------------------------- making the grid

def compare_grid(pg, prompt: str, x_axis: str, x_values, y_axis: str | None = None,
                 y_values=None, *, negative_prompt: str = "", model: str = "starter",
                 scheduler: str | None = None, steps: int = 20, guidance: float | None = None,
                 seed: int = 0, width: int | None = None, height: int | None = None,
                 reference_steps: int | None = REFERENCE_STEPS,
                 control: RunControl | None = None) -> GridResult:
    """A grid of text-to-image runs: `x_axis` across, `y_axis` down (optional).

    Args:
        x_axis, y_axis: two different names from AXES; y_axis None for one row.
        x_values, y_values: the values of each axis (lists, or comma-separated text).
        scheduler, steps, guidance, seed: the settings of the axes not varied. seed -1
            picks one random seed for the whole grid (recorded in `settings`).
        reference_steps: when steps is not an axis, each cell's distance is measured to
            the same settings run with this many steps (one extra run per cell); 0 or
            None skips distances then.
        control: progress is reported over the whole grid (steps of all runs); cancel
            stops it.
    """
    x_axis, x_values, y_axis, y_values = check_axes(pg, model, x_axis, x_values, y_axis, y_values)
    seed = run_mod.resolve_seed(run_mod.check_seed(seed))
    fixed = {"prompt": prompt, "negative_prompt": negative_prompt, "model": model,
             "scheduler": scheduler, "steps": checks.steps(steps),
             "guidance": checks.guidance(pg.defaults(model, "text_to_image")["guidance"]
                                         if guidance is None else guidance),
             "seed": seed, "width": width,
             "height": height}
    plan = [[_cell_settings(fixed, x_axis, x, y_axis, y) for x in x_values] for y in y_values]
    needs_reference = "steps" not in (x_axis, y_axis) and bool(reference_steps)
    if needs_reference:
        reference_steps = checks.steps(reference_steps)
    total = sum(s["steps"] for row in plan for s in row)
    total += reference_steps * len(x_values) * len(y_values) if needs_reference else 0
    progress = _GridProgress(control, total)

    images = [[progress.run(pg, s) for s in row] for row in plan]
    references = {}
    rows = []
    for j, y in enumerate(y_values):
        row = []
        for i, x in enumerate(x_values):
            image = images[j][i]
            reference, label = _reference(pg, plan, images, i, j, x_axis, y_axis,
                                          reference_steps if needs_reference else None,
                                          progress)
            if reference is not None:
                references[(x, y)] = reference
            distance = None if reference is None else pixel_distance(image, reference)
            row.append(GridCell(x, y, image, settings_of(image)["seconds"], distance, label))
        rows.append(row)
    settings = {"task": "compare_grid", **fixed, "x_axis": x_axis, "x_values": x_values,
                "y_axis": y_axis, "y_values": y_values if y_axis else None,
                "reference_steps": reference_steps if needs_reference else None,
                "scheduler": scheduler if "scheduler" in (x_axis, y_axis)
                else settings_of(images[0][0])["scheduler"]}
    result = GridResult(x_axis, x_values, y_axis, y_values, rows, settings,
                        references=references)
    result.settings["cells"] = result.table()
    result.picture = run_mod.attach_settings(grid_picture(result), result.settings)
    result.curve = distance_curve(result)
    return result


def guidance_sweep(pg, prompt: str, values=GUIDANCE_SWEEP, seeds=None, **settings) -> GridResult:
    """Guidance scale across (one row per seed when `seeds` is given): how strongly the
    picture follows the prompt, from off (1) to over-saturated."""
    if seeds:
        return compare_grid(pg, prompt, "guidance", values, "seed", seeds, **settings)
    return compare_grid(pg, prompt, "guidance", values, **settings)


def _cell_settings(fixed: dict, x_axis: str, x, y_axis: str | None, y) -> dict:
    settings = dict(fixed)
    settings[x_axis] = x
    if y_axis:
        settings[y_axis] = y
    return settings


class _GridProgress:
    """Forwards each run's steps as progress over the whole grid; shares cancel."""

    def __init__(self, control: RunControl | None, total: int):
        self.control, self.total, self.done = control, total, 0

    def run(self, pg, settings: dict) -> Image.Image:
        control = None
        if self.control is not None:
            self.control.raise_if_cancelled()
            outer, offset = self.control, self.done

            def on_progress(step, _total):
                if outer.on_progress is not None:
                    outer.on_progress(offset + step, self.total)
            control = RunControl(on_progress=on_progress, _stop=outer._stop)
        image = pg.text_to_image(**settings, control=control)
        self.done += settings["steps"]
        return image


def _reference(pg, plan, images, i, j, x_axis, y_axis, reference_steps, progress):
    """(reference picture, description) for cell (i, j)."""
    if x_axis == "steps":
        k = int(np.argmax([s["steps"] for s in plan[j]]))
        return images[j][k], f"steps={plan[j][k]['steps']} on this row"
    if y_axis == "steps":
        k = int(np.argmax([row[i]["steps"] for row in plan]))
        return images[k][i], f"steps={plan[k][i]['steps']} in this column"
    if reference_steps is None:
        return None, "none"
    return progress.run(pg, dict(plan[j][i], steps=reference_steps)), \
        f"same settings, {reference_steps} steps"


def pixel_distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two pictures' pixels, 0..255."""
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


# ---------------------------------------------------------------- drawing

def _value_label(axis: str, value) -> str:
    return f"{axis} {value}" if axis != "scheduler" else str(value)


def grid_picture(grid: GridResult) -> Image.Image:
    """The cells with the axis values along the top and left, and under each cell its
    seconds and its distance to the reference."""
    first = grid.rows[0][0].image
    cell = 128 if max(first.size) <= 128 else min(256, max(first.size))
    scale = cell / max(first.size)
    cell_w, cell_h = round(first.width * scale), round(first.height * scale)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_labels = [_value_label(grid.y_axis, y) if grid.y_axis else "" for y in grid.y_values]
    left = max([chart.text_width(probe, t) for t in row_labels] + [0]) + 12
    under, top, gap = 30, 56, 6
    column_w = max(cell_w, 112) + gap
    width = left + column_w * len(grid.x_values) + gap
    height = top + (cell_h + under + gap) * len(grid.y_values)
    sheet = Image.new("RGB", (width, height), chart.PAPER)
    draw = ImageDraw.Draw(sheet)
    s = grid.settings
    fixed = [f"{k} {s[k]}" for k in ("scheduler", "steps", "guidance", "seed")
             if k not in (grid.x_axis, grid.y_axis)]
    draw.text((6, 4), f'"{s["prompt"]}" · {", ".join(fixed)}', fill=chart.INK, font=chart.font(12))
    axes = f"across: {grid.x_axis}" + (f" · down: {grid.y_axis}" if grid.y_axis else "")
    draw.text((6, 18), axes, fill=(90, 90, 90), font=chart.font(11))
    for i, x in enumerate(grid.x_values):
        draw.text((left + i * column_w + cell_w // 2, top - 4), _value_label(grid.x_axis, x),
                  fill=chart.INK, font=chart.font(12), anchor="mb")
    for j, row in enumerate(grid.rows):
        y0 = top + j * (cell_h + under + gap)
        draw.text((6, y0 + cell_h // 2), row_labels[j], fill=chart.INK, font=chart.font(12),
                  anchor="lm")
        for i, c in enumerate(row):
            x0 = left + i * column_w
            picture = c.image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
            sheet.paste(picture, (x0, y0))
            draw.text((x0, y0 + cell_h + 2), f"{c.seconds:.2f} s / picture",
                      fill=chart.INK, font=chart.font(10))
            if c.distance is not None:
                draw.text((x0, y0 + cell_h + 14), f"distance {c.distance:.1f}",
                          fill=(90, 90, 90), font=chart.font(10))
    return sheet


def distance_curve(grid: GridResult) -> Image.Image:
    """Distance to the reference against steps (or the numeric axis), a line per value
    of the other axis."""
    axes = [a for a in (grid.x_axis, grid.y_axis) if a]
    numeric = [a for a in axes if a != "scheduler"]
    curve_axis = "steps" if "steps" in axes else (numeric or axes)[0]
    other = next((a for a in axes if a != curve_axis), None)
    series: dict[str, list] = {}
    for c in grid.cells:
        x_value = c.x if curve_axis == grid.x_axis else c.y
        o_value = None if other is None else (c.x if other == grid.x_axis else c.y)
        position = (float(x_value) if curve_axis != "scheduler"
                    else float(grid.x_values.index(x_value) + 1))
        name = "distance" if other is None else _value_label(other, o_value)
        series.setdefault(name, []).append(
            (position, float("nan") if c.distance is None else c.distance))
    series = {name: sorted(points) for name, points in series.items()}
    x_label = curve_axis if curve_axis != "scheduler" else \
        "scheduler: " + ", ".join(f"{k + 1} {v}" for k, v in enumerate(grid.x_values))
    return chart.line_chart(series, title="Distance to the most converged picture",
                            x_label=x_label, y_label="mean |pixel difference| (0-255)")

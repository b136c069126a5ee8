"""Compare grids, quality vs cost and notebook export (issue 5, second half).

Mechanics on the tiny pipelines (fast); the HTTP endpoints on the served starter app."""
from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from playground import BadInput, settings_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"model": "tiny", "width": 32, "height": 32}


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def starting_noise(monkeypatch):
    """The initial noise x_T drawn by every text-to-image run (before the scheduler
    scales it by its init_noise_sigma, which differs between schedulers)."""
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion as module

    seen = []
    original = module.randn_tensor

    def recording(*args, **kwargs):
        noise = original(*args, **kwargs)
        seen.append(noise.clone())
        return noise

    monkeypatch.setattr(module, "randn_tensor", recording)
    return seen


def test_grid_has_the_asked_cells_from_one_starting_noise(tiny_playground, starting_noise):
    pg = tiny_playground
    grid = pg.compare_grid("a red circle", "steps", [1, 3], "scheduler", ["DDIM", "Euler"],
                           seed=11, guidance=5.0, **TINY)
    assert [[(c.x, c.y) for c in row] for row in grid.rows] == \
        [[(1, "DDIM"), (3, "DDIM")], [(1, "Euler"), (3, "Euler")]]
    assert len(starting_noise) == 4
    for noise in starting_noise[1:]:
        assert np.array_equal(noise.numpy(), starting_noise[0].numpy())
    # a cell is exactly the plain run with its settings
    cell = grid.cell(3, "Euler")
    plain = pg.text_to_image("a red circle", scheduler="Euler", steps=3, guidance=5.0, seed=11,
                             **TINY)
    assert np.array_equal(pixels(cell.image), pixels(plain))
    assert settings_of(cell.image)["scheduler"] == "Euler"
    assert not np.array_equal(pixels(grid.cell(1, "Euler").image), pixels(cell.image))
    # the table: one row per cell; the most converged cell of a row is its own reference
    table = grid.table()
    assert len(table) == 4
    assert set(table[0]) == {"steps", "scheduler", "seconds", "distance", "reference"}
    assert all(row["seconds"] > 0 for row in table)
    by_cell = {(r["steps"], r["scheduler"]): r["distance"] for r in table}
    assert by_cell[(3, "DDIM")] == 0 and by_cell[(3, "Euler")] == 0
    assert by_cell[(1, "DDIM")] > 0 and by_cell[(1, "Euler")] > 0
    assert grid.frame().shape == (4, 5)
    # the labelled picture is larger than the cells and carries the grid's settings
    assert grid.picture.width > 2 * 32 and grid.picture.height > 2 * 32
    assert settings_of(grid.picture)["task"] == "compare_grid"
    assert pixels(grid.curve).std() > 0


def test_seed_axis_gives_each_seed_its_own_noise(tiny_playground, starting_noise):
    grid = tiny_playground.guidance_sweep("a blue square", values=[1.0, 7.5], seeds=[1, 2],
                                          steps=2, reference_steps=3, **TINY)
    assert len(grid.cells) == 4
    # order: per seed row, the two guidance cells, then each cell's reference run
    grid_noise = starting_noise[:4]
    assert np.array_equal(grid_noise[0].numpy(), grid_noise[1].numpy())      # seed 1
    assert np.array_equal(grid_noise[2].numpy(), grid_noise[3].numpy())      # seed 2
    assert not np.array_equal(grid_noise[0].numpy(), grid_noise[2].numpy())
    assert all(c.distance is not None and c.reference.endswith("3 steps") for c in grid.cells)


def test_a_grid_reports_progress_over_all_cells_and_stops_when_cancelled(tiny_playground):
    from playground import Cancelled, RunControl

    seen = []

    def on_progress(done, total):
        seen.append((done, total))
        if done >= 3:
            control.cancel()

    control = RunControl(on_progress=on_progress)
    with pytest.raises(Cancelled):
        tiny_playground.compare_grid("a red circle", "steps", [2, 3], "seed", [1, 2],
                                     control=control, **TINY)
    assert seen[0] == (1, 10) and seen[-1][0] == 3  # 2+3 steps per seed row, stopped at 3


@pytest.mark.parametrize("axes, message", [
    (("colour", [1, 2]), "unknown x axis"),
    (("steps", [1, 2], "steps", [3]), "must differ"),
    (("scheduler", ["DDIM", "Nope"]), "unknown scheduler"),
    (("steps", [0, 2]), "steps must be between"),
    (("seed", [-1, 2]), "fixed seeds"),
    (("guidance", "1, x"), "not a number"),
    (("steps", list(range(1, 11)), "seed", list(range(10))), "at most 64 cells"),
])
def test_bad_grids_say_what_is_allowed(tiny_playground, axes, message):
    with pytest.raises(BadInput, match=message):
        tiny_playground.compare_grid("a red circle", *axes, **TINY)


def test_exported_notebook_runs_in_a_fresh_kernel_and_makes_the_same_pictures(
        tiny_playground, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    pg = tiny_playground
    first = pg.text_to_image("a red circle", steps=2, seed=5, scheduler="Euler", **TINY)
    second = pg.layout_to_image("a blue square", ["a blue square"], [[0.1, 0.1, 0.6, 0.6]],
                                model="tiny", steps=2, seed=6)
    path = pg.export_notebook([first, {"settings": settings_of(second)}], tmp_path / "s.ipynb")
    notebook = nbformat.read(path, as_version=4)
    kinds = [c.cell_type for c in notebook.cells]
    assert kinds.count("markdown") >= 3 and kinds.count("code") == 3
    embedded = [out for c in notebook.cells if c.cell_type == "code" for out in c.outputs]
    assert len(embedded) == 2 and all("image/png" in out.data for out in embedded)
    assert np.array_equal(pixels(png_of(embedded[0])), pixels(first))

    env = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    os.environ.update(env)  # the kernel inherits it (monkeypatch would be undone too early)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [out for c in notebook.cells if c.cell_type == "code" for out in c.outputs
               if out.output_type == "execute_result"]
    assert len(outputs) == 2
    assert np.array_equal(pixels(png_of(outputs[0])), pixels(first))
    assert np.array_equal(pixels(png_of(outputs[1])), pixels(second))


def png_of(output) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(output.data["image/png"])))


def test_export_refuses_nothing_and_unknown_runs(tiny_playground, tmp_path):
    with pytest.raises(BadInput, match="no runs"):
        tiny_playground.export_notebook([], tmp_path / "x.ipynb")
    with pytest.raises(BadInput, match="task"):
        tiny_playground.export_notebook([{"prompt": "a red circle"}], tmp_path / "x.ipynb")


def test_quality_vs_cost_measures_every_pair(starter):
    result = starter.quality_vs_cost(schedulers=["DDIM", "Euler"], steps=[1, 2], n_prompts=2,
                                     judge_renders=20)
    table = result.table()
    assert [(r["scheduler"], r["steps"]) for r in table] == \
        [("DDIM", 1), ("DDIM", 2), ("Euler", 1), ("Euler", 2)]
    assert all(0 <= r["accuracy"] <= 1 and np.isfinite(r["frechet"]) and r["seconds"] > 0
               for r in table)
    assert result.plot.width > 400 and pixels(result.plot).std() > 0
    example = result.counterexample
    if example is not None:  # whatever it found must be what it claims
        a, b, k = example["lower"], example["higher"], example["prompt_index"]
        assert a.frechet < b.frechet and a.scores[k] < b.scores[k]
    assert "Frechet" in result.markdown()


# ---------------------------------------------------------------- HTTP endpoints

@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    from app_server import shared_app

    return Client(shared_app()[1], verbose=False, download_files=True)


def test_compare_grid_endpoint(client):
    picture, table = client.predict(prompt="a red circle", x_axis="steps", x_values=[1, 2],
                                    y_axis="seed", y_values=[1, 2], api_name="/compare_grid")
    with Image.open(picture) as image:
        assert image.width > 128 and json.loads(image.info["settings"])["task"] == "compare_grid"
    assert len(table) == 4 and {"steps", "seed", "seconds", "distance"} <= set(table[0])


def test_compare_grid_endpoint_bad_axis(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="unknown x axis"):
        client.predict(prompt="a red circle", x_axis="colour", x_values=[1],
                       api_name="/compare_grid")


def test_export_notebook_endpoint(client):
    import nbformat

    _, settings = client.predict(prompt="a red circle", steps=2, seed=3,
                                 api_name="/text_to_image")
    path = client.predict(runs=[settings], api_name="/export_notebook")
    assert path.endswith(".ipynb")
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "pg.text_to_image(" in code[1].source and "seed=3" in code[1].source
    assert "image/png" in code[1].outputs[0].data

"""HTTP endpoints for the teaching views' comparisons: `/compare_grid` (axes and values
-> labelled grid PNG and a table of seconds and distances per cell) and
`/export_notebook` (settings dicts of results -> a .ipynb file), over the same
`Playground` methods as the Compare tab and notebooks.

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/")
    png, table = client.predict(prompt="a red circle", x_axis="steps", x_values=[5, 10, 20],
                                y_axis="scheduler", y_values=["DDIM", "Euler"],
                                api_name="/compare_grid")
    _, settings = client.predict(prompt="a red circle", seed=1, api_name="/text_to_image")
    notebook_path = client.predict(runs=[settings], api_name="/export_notebook")
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from gradio.data_classes import FileData

from .. import Playground
from ..share.pngmeta import save_png
from .api import register_endpoints
from .common import call_core

KEEP_RESULTS_S = 3600  # files older than this are deleted (clients download at once)


class CompareEndpoints:
    """`/compare_grid` and `/export_notebook`, writing their files under `output_dir`
    (the API's served output folder)."""

    def __init__(self, pg: Playground, output_dir):
        self.pg = pg
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def register(self, *, concurrency_limit: int | None, concurrency_id: str = "sampling"):
        register_endpoints(self, ("compare_grid", "export_notebook"), concurrency_limit=concurrency_limit,
                           concurrency_id=concurrency_id)

    def compare_grid(self, prompt: str, x_axis: str, x_values: list,
                     y_axis: str | None = None, y_values: list | None = None,
                     negative_prompt: str = "", model: str = "starter",
                     scheduler: str | None = None, steps: int = 20, guidance: float | None = None,
                     seed: int = 0, reference_steps: int = 50) -> tuple[FileData, list[dict]]:
        """A grid over any two of scheduler, steps, guidance and seed (x_axis across,
        optional y_axis down), every cell from the same starting noise. Returns (PNG of
        the labelled grid, settings in its text chunk; one row per cell with its axis
        values, seconds and distance to the most converged picture)."""
        grid = call_core(self.pg.compare_grid, prompt, x_axis, x_values, y_axis or None,
                         y_values, negative_prompt=negative_prompt, model=model,
                         scheduler=scheduler or None, steps=steps, guidance=guidance,
                         seed=seed, reference_steps=reference_steps)
        path = self._new_file(".png")
        save_png(grid.picture, path)
        return FileData(path=path, orig_name="grid.png", mime_type="image/png"), grid.table()

    def export_notebook(self, runs: list[dict]) -> FileData:
        """A Jupyter notebook of `runs`: the settings dicts that /text_to_image,
        /layout_to_image or /compare_grid answered with (their pictures are made again,
        to embed them). Returns the .ipynb file."""
        path = self._new_file(".ipynb")
        call_core(self.pg.export_notebook, runs, path)
        return FileData(path=path, orig_name="playground-session.ipynb",
                        mime_type="application/x-ipynb+json")

    def _new_file(self, suffix: str) -> str:
        delete_old_files(self.output_dir, ("*.png", "*.ipynb"))
        handle, path = tempfile.mkstemp(suffix=suffix, prefix="teach-", dir=self.output_dir)
        os.close(handle)
        return path


def delete_old_files(folder: Path, patterns) -> None:
    too_old = time.time() - KEEP_RESULTS_S
    for pattern in patterns:
        for old in folder.glob(pattern):
            try:
                if old.stat().st_mtime < too_old:
                    old.unlink()
            except OSError:  # another request removed it first
                pass

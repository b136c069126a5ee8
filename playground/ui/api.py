"""The HTTP API: named endpoints `/text_to_image`, `/layout_to_image`, `/inpaint` and
`/upscale` for `gradio_client` (and any HTTP client), each a typed function over the
same `Playground` method the UI and notebooks call. Each returns the PNG (settings in
its text chunk) and the settings actually used, as a JSON dict.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    png_path, settings = client.predict(prompt="a red circle", seed=1,
                                        api_name="/text_to_image")

While a request samples, the endpoint streams `(None, {"step": s, "total": n})` updates
(`job.outputs()` in gradio_client) before the final answer; `job.cancel()` (or a client
that goes away) stops the sampling loop within a step, as Stop does in the browser.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from PIL import Image

from .. import Cancelled, Playground, PlaygroundError
from ..tasks.checks import check_pixels
from ..share.pngmeta import save_png
from .common import settings_json, user_error
from .runs import ActiveRuns, stream_run

ENDPOINTS = ("text_to_image", "layout_to_image", "inpaint", "upscale")
KEEP_RESULTS_S = 3600  # API results older than this are deleted (clients download at once)


def register_endpoints(owner, names, *, concurrency_limit: int | None,
                       concurrency_id: str = "sampling") -> None:
    """Each `owner.<name>` becomes the named HTTP endpoint /<name>, sharing one
    concurrency group with the sampling events."""
    for name in names:
        gr.api(getattr(owner, name), api_name=name, concurrency_limit=concurrency_limit,
               concurrency_id=concurrency_id)


class ApiEndpoints:
    """The four endpoint functions bound to one `Playground`; results are written as
    PNG files under `output_dir` (Gradio then serves them from its cache).

    Each endpoint is a generator (Gradio closes a generator when its event is cancelled
    or its client leaves, and closing it cancels the run); the return annotations say
    what the final answer is, which is what Gradio reads to type the endpoint."""

    def __init__(self, pg: Playground, output_dir: str | None = None):
        self.pg = pg
        self.runs = ActiveRuns()  # the API's runs in flight, one key per request
        if output_dir is None:
            output_dir = tempfile.mkdtemp(prefix="playground-api-")
            atexit.register(shutil.rmtree, output_dir, ignore_errors=True)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def register(self, *, concurrency_limit: int | None, concurrency_id: str = "sampling"):
        """Add the endpoints to the Blocks being built."""
        register_endpoints(self, ENDPOINTS, concurrency_limit=concurrency_limit,
                           concurrency_id=concurrency_id)

    # ------------------------------------------------------------ the endpoints

    def text_to_image(self, prompt: str, negative_prompt: str = "", model: str = "starter",
                      scheduler: str | None = None, steps: int | None = None, guidance: float | None = None,
                      seed: int = -1, width: int | None = None,
                      height: int | None = None,
                      place_objects: bool = False,
                      colour_hints: bool = False,
                      regional_prompts: bool = False,
                      compose_objects: bool = False) -> tuple[FileData, dict]:
        """Make a picture from a caption; place_objects puts objects in the cells the
        prompt names ("a red circle in the top left"); colour_hints paints their colours
        faintly into those cells' starting noise; regional_prompts lets each such cell
        read only its object's words; compose_objects instead paints each placed object
        by itself with the model's inpainter on a canvas of the named background.
        Returns (PNG, settings used)."""
        yield from self._stream("text_to_image", steps, lambda control: self.pg.text_to_image(
            prompt, negative_prompt, model=model, scheduler=scheduler, steps=steps,
            guidance=guidance, seed=seed, width=width, height=height, control=control,
            place_objects=place_objects, colour_hints=colour_hints,
            regional_prompts=regional_prompts, compose_objects=compose_objects))

    def layout_to_image(self, prompt: str, phrases: list[str], boxes: list[list[float]],
                        negative_prompt: str = "", model: str = "starter",
                        scheduler: str | None = None, steps: int | None = None,
                        guidance: float | None = None, seed: int = -1,
                        place_objects: bool = False,
                        regional_prompts: bool = False,
                        colour_hints: bool = False,
                        grounding: float | None = None) -> tuple[FileData, dict]:
        """Put one object per phrase in its box ([x0, y0, x1, y1], fractions 0..1 of the
        picture); place_objects also steers the starting noise toward the boxes;
        regional_prompts lets each box read only its own phrase; colour_hints paints each
        phrase's colour faintly into the starting noise of its box; grounding is the share
        of the steps (0..1) the boxes steer (None: the model's default).
        Returns (PNG, settings used)."""
        yield from self._stream("layout_to_image", steps, lambda control: self.pg.layout_to_image(
            prompt, phrases, boxes, negative_prompt=negative_prompt, model=model,
            scheduler=scheduler, steps=steps, guidance=guidance, seed=seed, control=control,
            place_objects=place_objects, regional_prompts=regional_prompts,
            colour_hints=colour_hints, grounding=grounding))

    def inpaint(self, image: FileData, mask: FileData, prompt: str,
                negative_prompt: str = "", model: str = "starter",
                scheduler: str | None = None, steps: int | None = None, guidance: float | None = None,
                strength: float = 1.0, seed: int = -1,
                focus_on_mask: bool = True) -> tuple[FileData, dict]:
        """Repaint where the mask is white (same size as the image; black = keep).
        focus_on_mask: a prompt that places several objects is read down to the one placed
        where the mask is (one naming them without places, to the one whose colour is
        missing outside the mask). Returns (PNG, settings used)."""
        picture, mask_picture = uploaded_picture(image, "image"), uploaded_picture(mask, "mask")
        yield from self._stream("inpaint", steps, lambda control: self.pg.inpaint(
            picture, mask_picture, prompt, negative_prompt=negative_prompt, model=model,
            scheduler=scheduler, steps=steps, guidance=guidance, strength=strength, seed=seed,
            control=control, focus_on_mask=focus_on_mask))

    def upscale(self, image: FileData, prompt: str = "", negative_prompt: str = "",
                model: str = "starter", scheduler: str | None = None, steps: int | None = None,
                guidance: float | None = None, noise_level: int = 20,
                seed: int = -1) -> tuple[FileData, dict]:
        """Make a picture 4 times larger. Returns (PNG, settings used)."""
        picture = uploaded_picture(image, "image")
        yield from self._stream("upscale", steps, lambda control: self.pg.upscale(
            picture, prompt, negative_prompt=negative_prompt, model=model, scheduler=scheduler,
            steps=steps, guidance=guidance, noise_level=noise_level, seed=seed,
            control=control))

    # ------------------------------------------------------------ helpers

    def _stream(self, name: str, steps, call: Callable) -> Iterator[tuple[FileData | None, dict]]:
        """Run `call(control)`; yield step updates, then (PNG, settings). Closing this
        generator (a cancelled event, a client gone) cancels the run at its next step."""
        total = int(steps) if isinstance(steps, (int, float)) and 1 <= steps <= 10**6 else 1
        try:
            for update in stream_run(call, steps=total, runs=self.runs,
                                     session=uuid.uuid4().hex, tab=f"api-{name}",
                                     previews=False):
                if update.done:
                    yield self._answer(update.result)
                    return
                stage = {"stage": update.stage} if update.stage else {}
                yield None, {**stage, "step": update.step, "total": update.total}
        except gr.Error:
            raise
        except Cancelled as error:
            raise gr.Error("the run was stopped", print_exception=False) from error
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            raise user_error(error) from error

    def _answer(self, image: Image.Image) -> tuple[FileData, dict]:
        self._delete_old_results()
        handle, path = tempfile.mkstemp(suffix=".png", dir=self.output_dir)
        os.close(handle)
        save_png(image, path)  # settings JSON and AUTOMATIC1111 parameters inside
        return FileData(path=path, orig_name="result.png", mime_type="image/png"), \
            settings_json(image)


    def _delete_old_results(self) -> None:
        too_old = time.time() - KEEP_RESULTS_S
        for old in self.output_dir.glob("*.png"):
            try:
                if old.stat().st_mtime < too_old:
                    old.unlink()
            except OSError:  # another request removed it first
                pass


def uploaded_picture(payload: Any, name: str) -> Image.Image:
    """Open a picture sent with `gradio_client.handle_file(...)`.

    Only files that Gradio received as uploads are opened: a payload that names any
    other path on the server (or a URL) is refused, so the API cannot read server files."""
    path = _payload_path(payload)
    if path is None:
        raise gr.Error(f"{name} is missing: send a picture file, e.g. "
                       f"{name}=handle_file('picture.png') with gradio_client",
                       print_exception=False)
    uploads = Path(get_upload_folder()).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(uploads) or not resolved.is_file():
        raise gr.Error(f"{name} must be a file uploaded with this request "
                       f"(gradio_client: handle_file(path)); server paths and URLs are "
                       f"not accepted", print_exception=False)
    try:
        with Image.open(resolved) as picture:
            check_pixels(name, picture.width, picture.height)  # before decoding: bombs
            picture.load()
            return picture.copy()
    except PlaygroundError as error:
        raise gr.Error(str(error), print_exception=False) from error
    except Image.DecompressionBombError as error:
        raise gr.Error(f"{name} is too large: {error}", print_exception=False) from error
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same answer
        raise gr.Error(f"{name} is not a picture that can be read (PNG, JPEG, WebP, ...): "
                       f"{type(error).__name__}", print_exception=False) from error


def _payload_path(payload: Any) -> str | None:
    if payload is None:
        return None
    if isinstance(payload, FileData):
        return payload.path
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)  # a bare path or URL: checked (and refused) like any other path

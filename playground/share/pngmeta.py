"""Settings inside PNG files: a `settings` text chunk holding our JSON record, and a
`parameters` text chunk with the AUTOMATIC1111 line (see a1111.py), so that both this
playground and the tools that read AUTOMATIC1111 pictures find them."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

from PIL import Image, PngImagePlugin

from ..errors import BadInput
from ..run import settings_of
from . import a1111
from .recipe import Recipe, restorable

SETTINGS_KEY = "settings"
PARAMETERS_KEY = "parameters"


def png_text(image_or_settings) -> dict[str, str]:
    """The PNG text chunks for a result (or its settings dict): {"settings": JSON,
    "parameters": AUTOMATIC1111 line}."""
    settings = image_or_settings if isinstance(image_or_settings, dict) \
        else settings_of(image_or_settings)
    return {SETTINGS_KEY: json.dumps(settings, default=str, ensure_ascii=False),
            PARAMETERS_KEY: a1111.to_parameters(settings)}


def with_text(image: Image.Image) -> Image.Image:
    """A copy whose `info` is exactly the text chunks: any PNG writer that keeps text
    info (PIL's with `pnginfo`, Gradio's) then writes them."""
    out = image.copy()
    out.info = png_text(image)
    return out


def png_info(image: Image.Image) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in png_text(image).items():
        info.add_itxt(key, value)  # iTXt: UTF-8, so prompts in any language survive
    return info


def save_png(image: Image.Image, path_or_file) -> None:
    """Write a result as a lossless PNG carrying its settings."""
    image.save(path_or_file, format="PNG", pnginfo=png_info(image))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    save_png(image, buffer)
    return buffer.getvalue()


@dataclass
class PngSettings:
    """What a PNG carried: the raw record and where it came from."""
    record: dict
    origin: str  # "playground PNG" or "AUTOMATIC1111 PNG"


def read_settings(source) -> PngSettings:
    """The settings a PNG (path, file object, bytes or opened image) carries: our JSON
    chunk first, else an AUTOMATIC1111 `parameters` chunk."""
    text = _text_chunks(source)
    if SETTINGS_KEY in text:
        try:
            record = json.loads(text[SETTINGS_KEY])
        except json.JSONDecodeError as error:
            raise BadInput(f"the PNG's settings chunk is not valid JSON ({error})") from None
        if isinstance(record, dict):
            return PngSettings(record, "playground PNG")
    if PARAMETERS_KEY in text:
        return PngSettings(a1111.to_settings(a1111.parse_parameters(text[PARAMETERS_KEY])),
                           "AUTOMATIC1111 PNG")
    raise BadInput("this picture carries no settings: neither a playground 'settings' "
                   "chunk nor an AUTOMATIC1111 'parameters' chunk")


def read_png(source, task: str | None = None, *, pg=None) -> Recipe:
    """The recipe a PNG carries (see `recipe.restorable`)."""
    found = read_settings(source)
    return restorable(found.record, task, pg=pg, origin=found.origin)


def _text_chunks(source) -> dict[str, str]:
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        try:
            image = Image.open(source)
        except (OSError, ValueError) as error:
            raise BadInput(f"not a picture that can be read: {error}") from None
    with_text = getattr(image, "text", None)  # PNG: every tEXt/iTXt/zTXt chunk
    found = dict(with_text) if with_text is not None else {}
    found.update({k: v for k, v in image.info.items() if isinstance(v, str)})
    return found

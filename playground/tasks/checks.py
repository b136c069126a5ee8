"""Input checks shared by the tasks. Each returns the cleaned value or raises `BadInput`
with a message that says what was wrong and what is allowed."""
from __future__ import annotations

import io
import math
import os
import re
import unicodedata

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BadInput

STEPS_RANGE = (1, 150)
GUIDANCE_RANGE = (0.0, 30.0)
MAX_IMAGES = 8
MAX_TEXT_CHARS = 10_000  # far beyond any text encoder's 77 tokens; longer is refused
MAX_PICTURE_PIXELS = 4096 * 4096  # declared size checked before decoding (decompression bombs)
_ALLOWED_CONTROLS = "\n\r\t"


def number(name: str, value, *, integer: bool = False) -> float | int:
    """A finite real number (bools and strings refused); integral floats pass as ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadInput(f"{name} must be a number, got {value!r}")
    value = float(value) if not isinstance(value, (int, np.integer)) else int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{name} must be a finite number, got {value}")
    if integer:
        if value != int(value):
            raise BadInput(f"{name} must be a whole number, got {value}")
        return int(value)
    return float(value)


def in_range(name: str, value, low, high, *, integer: bool = False):
    value = number(name, value, integer=integer)
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low} and {high}, got {value}")
    return value


def steps(value) -> int:
    return in_range("steps", value, *STEPS_RANGE, integer=True)


def guidance(value) -> float:
    return in_range("guidance", value, *GUIDANCE_RANGE)


def grounding(value) -> float:
    """The share of the steps a layout model's boxes steer (GLIGEN's scheduled sampling)."""
    return in_range("grounding (the share of the steps the boxes steer)", value, 0.0, 1.0)


def num_images(value) -> int:
    return in_range("num_images", value, 1, MAX_IMAGES, integer=True)


def flag(name: str, value) -> bool:
    """True or False (also 0/1 and None for False, as UI checkboxes and JSON send them)."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise BadInput(f"{name} must be true or false, got {value!r}")


def text(name: str, value, *, required: bool = False) -> str:
    """Text of at most MAX_TEXT_CHARS characters, valid Unicode (no lone surrogates from
    undecodable bytes) and without control characters other than newline and tab."""
    if value is None:
        value = ""
    if isinstance(value, (bytes, bytearray)):
        raise BadInput(f"{name} must be text (str), got bytes; decode it first "
                       "(e.g. .decode('utf-8'))")
    if not isinstance(value, str):
        raise BadInput(f"{name} must be text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise BadInput(f"{name} is {len(value):,} characters long; at most {MAX_TEXT_CHARS:,} "
                       "are accepted (and the model reads only its first 77 tokens)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = value[error.start]
        raise BadInput(f"{name} is not valid UTF-8 text: character U+{ord(bad):04X} at "
                       f"position {error.start} cannot be encoded (undecodable input?)") from None
    for position, char in enumerate(value):
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            raise BadInput(f"{name} contains the control character U+{ord(char):04X} at "
                           f"position {position}; only printable text, newlines and tabs "
                           "are allowed")
    if required and not value.strip():
        raise BadInput(f"{name} is empty; describe the picture you want")
    return value.strip()


def size(width, height, native_w: int, native_h: int, multiple: int, max_side: int,
         warnings: list[str]) -> tuple[int, int]:
    """Width and height in pixels; None = native. Rounded down to `multiple`."""
    out = []
    for name, value, native in (("width", width, native_w), ("height", height, native_h)):
        if value is None:
            out.append(native)
            continue
        value = in_range(name, value, multiple, max_side, integer=True)
        if value % multiple:
            rounded = value - value % multiple
            warnings.append(f"{name} {value} is not a multiple of {multiple}; used {rounded}")
            value = rounded
        out.append(value)
    return out[0], out[1]


# ---------------------------------------------------------------- pictures

def image(name: str, value) -> Image.Image:
    """A picture given as PIL image, numpy array, path or bytes -> PIL RGB."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadInput(f"no {name} given; upload or pass a picture")
    try:
        if isinstance(value, Image.Image):
            picture = value
        elif isinstance(value, np.ndarray):
            picture = _from_array(value)
        elif isinstance(value, (str, os.PathLike)):
            if not os.path.exists(value):
                raise BadInput(f"{name} file {os.fspath(value)!r} does not exist")
            if not os.path.isfile(value):
                raise BadInput(f"{name} {os.fspath(value)!r} is not a file")
            picture = _open_checked(name, value)
        elif isinstance(value, (bytes, bytearray)):
            picture = _open_checked(name, io.BytesIO(value))
        else:
            raise BadInput(f"{name} must be a picture (PIL image, numpy array, file path or "
                           f"bytes), got {type(value).__name__}")
    except Image.DecompressionBombError as e:
        raise BadInput(f"{name} is too large: {e}; at most {MAX_PICTURE_PIXELS:,} pixels "
                       "(e.g. 4096x4096) are accepted") from None
    except (UnidentifiedImageError, OSError, ValueError, TypeError) as e:
        if isinstance(e, BadInput):
            raise
        raise BadInput(f"{name} is not a readable picture ({e})") from None
    if picture.width == 0 or picture.height == 0:
        raise BadInput(f"{name} is empty (0 pixels)")
    check_pixels(name, picture.width, picture.height)
    return picture


def _open_checked(name: str, source) -> Image.Image:
    """Open a picture file, checking its declared size before decoding any pixels: a
    small file can declare a huge picture (a decompression bomb)."""
    picture = Image.open(source)
    check_pixels(name, picture.width, picture.height)
    picture.load()
    return picture


def check_pixels(name: str, width: int, height: int) -> None:
    if width * height > MAX_PICTURE_PIXELS:
        raise BadInput(f"{name} is too large: {width}x{height} ({width * height:,} pixels); "
                       f"at most {MAX_PICTURE_PIXELS:,} pixels (e.g. 4096x4096) are accepted")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"array of shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.size == 0:
        raise ValueError("array has no pixels")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max() <= 1.0:
            array = array * 255
        array = np.clip(np.nan_to_num(array), 0, 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def rgb(picture: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white."""
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return picture.convert("RGB")


def mask(value, image_size: tuple[int, int]) -> np.ndarray:
    """The repaint mask as float32 (H, W) in 0..1: white = repaint, black = keep. An
    RGBA/LA mask whose alpha varies is read from its alpha (painted strokes)."""
    picture = image("mask", value)
    if picture.size != image_size:
        raise BadInput(f"mask is {picture.width}x{picture.height} but the image is "
                       f"{image_size[0]}x{image_size[1]}; they must be the same size")
    if picture.mode in ("RGBA", "LA"):
        alpha = np.asarray(picture.getchannel("A"))
        if alpha.min() != alpha.max():
            values = alpha
        else:
            values = np.asarray(picture.convert("L"))
    else:
        values = np.asarray(picture.convert("L"))
    m = values.astype(np.float32) / 255.0
    if m.max() < 0.5:
        raise BadInput("mask is empty: paint the area to repaint in white")
    if m.min() > 0.5:
        raise BadInput("mask covers the whole picture: leave the part to keep black, "
                       "or use text-to-image to make a new picture")
    return m


# ---------------------------------------------------------------- layout

def phrases_and_boxes(phrases, boxes, max_boxes: int) -> tuple[list[str], list[list[float]]]:
    if not isinstance(phrases, (list, tuple)) or not isinstance(boxes, (list, tuple)):
        raise BadInput("phrases must be a list of text and boxes a list of [x0, y0, x1, y1]")
    if len(phrases) != len(boxes):
        raise BadInput(f"{len(phrases)} phrases but {len(boxes)} boxes; give one phrase per box")
    if not boxes:
        raise BadInput("no boxes given; draw at least one box and give it a phrase")
    if len(boxes) > max_boxes:
        raise BadInput(f"{len(boxes)} boxes given; this model takes at most {max_boxes}")
    clean_phrases = []
    for i, phrase in enumerate(phrases, 1):
        if not isinstance(phrase, str) or not phrase.strip():
            raise BadInput(f"phrase {i} is empty; say what belongs in box {i}")
        clean_phrases.append(phrase.strip())
    clean_boxes = [box(i, b) for i, b in enumerate(boxes, 1)]
    return clean_phrases, clean_boxes


def box(i: int, value) -> list[float]:
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 4:
        raise BadInput(f"box {i} must be [x0, y0, x1, y1], got {value!r}")
    x0, y0, x1, y1 = (number(f"box {i} coordinate", v) for v in value)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise BadInput(f"box {i} = {[x0, y0, x1, y1]}: coordinates are fractions of the "
                       "picture and must be between 0 and 1")
    if x1 <= x0 or y1 <= y0:
        raise BadInput(f"box {i} = {[x0, y0, x1, y1]}: need x0 < x1 and y0 < y1 "
                       "(top-left corner first)")
    return [x0, y0, x1, y1]


# ---------------------------------------------------------------- prompts vs the tokenizer

def token_warnings(tokenizer, label: str, prompt: str) -> list[str]:
    """Warnings about words the tokenizer does not know and text cut at its length limit."""
    if not prompt:
        return []
    warnings = []
    unk = getattr(tokenizer, "unk_token", None)
    if unk is not None:
        words = re.findall(r"[\w']+", prompt.lower())
        unknown = sorted({w for w in words if unk in tokenizer.tokenize(w)}, key=words.index)
        if unknown:
            warnings.append(f"the model does not know these words of the {label}: "
                            + ", ".join(unknown))
    limit = tokenizer.model_max_length
    ids = tokenizer(prompt, truncation=False).input_ids
    if len(ids) > limit:
        cut = tokenizer.decode(ids[limit - 1:-1], skip_special_tokens=True)
        warnings.append(f"the {label} is longer than {limit} tokens; this part was cut: "
                        f"{abbreviate(cut)!r}")
    return warnings


def abbreviate(text: str, keep: int = 120) -> str:
    """Text shown in a message: long text keeps its start and end and says how much is left out."""
    if len(text) <= keep:
        return text
    half = keep // 2
    return f"{text[:half]} [... {len(text) - keep:,} characters ...] {text[-half:]}"


def empty_prompt_warning(prompt: str) -> list[str]:
    """An empty prompt is allowed (the model draws whatever it likes) but worth saying."""
    if prompt:
        return []
    return ["the prompt is empty: nothing describes the picture, so the model draws "
            "whatever it likes"]


def phrase_lengths(tokenizer, phrases: list[str]) -> None:
    """GLIGEN encodes each phrase whole: one longer than the text encoder takes fails."""
    limit = tokenizer.model_max_length
    for i, phrase in enumerate(phrases, 1):
        count = len(tokenizer(phrase, truncation=False).input_ids)
        if count > limit:
            raise BadInput(f"phrase {i} is {count} tokens long; a phrase may have at most "
                           f"{limit} tokens (including start and end): shorten it")

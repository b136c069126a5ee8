"""Place objects where the prompt says, by steering the starting noise.

Where an object lands is mostly decided by the starting noise, not by the position
words (the starter text-to-image model ignores them: probe_position). Its
cross-attention, though, follows the object it draws. So before sampling, the starting
noise is nudged a few times against the gradient of "the share of each object's words'
attention that falls outside the grid cell its position words name" (one conditional UNet
pass and its backward pass per nudge, a training-free guidance in the spirit of layout
guidance on cross-attention), and then the stock pipeline samples from it as usual.

Position words name the cells of a 3 x 3 grid, as in the starter world: "top left",
"top", "top right", "left", "centre" (also "center", "middle"), "right", "bottom left",
"bottom", "bottom right" ("upper"/"lower" read as top/bottom). A prompt is cut into
parts at commas, "and", ":", ";" and "with"; in each part that has position words, the
words before them (less articles and prepositions) are the object's words. A part that
relates two objects ("a green circle above a purple square", "below", "to the left of",
"to the right of") places them in opposite cells that make the relation hold (top and
bottom, or left and right), unless one names its own cell.

Layout-to-image steers the same way toward the boxes the caller gives, reading each
phrase's words in a text built from the phrases (`boxed_phrases`, `boxed_latents`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..starter.attention_loss import AttentionRecords, outside_box_loss
from ..starter.captions import with_article
from ..starter.world import CELLS, cell_bounds

NOTHING_TO_PLACE = ("place objects: the prompt names no object with a position (e.g. \"a red "
                    "circle in the top left\"; positions: " + ", ".join(CELLS) + "), so the "
                    "starting noise was left as drawn")
NO_PHRASE_TO_PLACE = ("place objects: no phrase has a word the model knows, so the starting "
                      "noise was left as drawn")
NUDGES = 10
STEP = 0.03  # each nudge moves the noise by STEP times a unit-spread gradient
# Layout boxes fit their objects tightly (a cell is a ninth of the picture), and the starter
# layout model's box IoU kept rising with stronger steering up to about this (model card)
BOX_NUDGES, BOX_STEP = 20, 0.1
STAGE = "placing objects"  # the progress reports' name for the nudges

SAME_WORD = {"center": "centre", "middle": "centre", "upper": "top", "lower": "bottom"}
POSITION_WORDS = {"top", "bottom", "left", "right", "centre", "center", "middle", "upper", "lower"}
BREAKS = {",", "and", ":", ";", "with", "."}
# relation -> (cell of the object before it, cell of the object after it)
RELATION_CELLS = {"above": ("top", "bottom"), "below": ("bottom", "top"),
                  "left": ("left", "right"), "right": ("right", "left")}
# words that end the second object of a relation ("... a blue square on a red background")
AFTER_OBJECT = {"on", "in", "at", "background"}
NOT_OBJECT_WORDS = {"a", "an", "one", "the", "in", "at", "on", "of", "to", "side", "corner",
                    "part", "placed", "is", "sits"}


@dataclass
class Placement:
    """One object to place: its words (token positions in the prompt, counted after the
    start token) and the box (x0, y0, x1, y1 in 0..1) they name."""
    words: list[str]
    positions: list[int]
    cell: str | None  # None: a box given by the caller (layout-to-image), not a cell
    box: tuple[float, float, float, float]
    relation: str | None = None  # the relation word the cell was chosen for, if any

    def describe(self) -> dict:
        where = {"cell": self.cell} if self.cell else {}
        why = {"relation": self.relation} if self.relation else {}
        return {"words": " ".join(self.words), **where, **why,
                "box": [round(v, 4) for v in self.box]}


def _plain(token: str) -> str:
    return token.replace("</w>", "").lower()


def _cell_of(words: list[str]) -> str | None:
    """The cell named by a run of position words, e.g. ["top", "left"] -> "top left"."""
    words = [SAME_WORD.get(w, w) for w in words]
    vertical = [w for w in words if w in ("top", "bottom")]
    horizontal = [w for w in words if w in ("left", "right")]
    if vertical and horizontal:
        return f"{vertical[0]} {horizontal[0]}"
    if vertical or horizontal:
        return (vertical or horizontal)[0]
    return "centre" if "centre" in words else None


def _parts(words: list[str]) -> list[range]:
    parts, start = [], 0
    for i, word in enumerate(words + [","]):
        if word in BREAKS:
            parts.append(range(start, i))
            start = i + 1
    return parts


def _relation_at(words: list[str], part: range) -> int | None:
    """Where a relation word stands in `part` ("above", "below", or the "left"/"right" of
    "to the left of"), or None."""
    for i in part:
        if words[i] in ("above", "below"):
            return i
        if words[i] in ("left", "right") and i + 1 < part.stop and words[i + 1] == "of":
            return i
    return None


def _object_words(words: list[str], span: range) -> list[int]:
    return [i for i in span if words[i] not in NOT_OBJECT_WORDS and words[i] not in POSITION_WORDS]


def _placed_in_cell(words: list[str], part: range) -> Placement | None:
    """The object of a part with position words ("a red circle in the top left"), or None."""
    where = [i for i in part if words[i] in POSITION_WORDS]
    if not where:
        return None
    first = where[0]
    run = [first]
    while run[-1] + 1 < part.stop and words[run[-1] + 1] in POSITION_WORDS:
        run.append(run[-1] + 1)
    cell = _cell_of([words[i] for i in run])
    objects = _object_words(words, range(part.start, first))
    if cell is None or not objects:
        return None
    return Placement([words[i] for i in objects + run], [i + 1 for i in objects + run], cell,
                     cell_bounds(cell))


def _placed_by_relation(words: list[str], part: range, at: int) -> list[Placement]:
    """The two objects a relation ties ("A above B"), each in its own cell if it names one,
    else in the cell the relation gives it."""
    relation = words[at] if words[at] in ("above", "below") else f"to the {words[at]} of"
    end = at + (2 if words[at] in ("left", "right") else 1)  # past "of"
    found = []
    for span, cell in zip((range(part.start, at), range(end, part.stop)),
                          RELATION_CELLS[words[at]]):
        own = _placed_in_cell(words, span)
        if own is not None:
            found.append(own)
            continue
        stop = next((i for i in span if words[i] in AFTER_OBJECT), span.stop)
        objects = _object_words(words, range(span.start, stop))
        if objects:
            found.append(Placement([words[i] for i in objects], [i + 1 for i in objects], cell,
                                   cell_bounds(cell), relation))
    return found


def placements(tokens: list[str]) -> list[Placement]:
    """The objects a tokenized prompt places (token i is prompt position i + 1)."""
    words = [_plain(t) for t in tokens]
    found = []
    for part in _parts(words):
        at = _relation_at(words, part)
        if at is not None:
            found.extend(_placed_by_relation(words, part, at))
            continue
        placed = _placed_in_cell(words, part)
        if placed is not None:
            found.append(placed)
    return found


COUNT_WORDS = {"two", "three", "four", "five", "objects", "shapes", "things"}


def unplaced_objects(tokens: list[str]) -> list[str]:
    """The words of each object a tokenized prompt names without a place: "blue square" in
    "a red circle in the top left and a blue square on a white background"."""
    words = [_plain(t) for t in tokens]
    left = []
    for part in _parts(words):
        if _relation_at(words, part) is not None or _placed_in_cell(words, part) is not None:
            continue
        end = next((i for i in part if words[i] in AFTER_OBJECT), part.stop)
        if end < part.stop and words[end] == "background":
            continue  # "with a red background": the background, not an object
        named = [words[i] for i in _object_words(words, range(part.start, end))
                 if words[i] not in COUNT_WORDS]
        if named:
            left.append(" ".join(named))
    return left


def boxed_phrases(tokenizer, phrases: list[str], boxes: list) -> tuple[str, list[Placement]]:
    """For layout-to-image: a text naming every phrase ("a red circle and a blue square")
    and, per phrase, its words' token positions in that text and its box. The steering
    reads the attention of these words, whatever the caption says, so any caption works
    (and phrases that do not fit in the text encoder's window are left unsteered)."""
    from ..teach.attention import prompt_tokens

    text, found = "", []
    for phrase, box in zip(phrases, boxes):
        start = "" if not text else text + " and "
        text = start + with_article(phrase)
        before = len(prompt_tokens(tokenizer, start))
        tokens = prompt_tokens(tokenizer, text)
        own = [(i + 1, _plain(t)) for i, t in enumerate(tokens) if i >= before]
        own = [(position, word) for position, word in own if word not in NOT_OBJECT_WORDS]
        found.append(Placement([w for _, w in own], [p for p, _ in own], None,
                               tuple(float(v) for v in box)))
    return text, found


def token_boxes(found: list[Placement], count: int, n_tokens: int) -> tuple:
    """(boxes, valid) as the attention loss takes them: per sample and token position, the
    box its attention should stay in, and whether the token is placed at all."""
    boxes, valid = torch.zeros(count, n_tokens, 4), torch.zeros(count, n_tokens)
    for placement in found:
        for position in placement.positions:
            if position < n_tokens:
                boxes[:, position] = torch.tensor(placement.box)
                valid[:, position] = 1
    return boxes, valid


def steer(unet, scheduler, noise, cond, boxes, valid, nudges=NUDGES, step=STEP, control=None):
    """Nudge `noise` (already scaled by init_noise_sigma) `nudges` times against the
    outside-the-box attention share. Each channel's spatial mean is taken out of the
    gradient (a constant shift would change the colour, not the place), and each channel
    is renormalised to the noise's own mean and spread after every nudge."""
    from ..teach.attention import unet_sharing_weights, with_recording_processors

    recorder = AttentionRecords()
    copy_of_unet = with_recording_processors(unet_sharing_weights(unet), recorder)
    t = scheduler.timesteps[0]
    x = noise
    for done in range(nudges):
        if control is not None:
            control.raise_if_cancelled()
        x = x.detach().requires_grad_(True)
        recorder.records = []
        copy_of_unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=cond)
        loss = outside_box_loss(recorder.records, boxes, valid, power=2)
        grad, = torch.autograd.grad(loss, x)
        grad = grad - grad.mean((2, 3), keepdim=True)
        spread_of_grad = grad.flatten(1).std(1).view(-1, 1, 1, 1) + 1e-8
        moved = x - step * grad / spread_of_grad
        mean, spread = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)
        moved_mean, moved_spread = moved.mean((2, 3), keepdim=True), moved.std((2, 3), keepdim=True)
        x = (moved - moved_mean) / moved_spread * spread + mean
        if control is not None:
            control.report_stage(STAGE, done + 1, nudges)
    return x.detach()


def placed_latents(pipe, prompt: str, found: list[Placement], generators, count: int,
                   height: int, width: int, steps: int, control=None, nudges: int = NUDGES,
                   step: float = STEP) -> torch.Tensor:
    """The starting latents the pipeline would draw from `generators`, steered so each
    placement's words attend inside its box. Returned unscaled (the pipeline multiplies
    the latents it is given by init_noise_sigma)."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    with torch.inference_mode(False), torch.enable_grad():
        noise = pipeline_noise(pipe, generators, count, height, width)
        cond, _ = pipe.encode_prompt(prompt, device, count, False)
        cond = cond.detach()
        boxes, valid = token_boxes(found, count, cond.shape[1])
        scheduler = copy.deepcopy(pipe.scheduler)
        scheduler.set_timesteps(steps, device=device)
        sigma = scheduler.init_noise_sigma
        steered = steer(pipe.unet, scheduler, noise * sigma, cond, boxes, valid, nudges, step,
                        control)
        return (steered / sigma).to(dtype)


def pipeline_noise(pipe, generators, count: int, height: int, width: int) -> torch.Tensor:
    """The starting noise the pipeline itself would draw from `generators` (unscaled)."""
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    shape = (count, pipe.unet.config.in_channels, height // factor, width // factor)
    return randn_tensor(shape, generator=generators, device=pipe.unet.device,
                        dtype=pipe.unet.dtype)


def starting_latents(pipe, prompt: str, generators, count: int, height: int, width: int,
                     steps: int, control, placed: list, warnings: list):
    """For a run with place_objects on: the steered starting latents, or None (and a
    warning) when the prompt places nothing. What was placed is added to `placed`."""
    from ..teach.attention import prompt_tokens

    found = placements(prompt_tokens(pipe.tokenizer, prompt))
    placed.extend(p.describe() for p in found)
    if not found:
        warnings.append(NOTHING_TO_PLACE)
        return None
    return placed_latents(pipe, prompt, found, generators, count, height, width, steps, control)


def boxed_latents(pipe, phrases: list[str], boxes: list, generators, height: int, width: int,
                  steps: int, control=None, placed: list | None = None,
                  warnings: list | None = None) -> torch.Tensor | None:
    """For a layout-to-image run with place_objects on: the starting latents (unscaled),
    steered so each phrase's object lands in its box, or None (and a warning) when no
    phrase has a word the model knows. What was placed is added to `placed`."""
    text, found = boxed_phrases(pipe.tokenizer, phrases, boxes)
    found = [p for p in found if p.positions]
    if placed is not None:
        placed.extend(p.describe() for p in found)
    if not found:
        if warnings is not None:
            warnings.append(NO_PHRASE_TO_PLACE)
        return None
    return placed_latents(pipe, text, found, generators, 1, height, width, steps, control,
                          BOX_NUDGES, BOX_STEP)


def record(settings: dict, place_objects: bool, placed: list) -> dict:
    """The settings of a run, with the placement keys only when the option was on (so
    records and recipes from before it stay as they were)."""
    if place_objects:
        settings.update(place_objects=True, placed=placed)
    return settings

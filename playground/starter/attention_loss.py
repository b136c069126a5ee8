"""Teach text2img's cross-attention where each object's words belong.

The Shapes captions say which words describe which object ("a large red circle in the
top left"), and every training scene knows its objects' boxes. So beside the noise
prediction loss, text2img can be asked that the attention each of an object's words gets
lies inside that object's box: for each such token, the share of its attention mass
(over the picture, averaged over heads) that falls outside the box is a loss. The idea
follows token-level attention supervision for compositional text-to-image training
(TokenCompose, Wang et al. 2024); here the boxes come free with the world.

Without it the small model learned colours and shapes through attention spread evenly
over the picture, so position words barely acted (grid cell right 3% of the time) and
its cross-attention maps taught nothing. Inpainting trains with the same loss (its
captions name every object, the mask hides one of them).
"""
from __future__ import annotations

import torch

from .captions import SHAPE_WORDS, SIZE_WORDS
from .world import CELLS, COLOURS

ARTICLES = {"a", "an", "one"}
SIZE_WORD_SET = {w for ws in SIZE_WORDS.values() for w in ws}
SHAPE_WORD_SET = {w for ws in SHAPE_WORDS.values() for w in ws}
CELL_WORD_SET = {w for cell in CELLS for w in cell.split()} | {"center", "middle"}


def object_word_positions(words: list[str]) -> list[list[int]]:
    """For each object phrase in a tokenized caption, in order, the indices of its
    content words (size, colour, shape, cell words; not "a", "in", "the")."""
    groups, i = [], 0
    while i < len(words):
        if words[i] not in ARTICLES:
            i += 1
            continue
        j, group = i + 1, []
        for word_set in (SIZE_WORD_SET, set(COLOURS)):
            if j < len(words) and words[j] in word_set:
                group.append(j)
                j += 1
        if j >= len(words) or words[j] not in SHAPE_WORD_SET:
            i += 1
            continue
        group.append(j)
        j += 1
        if j + 1 < len(words) and words[j] in ("in", "at", "on") and words[j + 1] == "the":
            k = j + 2
            while k < len(words) and words[k] in CELL_WORD_SET:
                group.append(k)
                k += 1
            if k > j + 2:  # a cell phrase, not a background or relation
                j = k
        groups.append(group)
        i = j
    return groups


def box_coverage(box, n: int) -> torch.Tensor:
    """(n, n): the share of each grid cell that `box` (x0, y0, x1, y1 in 0..1) covers."""
    edges = torch.arange(n + 1, dtype=torch.float32) / n

    def along(lo, hi):
        return ((torch.minimum(edges[1:], torch.tensor(hi)) -
                 torch.maximum(edges[:-1], torch.tensor(lo))).clamp_min(0) * n)

    x0, y0, x1, y1 = box
    return along(y0, y1)[:, None] * along(x0, x1)[None, :]


def token_targets(tokenizer, captions: list[str], scenes, n_tokens: int):
    """(boxes, valid): for each sample and token position, the box its attention should
    stay in (as (x0, y0, x1, y1)) and whether that token is supervised at all."""
    boxes = torch.zeros(len(captions), n_tokens, 4)
    valid = torch.zeros(len(captions), n_tokens)
    for b, (text, scene) in enumerate(zip(captions, scenes)):
        groups = object_word_positions(tokenizer.tokenize(text)) if text else []
        if len(groups) != len(scene.objects):
            continue  # not a caption of this scene's objects, one by one: leave it free
        for group, obj in zip(groups, scene.objects):
            for index in group:
                position = index + 1  # after the start token
                if position < n_tokens:
                    boxes[b, position] = torch.tensor(obj.box, dtype=torch.float32)
                    valid[b, position] = 1
    return boxes, valid


def cell_word_mask(tokenizer, captions: list[str], n_tokens: int) -> torch.Tensor:
    """(batch, tokens): 1 at the token positions of the cell words of each caption's object
    phrases ("top", "left" in "a red circle in the top left"), 0 elsewhere."""
    mask = torch.zeros(len(captions), n_tokens)
    for b, text in enumerate(captions):
        words = tokenizer.tokenize(text) if text else []
        for group in object_word_positions(words):
            for index in group:
                if words[index] in CELL_WORD_SET and index + 1 < n_tokens:
                    mask[b, index + 1] = 1  # after the start token
    return mask


def token_objects(tokenizer, captions: list[str], n_tokens: int) -> torch.Tensor:
    """(batch, tokens): the index of the object phrase each content word belongs to, -1
    for every other token (positions after the start token, as in token_targets)."""
    objects = torch.full((len(captions), n_tokens), -1, dtype=torch.long)
    for b, text in enumerate(captions):
        groups = object_word_positions(tokenizer.tokenize(text)) if text else []
        for o, group in enumerate(groups):
            for index in group:
                if index + 1 < n_tokens:
                    objects[b, index + 1] = o
    return objects


def from_sep_on(ids: torch.Tensor, sep_id: int) -> torch.Tensor:
    """(batch, tokens, 1) bool: True from each caption's [SEP] on (the end token and the
    pads, which in the causal text encoder read every word of the caption)."""
    sep = (ids == sep_id).int().argmax(1)
    return (torch.arange(ids.shape[1], device=ids.device)[None] >= sep[:, None])[..., None]


def coverage_maps(boxes: torch.Tensor, valid: torch.Tensor, n: int) -> torch.Tensor:
    """(batch, slots, n*n) coverage of each valid slot's box (a token's or an object's) on an
    n x n grid."""
    out = torch.zeros(*boxes.shape[:2], n * n)
    for b, t in valid.nonzero().tolist():
        out[b, t] = box_coverage(boxes[b, t].tolist(), n).flatten()
    return out


class AttentionRecords:
    """Each cross-attention layer's head-averaged weights (batch, pixels, tokens) of one
    forward pass, gradients kept; read through teach.attention's explicit processor."""

    def __init__(self):
        self.records: list[torch.Tensor] = []

    def recording(self) -> bool:
        return True

    def add(self, probs: torch.Tensor, batch: int, heads: int) -> None:
        self.records.append(probs.view(batch, heads, *probs.shape[1:]).mean(1))


def record_cross_attention(unet) -> AttentionRecords:
    """Set a recorder on every cross-attention layer of `unet` (training copy only)."""
    from ..teach.attention import with_recording_processors

    records = AttentionRecords()
    with_recording_processors(unet, records)
    return records


def grid_side(probs: torch.Tensor) -> int:
    """The side of the square grid of pixels that a (batch, pixels, tokens) record covers."""
    return round(probs.shape[1] ** 0.5)


def outside_box_loss(records: list[torch.Tensor], boxes: torch.Tensor,
                     valid: torch.Tensor, power: float = 1,
                     max_grid: int | None = None) -> torch.Tensor:
    """Mean, over layers and supervised tokens, of the share of a token's attention mass
    that falls outside its object's box (raised to `power`); only the layers whose grid is
    at most `max_grid` on a side when it is given."""
    if max_grid is not None:
        records = [probs for probs in records if grid_side(probs) <= max_grid]
    if not valid.any():
        return records[0].sum() * 0
    losses, by_size = [], {}
    for probs in records:
        n = grid_side(probs)
        if n not in by_size:
            by_size[n] = coverage_maps(boxes, valid, n).to(probs.device)
        mass = probs.transpose(1, 2)  # (batch, tokens, pixels)
        inside = (mass * by_size[n]).sum(-1) / mass.sum(-1).clamp_min(1e-8)
        v = valid.to(probs.device)
        losses.append((((1 - inside) ** power) * v).sum() / v.sum())
    return torch.stack(losses).mean()


def cell_share_in_box(records: list[torch.Tensor], boxes: torch.Tensor, valid: torch.Tensor,
                      cell_words: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """Mean, over layers and objects whose phrase names a cell, of the cell words' share of
    the attention that the phrase's words get inside the object's box. When it is high,
    the cell words crowd the colour, shape and size words out of the box's attention."""
    usable = valid * (objects >= 0)
    if not (usable * cell_words).any():
        return records[0].sum() * 0
    device = records[0].device
    slots = objects.clamp_min(0) + objects.shape[1] * torch.arange(len(objects))[:, None]
    idx, v = slots.flatten().to(device), usable.flatten().to(device)
    c = cell_words.flatten().to(device)

    def per_object(values):  # sums of (batch * tokens) values by object slot
        return torch.zeros(slots.numel(), device=device).index_add(0, idx, values)

    named = per_object(v * c) > 0
    losses, by_size = [], {}
    for probs in records:
        n = grid_side(probs)
        if n not in by_size:
            by_size[n] = coverage_maps(boxes, valid, n).to(device)
        in_box = (probs.transpose(1, 2) * by_size[n]).sum(-1).flatten() * v
        cell, phrase = per_object(in_box * c), per_object(in_box)
        losses.append((cell[named] / phrase[named].clamp_min(1e-8)).mean())
    return torch.stack(losses).mean()


class GroundingAttention:
    """The plain self-attention of a GLIGEN gated layer (its "fuser"), written out so the
    weights of the picture's tokens over the object tokens can be read. The layer attends
    over [picture tokens; `n_objects` object tokens] (diffusers' GatedSelfAttentionDense)."""

    def __init__(self, records: AttentionRecords, n_objects: int):
        self.records, self.n_objects = records, n_objects

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        pixels = hidden_states.shape[1] - self.n_objects
        self.records.add(probs[:, :pixels, pixels:], batch, attn.heads)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))


def record_grounding_attention(unet, n_objects: int) -> AttentionRecords:
    """Set a recorder on every gated layer's self-attention of a GLIGEN `unet` (training
    copy only): (batch, pixels, objects) weights of the picture's tokens over the boxes'."""
    records = AttentionRecords()
    processors = {}
    for name, processor in unet.attn_processors.items():
        is_fuser = ".fuser.attn." in name
        processors[name] = GroundingAttention(records, n_objects) if is_fuser else processor
    unet.set_attn_processor(processors)
    return records


def object_box_targets(tokenizer, captions: list[str], scenes, n_objects: int):
    """(boxes, valid): each caption's objects' boxes, (batch, n_objects, 4), in the order its
    phrases name them, and which are there (captions that do not name their scene's objects
    one by one are left out, as in token_targets)."""
    boxes = torch.zeros(len(captions), n_objects, 4)
    valid = torch.zeros(len(captions), n_objects)
    for b, (text, scene) in enumerate(zip(captions, scenes)):
        groups = object_word_positions(tokenizer.tokenize(text)) if text else []
        if len(groups) != len(scene.objects):
            continue
        for o, obj in enumerate(scene.objects[:n_objects]):
            boxes[b, o] = torch.tensor(obj.box, dtype=torch.float32)
            valid[b, o] = 1
    return boxes, valid


def foreign_share_in_boxes(records: list[torch.Tensor], boxes: torch.Tensor, valid: torch.Tensor,
                           objects: torch.Tensor, tail: torch.Tensor | None = None) -> torch.Tensor:
    """Mean, over layers and objects, of the share of the attention inside an object's box that
    goes to anything but that object's own words; with `tail` (a (batch, tokens) mask), only
    the share on another object's words or on the tail ([SEP] and the pads, which in the
    causal text encoder read every word, so the looks of all the objects mix there). Low,
    each box reads its own object's words, as regional prompts make it (tasks/regions.py)."""
    if not valid.any():
        return records[0].sum() * 0
    device = records[0].device
    o = torch.arange(boxes.shape[1])
    own = objects[:, None, :] == o[None, :, None]  # (batch, objects, tokens)
    if tail is None:
        foreign = ~own
    else:
        foreign = ((objects[:, None, :] >= 0) & ~own) | tail.bool()[:, None, :]
    foreign = foreign.float().to(device)
    v = valid.to(device)
    losses, by_size = [], {}
    for probs in records:
        n = grid_side(probs)
        if n not in by_size:
            by_size[n] = coverage_maps(boxes, valid, n).to(device)  # (batch, objects, pixels)
        mass = torch.einsum("bop,bpt->bot", by_size[n], probs)  # attention from inside each box
        share = (mass * foreign).sum(-1) / mass.sum(-1).clamp_min(1e-8)
        losses.append((share * v).sum() / v.sum())
    return torch.stack(losses).mean()

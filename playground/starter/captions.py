"""Templated captions for Shapes scenes, and a parser that reads them back.

A caption may leave out any attribute; the parser returns None for what was left out.
"""
from __future__ import annotations

import random
import re

from .world import CELLS, COLOURS, SHAPES, SIZE_NAMES, Scene

SIZE_WORDS = {"small": ["small", "little"], "medium": ["medium"], "large": ["large", "big"]}
SHAPE_WORDS = {"circle": ["circle", "disc"], "square": ["square"], "triangle": ["triangle"]}
RELATIONS = ["above", "below", "to the left of", "to the right of"]
NUMBER_WORDS = {2: "two", 3: "three"}

_SIZE_OF_WORD = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
_SHAPE_OF_WORD = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}


def _cell_phrase(rng: random.Random, cell: str) -> str:
    if cell in ("left", "right"):
        return rng.choice([f"on the {cell}", f"in the {cell}"])
    if cell == "centre":
        return rng.choice(["in the centre", "in the center", "in the middle"])
    return rng.choice([f"in the {cell}", f"at the {cell}"])


def object_phrase(rng: random.Random, obj, keep=("size", "colour", "cell"),
                  with_cell: bool = True, article: bool = True) -> str:
    """`a [size] [colour] shape [cell phrase]` ("an" before "orange"); attributes outside
    `keep` are left out."""
    words = []
    if "size" in keep:
        words.append(rng.choice(SIZE_WORDS[obj.size]))
    if "colour" in keep:
        words.append(obj.colour)
    words.append(rng.choice(SHAPE_WORDS[obj.shape]))
    if article:
        words.insert(0, indefinite_article(words[0]))
    if with_cell and "cell" in keep:
        words.append(_cell_phrase(rng, obj.cell))
    return " ".join(words)


def indefinite_article(word: str) -> str:
    """"an" before a vowel ("an orange"), "a" otherwise; the world has no vowel-sound
    exceptions ("a one", "an hour") among its words."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def with_article(phrase: str) -> str:
    """A phrase as an object phrase of a caption: "orange circle" -> "an orange circle";
    a phrase that has its article already is kept as written."""
    if phrase.split()[:1] in (["a"], ["an"], ["the"], ["one"]):
        return phrase
    return f"{indefinite_article(phrase)} {phrase}"


def _relation(rng: random.Random, a, b) -> str | None:
    (ax, ay), (bx, by) = a.centre, b.centre
    holds = []
    if ay < by - 0.12:
        holds.append("above")
    if ay > by + 0.12:
        holds.append("below")
    if ax < bx - 0.12:
        holds.append("to the left of")
    if ax > bx + 0.12:
        holds.append("to the right of")
    return rng.choice(holds) if holds else None


def _background_phrase(rng: random.Random, colour: str) -> str:
    article = indefinite_article(colour)
    return rng.choice([f"on {article} {colour} background", f"with {article} {colour} background"])


def caption(scene: Scene, rng: random.Random, drop: float = 0.25) -> str:
    """A caption for `scene`; each of size, colour and cell is left out with probability `drop`."""
    def kept():
        return tuple(a for a in ("size", "colour", "cell") if rng.random() >= drop)

    objs = scene.objects
    if len(objs) == 1:
        text = object_phrase(rng, objs[0], kept())
    elif len(objs) == 2 and rng.random() < 0.5 and _relation(rng, *objs):
        rel = _relation(rng, *objs)
        text = f"{object_phrase(rng, objs[0], kept(), with_cell=False)} {rel} " \
               f"{object_phrase(rng, objs[1], kept(), with_cell=False)}"
    else:
        parts = [object_phrase(rng, o, kept()) for o in objs]
        listed = ", ".join(parts[:-1]) + " and " + parts[-1]
        text = f"{NUMBER_WORDS[len(objs)]} objects: {listed}"
    if scene.background != "white" or rng.random() < 0.2:
        if rng.random() >= drop / 2:
            text += " " + _background_phrase(rng, scene.background)
    return text


_CELL_RE = "|".join(sorted([c for c in CELLS] + ["center", "middle"], key=len, reverse=True))
_OBJ_RE = re.compile(
    r"\b(?:an?|one)\s+(?:(?P<size>" + "|".join(_SIZE_OF_WORD) + r")\s+)?"
    r"(?:(?P<colour>" + "|".join(COLOURS) + r")\s+)?"
    r"(?P<shape>" + "|".join(_SHAPE_OF_WORD) + r")"
    r"(?:\s+(?:in|at|on)\s+the\s+(?P<cell>" + _CELL_RE + r"))?")
_BG_RE = re.compile(r"(?:on|with)\s+an?\s+(?P<bg>" + "|".join(COLOURS) + r")\s+background")
_REL_RE = re.compile(r"\b(above|below|to the left of|to the right of)\b")


def parse(text: str) -> dict:
    """Read a caption back: objects (size, colour, shape, cell; None where left out),
    background (None if not said) and the relation between two objects (or None)."""
    text = text.lower().strip()
    bg = _BG_RE.search(text)
    body = _BG_RE.sub("", text)
    objects = []
    for m in _OBJ_RE.finditer(body):
        cell = m.group("cell")
        cell = {"center": "centre", "middle": "centre"}.get(cell, cell)
        objects.append({
            "size": _SIZE_OF_WORD.get(m.group("size")),
            "colour": m.group("colour"),
            "shape": _SHAPE_OF_WORD[m.group("shape")],
            "cell": cell,
        })
    rel = _REL_RE.search(body)
    return {"objects": objects, "background": bg.group("bg") if bg else None,
            "relation": rel.group(1) if rel and len(objects) == 2 and "objects:" not in body else None}


def layout_phrase(obj, rng: random.Random | None = None) -> str:
    """The GLIGEN phrase for one object: `[size] colour shape`."""
    rng = rng or random.Random(0)
    size = rng.choice(SIZE_WORDS[obj.size]) + " " if rng.random() < 0.5 else ""
    return f"{size}{obj.colour} {rng.choice(SHAPE_WORDS[obj.shape])}"


def vocabulary() -> list[str]:
    """Every word the captions can use (the tokenizer's known words)."""
    words = set()
    for ws in list(SIZE_WORDS.values()) + list(SHAPE_WORDS.values()):
        words.update(ws)
    words.update(COLOURS)
    for c in CELLS + ["center", "middle"]:
        words.update(c.split())
    for r in RELATIONS:
        words.update(r.split())
    words.update(["a", "an", "one", "two", "three", "objects", "in", "at", "on", "the",
                  "with", "background", "and", ",", ":", "of", "picture", "image", "photo",
                  "shape", "shapes"])
    return sorted(words)


__all__ = ["caption", "parse", "object_phrase", "with_article", "layout_phrase", "vocabulary",
           "SIZE_NAMES", "SHAPES", "COLOURS", "RELATIONS"]

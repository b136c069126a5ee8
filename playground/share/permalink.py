"""Permalinks: a tab and its settings as URL query parameters, readable and editable by
hand, holding the whole recipe (so a link never expires):

    ?tab=layout&model=starter&revision=&scheduler=DDIM&steps=20&guidance=7.5&seed=5
     &prompt=a+red+circle&box=a+red+circle:0.1,0.1,0.45,0.45&diffusers=0.42.1&torch=...

Each box is `phrase:x0,y0,x1,y1` (fractions of the picture), one `box` per phrase in
order. The library versions say what the link was made with; opening the link on other
versions restores the settings and says that pixels may differ.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from ..errors import BadInput
from ..run import versions as current_versions
from .recipe import COMMON_KEYS, TAB_OF_TASK, TASK_KEYS, TASK_OF_TAB

VERSION_KEYS = ("python", "torch", "diffusers", "transformers", "options")


def link_query(task: str, settings: dict, *, revision: str | None = None,
               versions: dict | None = None) -> str:
    """'?tab=...&...' for `task` (or a tab name) with these settings (keys as in a
    settings record; only the ones `task` uses are written)."""
    task = TASK_OF_TAB.get(task, task)
    if task not in TASK_KEYS:
        raise BadInput(f"unknown task {task!r}; one of: {', '.join(TASK_KEYS)}")
    pairs = [("tab", TAB_OF_TASK[task])]
    for key in COMMON_KEYS + TASK_KEYS[task]:
        value = settings.get(key)
        if value is None:
            continue
        if key == "phrases":
            continue  # written with their boxes
        if key == "boxes":
            phrases = settings.get("phrases") or [""] * len(value)
            pairs += [("box", f"{phrase}:{','.join(_number(v) for v in box)}")
                      for phrase, box in zip(phrases, value)]
        else:
            pairs.append((key, _number(value) if isinstance(value, float) else str(value)))
    revision = settings.get("revision") if revision is None else revision
    pairs.append(("revision", revision or ""))
    recorded = versions if versions is not None else settings.get("versions") or current_versions()
    pairs += [(name, str(recorded[name])) for name in VERSION_KEYS if name in recorded]
    return "?" + urlencode(pairs)


def read_query(query: str) -> dict | None:
    """A settings record (with "task", "revision", "versions") from a link's query
    string, or None when the query names no tab (a plain visit)."""
    pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    values = dict(pairs)
    tab = values.get("tab")
    if tab is None:
        return None
    if tab not in TASK_OF_TAB:
        raise BadInput(f"the link names an unknown tab {tab!r}; one of: "
                       f"{', '.join(TASK_OF_TAB)}")
    record: dict = {"task": TASK_OF_TAB[tab]}
    boxes = [value for key, value in pairs if key == "box"]
    if boxes:
        record["phrases"], record["boxes"] = _read_boxes(boxes)
    versions = {name: values[name] for name in VERSION_KEYS if name in values}
    if versions:
        record["versions"] = versions
    for key, value in values.items():
        if key in ("tab", "box") or key in VERSION_KEYS:
            continue
        if key == "revision":
            record["revision"] = value or None
            continue
        record[key] = value
    return record


def _read_boxes(texts: list[str]) -> tuple[list[str], list]:
    phrases, boxes = [], []
    for text in texts:
        phrase, _, numbers = text.rpartition(":")
        phrases.append(phrase)
        try:
            boxes.append([float(v) for v in numbers.split(",")])
        except ValueError:
            raise BadInput(f"the link's box {text!r} is not phrase:x0,y0,x1,y1") from None
    return phrases, boxes


def _number(value) -> str:
    """Shortest text that reads back as the same number (7.5 not 7.50000)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value) if isinstance(value, float) else str(value)

"""A recipe: the settings of one picture that can be set again, whatever brought them
(our PNG chunk, an AUTOMATIC1111 `parameters` line, a permalink, the history), and
the `Playground` call they make.

Settings records hold two kinds of keys: what the user chooses (prompt, seed, boxes,
...) and what happened (seconds, device, versions, warnings, ...). Only the first kind
is restored; the second is compared with this app to say why pixels could differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BadInput
from ..run import MAX_SEED, OPTIONS_CHANGES, OPTIONS_REVISION, versions as current_versions
from ..tasks.layout_to_image import EARLIER_GROUNDING

TASK_OF_TAB = {"t2i": "text_to_image", "layout": "layout_to_image", "inpaint": "inpaint",
               "upscale": "upscale"}
TAB_OF_TASK = {task: tab for tab, task in TASK_OF_TAB.items()}
METHODS = {"text_to_image": "text_to_image", "layout_to_image": "layout_to_image",
           "inpaint": "inpaint", "upscale": "upscale"}

COMMON_KEYS = ("model", "prompt", "negative_prompt", "scheduler", "steps", "guidance", "seed")
TASK_KEYS = {"text_to_image": ("width", "height", "num_images", "place_objects", "colour_hints",
                               "regional_prompts", "compose_objects"),
             "layout_to_image": ("phrases", "boxes", "grounding", "place_objects",
                                 "regional_prompts", "colour_hints"),
             "inpaint": ("strength", "focus_on_mask"),
             "upscale": ("noise_level",)}
# What a run records about itself; never set back, never reported as ignored.
RECORD_KEYS = ("task", "revision", "source", "seconds", "device", "dtype", "versions",
               "warnings", "index", "num_images", "input_size", "width", "height", "placed",
               "focused_prompt", "composed")


def _text(value) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


def _whole(value) -> int:
    number = float(value)
    if number != int(number):
        raise ValueError("not a whole number")
    return int(number)


def _seed(value) -> int:
    seed = _whole(value)
    if seed != -1 and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"not -1 or 0..{MAX_SEED}")
    return seed


def _phrases(value) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValueError("not a list of phrases")
    return list(value)


def _boxes(value) -> list[list[float]]:
    boxes = [[float(v) for v in box] for box in value]
    if not all(len(box) == 4 for box in boxes):
        raise ValueError("each box needs 4 numbers x0, y0, x1, y1")
    return boxes


def _flag(value) -> bool:
    """True or False, also as a link writes them ("True"/"False", any case)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError("not true or false")
    return value


def _grounding(value) -> float:
    share = float(value)
    if not 0 <= share <= 1:
        raise ValueError("not a share of the steps from 0 to 1")
    return share


def _scheduler(value) -> str | None:
    return None if value in (None, "") else _text(value)


READERS = {"model": _text, "prompt": _text, "negative_prompt": _text, "scheduler": _scheduler,
           "steps": _whole, "guidance": float, "seed": _seed, "width": _whole, "height": _whole,
           "num_images": _whole, "phrases": _phrases, "boxes": _boxes, "strength": float,
           "noise_level": _whole, "grounding": _grounding, "place_objects": _flag,
           "regional_prompts": _flag, "colour_hints": _flag, "focus_on_mask": _flag,
           "compose_objects": _flag}


@dataclass
class Recipe:
    """Settings to set again for `task`, what was ignored (with why), and notes on what
    could make the pixels differ here."""
    task: str
    settings: dict = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origin: str = "playground"

    @property
    def tab(self) -> str:
        return TAB_OF_TASK[self.task]

    def message(self) -> str:
        """One paragraph for the user: what was restored, ignored and worth knowing."""
        parts = [f"Restored {len(self.settings)} settings from the {self.origin} "
                 f"({', '.join(self.settings) or 'none'}) into {self.tab}."]
        if self.ignored:
            parts.append("Ignored: " + "; ".join(self.ignored) + ".")
        parts += self.notes
        return " ".join(parts)


def wanted_keys(task: str) -> tuple[str, ...]:
    return COMMON_KEYS + TASK_KEYS[task]


def restorable(raw: dict, task: str | None = None, *, pg=None,
               origin: str = "playground") -> Recipe:
    """The recipe in a settings record (ours, or one translated from elsewhere).

    task: where to restore; default: the record's own "task", else text_to_image.
    pg: a `Playground`; given, models and schedulers it does not serve are ignored,
        and differences in revision, versions, device and precision become notes."""
    task = task or raw.get("task") or "text_to_image"
    if task not in TASK_KEYS:
        raise BadInput(f"unknown task {task!r}; one of: {', '.join(TASK_KEYS)}")
    recipe = Recipe(task, origin=origin)
    wanted = wanted_keys(task)
    for key, value in raw.items():
        if key in wanted:
            if key == "num_images" and "index" in raw:
                continue  # one picture of a batch: its own seed makes it alone
            try:
                recipe.settings[key] = READERS[key](value)
            except (TypeError, ValueError) as error:
                recipe.ignored.append(f"{key} = {value!r} ({error})")
        elif key not in RECORD_KEYS:
            recipe.ignored.append(f"{key} (not a setting of {TAB_OF_TASK[task]})")
    if task == "layout_to_image" and "grounding" not in raw and made_before_grounding(raw):
        recipe.settings["grounding"] = EARLIER_GROUNDING
        recipe.notes.append(f"Made before layout recorded grounding: set to {EARLIER_GROUNDING}, "
                            "the share of the steps every layout picture's boxes steered then.")
    if task == "inpaint" and "focus_on_mask" not in raw and made_before_grounding(raw):
        recipe.settings["focus_on_mask"] = False
        recipe.notes.append("Made before inpainting could focus a prompt on the mask: "
                            "focus_on_mask set off, as every inpainting picture was made then.")
    if pg is not None:
        _check_against(pg, raw, recipe)
    return recipe


def made_before_grounding(raw: dict) -> bool:
    """A record of ours (it says which versions made it) without a setting added later
    (layout's grounding, inpainting's focus_on_mask): made before the setting existed,
    so it gets the value every picture was made with then (grounding 0.3, no focus). A
    link written by hand, without versions, takes the default instead."""
    return isinstance(raw.get("versions"), dict)


def _check_against(pg, raw: dict, recipe: Recipe) -> None:
    settings, task = recipe.settings, recipe.task
    model = settings.get("model")
    served = pg.models(task)
    if model is not None and model not in served:
        recipe.ignored.append(f"model {model!r} (not served here for {task}; "
                              f"models: {', '.join(served)})")
        del settings["model"]
        model = None
    model = model or (served[0] if served else None)
    scheduler = settings.get("scheduler")
    if model and scheduler:
        allowed = pg.schedulers(model, task)
        if scheduler not in allowed:
            recipe.ignored.append(f"scheduler {scheduler!r} (not offered for {model}: "
                                  f"{', '.join(allowed)})")
            del settings["scheduler"]
    if model and "revision" in raw:
        here = pg.registry.entry(model).sources[task].revision
        if raw["revision"] != here:
            recipe.notes.append(f"Made with revision {raw['revision']} of {model}; this app "
                                f"loads {here or 'the default revision'}: pixels may differ.")
    recipe.notes += version_notes(raw.get("versions")) + options_note(raw)
    if model and raw.get("device") and raw.get("dtype"):
        device, dtype = pg.registry.device_and_dtype(model)
        dtype = str(dtype).replace("torch.", "")
        if (raw["device"], raw["dtype"]) != (device, dtype):
            recipe.notes.append(f"Made on {raw['device']} in {raw['dtype']}; this app runs "
                                f"{model} on {device} in {dtype}: pixels will differ slightly.")


def version_notes(recorded) -> list[str]:
    """A note per library whose recorded version differs from the one installed."""
    if not isinstance(recorded, dict):
        return []
    here = current_versions()
    differ = [f"{name} {recorded[name]} (here {here[name]})" for name in here
              if name != "options" and name in recorded and str(recorded[name]) != here[name]]
    if not differ:
        return []
    return ["Made with " + ", ".join(differ) + ": pixels may differ."]


def options_note(raw: dict) -> list[str]:
    """A note when the run used place_objects, colour_hints or regional_prompts as they
    were before this app's revision of them (records from before revision 2 have none)."""
    def on(value) -> bool:
        try:
            return _flag(value)
        except ValueError:
            return False  # restorable reports the bad value itself

    used = [flag for flag in ("place_objects", "colour_hints", "regional_prompts")
            if on(raw.get(flag, False))]
    versions = raw.get("versions")
    made = str(versions.get("options", "1")) if isinstance(versions, dict) else None
    if not used or made is None or made == OPTIONS_REVISION:
        return []
    since = [f"in {n}, {change}" for n, change in OPTIONS_CHANGES.items()
             if not made.isdigit() or int(n) > int(made)]
    return [f"Made with revision {made} of {', '.join(used)} (here {OPTIONS_REVISION}; "
            f"{'; '.join(since)}): pixels may differ."]


def call_arguments(settings: dict, task: str | None = None) -> tuple[str, dict]:
    """(Playground method name, keyword arguments) that make the picture again.
    Pictures given as input (inpaint's image and mask, upscale's image) are not part of
    the settings: pass them to `reproduce`."""
    recipe = settings if isinstance(settings, Recipe) else restorable(settings, task)
    kwargs = dict(recipe.settings)
    if recipe.task == "text_to_image":
        kwargs.setdefault("num_images", 1)  # a batch's picture: its record's seed makes it alone
    return METHODS[recipe.task], kwargs


def reproduce(pg, settings: dict, *, image=None, mask=None, control=None):
    """Run `pg` again with these settings (from `settings_of`, a PNG or a link).
    inpaint needs the same `image` and `mask`; upscale the same `image`."""
    method, kwargs = call_arguments(settings)
    if kwargs.get("seed", -1) == -1:
        raise BadInput("these settings hold no seed (-1 = random): the picture cannot be "
                       "made again exactly")
    if method == "inpaint":
        kwargs.update(image=image, mask=mask)
    elif method == "upscale":
        kwargs.update(image=image)
    return getattr(pg, method)(**kwargs, control=control)

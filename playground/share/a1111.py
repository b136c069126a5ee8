"""The AUTOMATIC1111 `parameters` text: the one-line summary that AUTOMATIC1111 writes
into its PNGs and that tools around it (image viewers, Civitai, ComfyUI loaders) read:

    a red circle
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: starter

The prompt (maybe several lines), an optional "Negative prompt:" part, then one line of
`Key: value` pairs; values holding a comma, colon or newline are JSON-quoted.
Our own keys (Task, Phrases, Boxes, Noise level) ride along the same way.
"""
from __future__ import annotations

import json
import re

# Our scheduler names -> AUTOMATIC1111's sampler names, where they differ.
SAMPLER_OF_SCHEDULER = {"PNDM": "PLMS"}
SCHEDULER_OF_SAMPLER = {v: k for k, v in SAMPLER_OF_SCHEDULER.items()}
NEGATIVE = "Negative prompt:"
# One `Key: value` pair: a key of words, then a JSON-quoted string or text up to a comma.
PAIR = re.compile(r'\s*(\w[\w \-/+().]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
MIN_PAIRS = 3  # a last line with fewer pairs is taken as part of the prompt


def quote(value) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:\n"') else text


def to_parameters(settings: dict) -> str:
    """The `parameters` text of a playground settings record."""
    lines = [settings.get("prompt", "")]
    if settings.get("negative_prompt"):
        lines.append(f"{NEGATIVE} {settings['negative_prompt']}")
    scheduler = settings.get("scheduler")
    pairs = [("Steps", settings.get("steps")),
             ("Sampler", SAMPLER_OF_SCHEDULER.get(scheduler, scheduler)),
             ("CFG scale", settings.get("guidance")), ("Seed", settings.get("seed")),
             ("Size", f"{settings.get('width')}x{settings.get('height')}"),
             ("Model", settings.get("model")), ("Task", settings.get("task"))]
    if "strength" in settings:
        pairs.append(("Denoising strength", settings["strength"]))
    if "noise_level" in settings:
        pairs.append(("Noise level", settings["noise_level"]))
    if "phrases" in settings:
        pairs += [("Phrases", json.dumps(settings["phrases"])),
                  ("Boxes", json.dumps(settings["boxes"]))]
    versions = settings.get("versions") or {}
    if versions.get("diffusers"):
        pairs.append(("Version", f"diffusers {versions['diffusers']}"))
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in pairs
                           if value is not None))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """`parameters` text -> {"Prompt": ..., "Negative prompt": ..., key: value text, ...}."""
    lines = text.strip().replace("\r\n", "\n").split("\n")
    pairs = {}
    if lines:
        found = PAIR.findall(lines[-1])
        if len(found) >= MIN_PAIRS:
            pairs = {key.strip(): unquote(value.strip()) for key, value in found}
            lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE):].strip()
        (negative if in_negative else prompt).append(line)
    return {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip(),
            **pairs}


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
    return value


def to_settings(parsed: dict) -> dict:
    """Parsed `parameters` -> a settings record in our keys; keys we have no use for keep
    their AUTOMATIC1111 names (so the user is told they were ignored)."""
    parsed = dict(parsed)
    settings = {"prompt": parsed.pop("Prompt", ""),
                "negative_prompt": parsed.pop("Negative prompt", "")}
    plain = {"Steps": "steps", "CFG scale": "guidance", "Seed": "seed", "Model": "model",
             "Task": "task", "Denoising strength": "strength", "Noise level": "noise_level"}
    for key, ours in plain.items():
        if key in parsed:
            settings[ours] = parsed.pop(key)
    if "Sampler" in parsed:
        settings["scheduler"] = scheduler_name(parsed.pop("Sampler"),
                                               parsed.pop("Schedule type", "Automatic"))
    if "Size" in parsed:
        width, _, height = parsed.pop("Size").partition("x")
        settings["width"], settings["height"] = width, height
    for key, ours in (("Phrases", "phrases"), ("Boxes", "boxes")):
        if key in parsed:
            try:
                settings[ours] = json.loads(parsed.pop(key))
            except json.JSONDecodeError:
                settings[ours] = None  # reported as unreadable
    parsed.pop("Version", None)  # the writer's version: not a setting
    settings.update(parsed)
    return settings


def scheduler_name(sampler: str, schedule_type: str = "Automatic") -> str:
    """AUTOMATIC1111 sampler (+ schedule type, since its 1.9) -> our catalogue name."""
    name = SCHEDULER_OF_SAMPLER.get(sampler, sampler)
    if schedule_type and schedule_type not in ("Automatic", "Uniform"):
        name = f"{name} {schedule_type}"
    return name

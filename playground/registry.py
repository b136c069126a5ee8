"""The model registry: which models serve which tasks, loaded lazily and shared.

A model entry has a name and, per task it serves, a source: a hub id ("owner/name",
optionally at a revision) or a local diffusers folder. The starter models are the entry
"starter", one folder per task under playground/starter/weights/.

Loading reads the source's model_index.json and loads each component the task's
pipeline needs (vae, text_encoder, tokenizer, unet, scheduler, ...) with
`from_pretrained(source, subfolder=..., revision=..., use_safetensors=True)`. Loaded
components are cached by where their files really are (realpath of a local subfolder,
or hub id + revision + subfolder) and by dtype and device, so the starter tasks, whose
folders link to one VAE and tokenizer (and, but for text-to-image's own, one text
encoder), hold them once in memory, and a hub model that
serves text-to-image and inpainting from one repo shares everything (as `from_pipe`
would). Nothing is ever loaded from pickles or with remote code.

A memory budget (bytes) bounds the weights held: loading past it evicts the least
recently used pipelines, and frees their components once no remaining pipeline uses them.

Adding models: a flag string (`parse_model_flag`) or a TOML/JSON file
(`read_models_file`); see their docstrings for the formats.
"""
from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import re
import struct
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .errors import BadInput, ModelError

TASKS = ("text_to_image", "layout_to_image", "inpaint", "upscale")
STARTER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "starter", "weights")
STARTER_FOLDERS = {"text_to_image": "text2img", "layout_to_image": "layout",
                   "inpaint": "inpaint", "upscale": "upscale"}
TASK_ALIASES = {"t2i": "text_to_image", "text2img": "text_to_image", "layout": "layout_to_image",
                "gligen": "layout_to_image", "inpainting": "inpaint", "upscaling": "upscale",
                "sr": "upscale", "super_resolution": "upscale"}

PIPELINES = {"text_to_image": "StableDiffusionPipeline",
             "layout_to_image": "StableDiffusionGLIGENPipeline",
             "inpaint": "StableDiffusionInpaintPipeline",
             "upscale": "StableDiffusionUpscalePipeline"}
# Tasks a source can serve, by the pipeline class in its model_index.json. A plain SD
# model also inpaints (diffusers runs 4-channel UNets in its inpainting pipeline).
TASKS_OF_PIPELINE = {"StableDiffusionPipeline": ("text_to_image", "inpaint"),
                     "StableDiffusionGLIGENPipeline": ("layout_to_image",),
                     "StableDiffusionInpaintPipeline": ("inpaint",),
                     "StableDiffusionUpscalePipeline": ("upscale",)}
UNET_IN_CHANNELS = {"text_to_image": (4,), "layout_to_image": (4,), "inpaint": (9, 4),
                    "upscale": (7,)}
# Revisions that hold safetensors for hub ids whose main branch has only pickles.
KNOWN_REVISIONS = {"masterful/gligen-1-4-generation-text-box": "refs/pr/2"}
# Components our pipelines can run without; never loaded (the safety checker included:
# this is a playground for one's own machine, and it is not in the starter models).
OPTIONAL_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder", "watermarker")
ALLOWED_LIBRARIES = ("diffusers", "transformers")

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+/-]{0,99}$")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The starter models' default guidance, measured with `python -m playground.starter.evaluate
# --tasks T --guidance G` (MODEL_CARD.md, "Guidance"): text-to-image draws shapes better below
# 7.5 on its early weights; on the latest, 7.5 reads one object a little better but the
# regional prompts, tuned at 3, get fewer two-object prompts right there; the upscaler
# scores the same at every guidance (it was trained without captions), so 1 (no
# unconditional pass) makes it faster (3.6 s instead of 6.2 s on one CPU thread).
STARTER_OPTIONS = {"max_boxes": 3, "upscale_input_size": (64, 64),
                   "guidance": {"text_to_image": 3.0, "layout_to_image": 7.5, "inpaint": 3.0,
                                "upscale": 1.0},
                   # the starter upscaler's pictures come closest to the truth at 3-4 Euler
                   # steps (MODEL_CARD.md, Super-resolution): more steps add made-up detail
                   "steps": {"upscale": 4},
                   # the starter layout model keeps more attributes with its boxes steering
                   # every step than diffusers' 0.3 (MODEL_CARD.md, "Grounding fraction")
                   "grounding": 1.0}
DEFAULT_MAX_BOXES = 30  # what diffusers' GLIGEN pipeline takes
DEFAULT_GUIDANCE = 7.5  # diffusers' default for the text-guided pipelines
DEFAULT_STEPS = 20
DEFAULT_GROUNDING = 0.3  # diffusers' gligen_scheduled_sampling_beta: boxes steer 30% of the steps
PER_TASK_DEFAULTS = ("guidance", "steps")  # model options: one number, or {task: number}


# ---------------------------------------------------------------- entries

@dataclass(frozen=True)
class Source:
    location: str            # hub id, or an absolute local folder
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return os.path.isabs(self.location)

    def describe(self) -> str:
        return self.location + (f"@{self.revision}" if self.revision else "")


@dataclass
class ModelEntry:
    """A named model: per task, where its pipeline comes from.

    dtype/device: None = the registry's choice. options: max_boxes (layout),
    upscale_input_size ((w, h) the upscaler's input is resized to, or None), guidance and
    steps (the default guidance scale and step count: one number, or {task: number}),
    grounding (layout: the share of the steps its boxes steer, 0..1)."""
    name: str
    sources: dict[str, Source]
    dtype: str | None = None
    device: str | None = None
    options: dict = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if t in self.sources)


def starter_entry() -> ModelEntry:
    return ModelEntry("starter", {t: Source(os.path.join(STARTER_DIR, f))
                                  for t, f in STARTER_FOLDERS.items()},
                      options=dict(STARTER_OPTIONS))


def task_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = TASK_ALIASES.get(key, key)
    if key not in TASKS:
        raise BadInput(f"unknown task {name!r}; tasks are: {', '.join(TASKS)}")
    return key


def make_entry(name: str | None, source: str, tasks=None, revision: str | None = None,
               dtype: str | None = None, device: str | None = None, base_dir: str = ".",
               **options) -> ModelEntry:
    """One entry from its parts; `source` is "starter", a hub id or a local folder
    (relative folders are taken from `base_dir`). Tasks default to what the source's
    pipeline class serves (local) or to the known hub ids' tasks."""
    if dtype is not None and dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}; use one of: float32, float16, bfloat16")
    if device is not None and not re.match(r"^(cpu|mps|cuda(:\d+)?)$", device):
        raise BadInput(f"unknown device {device!r}; use cpu, mps, cuda or cuda:N")
    for key in PER_TASK_DEFAULTS:
        if key in options:
            options[key] = _checked_default_option(key, options[key])
    boxes = options.get("max_boxes")
    if boxes is not None and (isinstance(boxes, bool) or not isinstance(boxes, int)
                              or not 1 <= boxes <= DEFAULT_MAX_BOXES):
        raise BadInput(f"max_boxes must be a whole number from 1 to {DEFAULT_MAX_BOXES} "
                       f"(what diffusers' GLIGEN pipeline takes), got {boxes!r}")
    if "grounding" in options:
        options["grounding"] = _checked_grounding(options["grounding"])
    if source == "starter":
        entry = starter_entry()
        if name:
            entry.name = name
        if tasks:
            wanted = [task_name(t) for t in tasks]
            entry.sources = {t: s for t, s in entry.sources.items() if t in wanted}
        entry.dtype, entry.device = dtype, device
        entry.options.update(options)
        return entry
    local = os.path.join(base_dir, os.path.expanduser(source))
    if os.path.isdir(local):
        src = Source(os.path.abspath(local), revision)
    elif HUB_ID.match(source) and ".." not in source:
        src = Source(source, revision or KNOWN_REVISIONS.get(source))
    else:
        raise BadInput(f"model source {source!r} is neither an existing local folder nor a "
                       "hub id of the form owner/name")
    if tasks:
        tasks = [task_name(t) for t in tasks]
    else:
        tasks = list(_tasks_of_source(src))
    name = name or (os.path.basename(src.location.rstrip("/")) if src.is_local else source)
    if not MODEL_NAME.match(name):
        raise BadInput(f"model name {name!r} may hold letters, digits, space and ._+/- only")
    return ModelEntry(name, {t: src for t in tasks}, dtype, device, options)


def _checked_default_option(key: str, value):
    """A model's default `key` ("guidance" or "steps"): one number for every task, or
    {task: number}."""
    from .tasks.checks import GUIDANCE_RANGE, STEPS_RANGE
    low, high = GUIDANCE_RANGE if key == "guidance" else STEPS_RANGE
    kind = "a number" if key == "guidance" else "a whole number"
    per_task = value if isinstance(value, dict) else {None: value}
    checked = {}
    for task, number in per_task.items():
        if (isinstance(number, bool) or not isinstance(number, (int, float))
                or not low <= number <= high or (key == "steps" and number != int(number))):
            raise BadInput(f"default {key} must be {kind} from {low} to {high}, got {number!r}")
        number = float(number) if key == "guidance" else int(number)
        checked[None if task is None else task_name(task)] = number
    return checked[None] if None in checked else checked


def _checked_grounding(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadInput("default grounding (the share of the steps a layout model's boxes "
                       f"steer) must be a number from 0 to 1, got {value!r}")
    return float(value)


def _default(entry: ModelEntry, task: str, key: str, fallback):
    option = entry.options.get(key)
    if isinstance(option, dict):
        return option.get(task, fallback)
    return fallback if option is None else option


def default_guidance(entry: ModelEntry, task: str) -> float:
    """`entry`'s default guidance scale for `task`: its `guidance` option, else 7.5 (the
    diffusers pipelines' own default)."""
    return float(_default(entry, task, "guidance", DEFAULT_GUIDANCE))


def default_steps(entry: ModelEntry, task: str) -> int:
    """`entry`'s default step count for `task`: its `steps` option, else 20."""
    return int(_default(entry, task, "steps", DEFAULT_STEPS))


def _tasks_of_source(src: Source) -> tuple[str, ...]:
    if src.is_local:
        try:
            with open(os.path.join(src.location, "model_index.json")) as f:
                class_name = json.load(f)["_class_name"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{src.location} is not a diffusers pipeline folder "
                             f"(model_index.json: {e}); say its tasks explicitly") from None
        if class_name not in TASKS_OF_PIPELINE:
            raise ModelError(f"{src.location} holds a {class_name}; the playground runs "
                             + ", ".join(TASKS_OF_PIPELINE))
        return TASKS_OF_PIPELINE[class_name]
    known = {"stable-diffusion-v1-5/stable-diffusion-v1-5": ("text_to_image", "inpaint"),
             "stable-diffusion-v1-5/stable-diffusion-inpainting": ("inpaint",),
             "masterful/gligen-1-4-generation-text-box": ("layout_to_image",),
             "stabilityai/stable-diffusion-x4-upscaler": ("upscale",)}
    if src.location not in known:
        raise BadInput(f"say which tasks hub model {src.location} serves (tasks=...)")
    return known[src.location]


def parse_model_flag(flag: str, base_dir: str = ".") -> ModelEntry:
    """Parse `--model` values:

        [NAME=]SOURCE[;tasks=TASK,TASK][;revision=REV][;dtype=float16][;device=cuda][;max_boxes=N]
                     [;guidance=G][;steps=N][;grounding=F]

    SOURCE is `starter`, a hub id (owner/name) or a local diffusers folder. Examples:
        stable-diffusion-v1-5/stable-diffusion-v1-5
        sd15=stable-diffusion-v1-5/stable-diffusion-v1-5;tasks=text_to_image,inpaint
        mine=/models/my-sd;revision=main
    Tasks: text_to_image, layout_to_image, inpaint, upscale (or t2i, layout, ...);
    default: what the source serves."""
    head, *options = [part.strip() for part in flag.split(";")]
    name, _, source = head.rpartition("=")
    kwargs: dict = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or key not in ("tasks", "revision", "dtype", "device", "max_boxes", "grounding",
                                  *PER_TASK_DEFAULTS):
            raise BadInput(f"bad model option {option!r} in {flag!r}; options are "
                           "tasks=, revision=, dtype=, device=, max_boxes=, guidance=, steps=, "
                           "grounding=")
        kwargs[key] = value.strip()
    if "tasks" in kwargs:
        kwargs["tasks"] = [t for t in kwargs["tasks"].split(",") if t.strip()]
    if "max_boxes" in kwargs:
        try:
            kwargs["max_boxes"] = int(kwargs["max_boxes"])
        except ValueError:
            raise BadInput(f"max_boxes= in {flag!r} must be a whole number, e.g. max_boxes=10") from None
    for key, example in (("guidance", "guidance=5"), ("steps", "steps=8"), ("grounding", "grounding=0.3")):
        if key in kwargs:
            try:
                kwargs[key] = float(kwargs[key])
            except ValueError:
                raise BadInput(f"{key}= in {flag!r} must be a number, e.g. {example}") from None
    if not source.strip():
        raise BadInput(f"model flag {flag!r} names no source")
    return make_entry(name.strip() or None, source.strip(), base_dir=base_dir, **kwargs)


def read_models_file(path: str) -> tuple[list[ModelEntry], list[str]]:
    """Read a models file (.toml or .json). Returns (entries, allowed_dirs).

    TOML:
        allowed_dirs = ["/models"]          # optional: folders local models may come from

        [[models]]
        name = "sd15"
        source = "stable-diffusion-v1-5/stable-diffusion-v1-5"
        tasks = ["text_to_image"]          # optional
        revision = "main"                  # optional; also dtype, device, max_boxes
        guidance = 7.5                     # optional default; or {text_to_image = 7.5, ...}
        steps = 20                         # optional default; or {upscale = 4, ...}
        grounding = 0.3                    # optional, layout: share of the steps boxes steer

        [[models]]
        name = "sd15"                       # same name again: adds tasks from another source
        source = "stable-diffusion-v1-5/stable-diffusion-inpainting"
        tasks = ["inpaint"]

    JSON: the same as {"allowed_dirs": [...], "models": [{...}, ...]}. Relative folders
    are taken from the file's directory."""
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read models file {path}: {e}") from None
    base = os.path.dirname(os.path.abspath(path))
    known = {"name", "source", "tasks", "revision", "dtype", "device", "max_boxes", "grounding",
             *PER_TASK_DEFAULTS}
    merged: dict[str, ModelEntry] = {}
    for item in data.get("models", []):
        unknown = set(item) - known
        if unknown or "source" not in item:
            raise BadInput(f"models file {path}: each model needs 'source' and may have "
                           f"{', '.join(sorted(known - {'source'}))}; got {sorted(item)}")
        entry = make_entry(item.get("name"), item["source"], base_dir=base,
                           **{k: v for k, v in item.items() if k not in ("name", "source")})
        if entry.name in merged:  # another source for more tasks; each keeps its defaults
            first = merged[entry.name]
            defaults = {key: {t: value for e in (first, entry) for t in e.tasks
                              if (value := _default(e, t, key, None)) is not None}
                        for key in PER_TASK_DEFAULTS}
            first.sources.update(entry.sources)
            first.options.update({key: d for key, d in defaults.items() if d})
            if "grounding" in entry.options:  # layout's own option, whichever source serves it
                first.options["grounding"] = entry.options["grounding"]
        else:
            merged[entry.name] = entry
    allowed = [os.path.join(base, d) for d in data.get("allowed_dirs", [])]
    return list(merged.values()), allowed


# ---------------------------------------------------------------- device and dtype

def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str) -> str:
    return "float32" if device == "cpu" else "float16"


# ---------------------------------------------------------------- the registry

@dataclass
class _Loaded:
    pipeline: object
    component_keys: tuple


class Registry:
    """Model entries plus the cache of loaded pipelines. Thread-safe.

    Args:
        entries: model entries; default: the starter models.
        device, dtype: defaults for entries that do not set their own (picked if None).
        memory_budget: bytes of weights to hold at most (None = no limit). The pipeline
            being loaded is always kept, even if it alone is larger.
        allowed_dirs: folders local model folders may be in; the starter weights folder
            and the folders in $PLAYGROUND_MODEL_DIRS (os.pathsep-separated) always are.
    """

    def __init__(self, entries=None, *, device=None, dtype=None, memory_budget=None,
                 allowed_dirs=()):
        self.device = device or pick_device()
        if dtype is not None and dtype not in DTYPES:
            raise BadInput(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
        self.dtype = dtype
        self.memory_budget = memory_budget
        env_dirs = [d for d in os.environ.get("PLAYGROUND_MODEL_DIRS", "").split(os.pathsep) if d]
        self.allowed_dirs = [os.path.realpath(d) for d in [STARTER_DIR, *env_dirs, *allowed_dirs]]
        self._entries: dict[str, ModelEntry] = {}
        self._pipelines: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._components: dict[tuple, object] = {}
        self._configs: dict[tuple, dict] = {}
        self._lock = threading.RLock()
        for entry in (starter_entry(),) if entries is None else entries:
            self.add(entry)

    @classmethod
    def from_flags(cls, models=(), models_file=None, *, include_starter=True,
                   allowed_dirs=(), **kwargs) -> "Registry":
        """What the app's `--model` (repeatable), `--models-file` and `--allow-dir` give."""
        entries = [starter_entry()] if include_starter else []
        allowed = list(allowed_dirs)
        if models_file:
            file_entries, file_dirs = read_models_file(models_file)
            entries += file_entries
            allowed += file_dirs
        entries += [parse_model_flag(flag) for flag in models]
        return cls(entries, allowed_dirs=allowed, **kwargs)

    # ------------------------------------------------------------ entries

    def add(self, entry: ModelEntry) -> None:
        """Register (or extend, by name) an entry; local folders must be allowed."""
        for source in entry.sources.values():
            if source.is_local:
                self._check_allowed(entry.name, source.location)
        with self._lock:
            if entry.name in self._entries:
                self._entries[entry.name].sources.update(entry.sources)
            else:
                self._entries[entry.name] = entry

    def models(self, task: str) -> list[str]:
        task = task_name(task)
        return [name for name, e in self._entries.items() if task in e.sources]

    def entry(self, model: str, task: str | None = None) -> ModelEntry:
        if model not in self._entries:
            raise ModelError(f"unknown model {model!r}; registered: "
                             + (", ".join(self._entries) or "none"))
        entry = self._entries[model]
        if task is not None and task_name(task) not in entry.sources:
            raise ModelError(f"model {model!r} does not do {task}; models for {task}: "
                             + (", ".join(self.models(task)) or "none"))
        return entry

    def device_and_dtype(self, model: str) -> tuple[str, torch.dtype]:
        entry = self.entry(model)
        device = entry.device or self.device
        dtype = entry.dtype or self.dtype or pick_dtype(device.split(":")[0])
        return device, DTYPES[dtype]

    # ------------------------------------------------------------ configs (no weights)

    def config(self, model: str, task: str, subfolder: str | None = None) -> dict:
        """A json config of `model`'s source for `task` (model_index.json when
        subfolder is None), read without loading weights."""
        task = task_name(task)
        source = self.entry(model, task).sources[task]
        key = (source, subfolder)
        if key not in self._configs:
            try:
                self._configs[key] = dict(_read_config(source, subfolder))
            except Exception as e:  # noqa: BLE001 - any failure becomes a message naming the model
                raise ModelError(f"model {model!r} ({source.describe()}) has no readable "
                                 f"{subfolder or 'model_index'} config: {_reason(e)}") from None
        return self._configs[key]

    def scheduler_config(self, model: str, task: str) -> dict:
        return self.config(model, task, "scheduler")

    def defaults(self, model: str, task: str) -> dict:
        task = task_name(task)
        entry = self.entry(model, task)
        unet = self.config(model, task, "unet")
        vae = self.config(model, task, "vae")
        from . import schedulers
        vae_factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
        native = unet.get("sample_size", 64) * vae_factor
        out = {"scheduler": schedulers.name_of(self.scheduler_config(model, task)),
               "steps": default_steps(entry, task), "guidance": default_guidance(entry, task),
               "width": native, "height": native,
               # beyond 4x its native size a model only gets slow and incoherent
               "size_multiple": 8, "max_side": min(2048, 4 * native), "steps_range": (1, 150),
               "guidance_range": (0.0, 30.0)}
        if task == "layout_to_image":
            out["max_boxes"] = entry.options.get("max_boxes", DEFAULT_MAX_BOXES)
            out["grounding"] = entry.options.get("grounding", DEFAULT_GROUNDING)
        elif task == "inpaint":
            out["strength"] = 1.0
        elif task == "upscale":
            index = self.config(model, task)
            size = entry.options.get("upscale_input_size")
            out.update(noise_level=20, max_noise_level=int(index.get("max_noise_level", 350)),
                       input_size=tuple(size) if size else None, scale=vae_factor,
                       max_side=512)
            if size:
                out["width"], out["height"] = size[0] * vae_factor, size[1] * vae_factor
        return out

    # ------------------------------------------------------------ pipelines

    def pipeline(self, model: str, task: str):
        """The shared pipeline of `model` for `task`, loading it on first use.

        Callers must not mutate it: run through `run.request_pipeline`."""
        task = task_name(task)
        entry = self.entry(model, task)
        key = (model, task)
        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key].pipeline
            self._make_room(self._estimate_new_bytes(entry, task), keep=key)
            loaded = self._load(entry, task)
            self._pipelines[key] = loaded
            self._make_room(0, keep=key)
            return loaded.pipeline

    def loaded(self) -> list[tuple[str, str]]:
        """(model, task) pairs held in memory, least recently used first."""
        with self._lock:
            return list(self._pipelines)

    def memory_used(self) -> int:
        """Bytes of weights held by the loaded components."""
        with self._lock:
            return sum(_module_bytes(c) for c in self._components.values())

    def unload(self, model: str | None = None) -> None:
        """Drop the pipelines of `model` (all models when None) and their free components."""
        with self._lock:
            for key in [k for k in self._pipelines if model is None or k[0] == model]:
                del self._pipelines[key]
            self._drop_unused_components()

    # ------------------------------------------------------------ loading

    def _load(self, entry: ModelEntry, task: str) -> _Loaded:
        source = entry.sources[task]
        device, dtype = self.device_and_dtype(entry.name)
        try:
            index = self.config(entry.name, task)
            pipeline_cls = getattr(importlib.import_module("diffusers"), PIPELINES[task])
            self._check_unet(entry.name, task)
            components, keys = {}, []
            for name in _needed_components(pipeline_cls, index, task):
                component_dtype = self._component_dtype(entry.name, task, name, dtype)
                key = _component_key(source, name, component_dtype, device)
                if task == "upscale" and name == "vae":
                    # StableDiffusionUpscalePipeline rewrites vae.config.scaling_factor to
                    # 0.08333 when built: never hand it a VAE other pipelines decode with
                    key += ("upscale",)
                if key not in self._components:
                    self._components[key] = self._load_component(
                        entry.name, source, name, index, component_dtype, device)
                components[name] = self._components[key]
                keys.append(key)
            for name in OPTIONAL_COMPONENTS:
                if name in _init_params(pipeline_cls):
                    components[name] = None
            extra = {k: index[k] for k in ("requires_safety_checker", "max_noise_level")
                     if k in _init_params(pipeline_cls) and k in index}
            if "requires_safety_checker" in _init_params(pipeline_cls):
                extra["requires_safety_checker"] = False
            pipeline = pipeline_cls(**components, **extra)
            pipeline.set_progress_bar_config(disable=True)
            return _Loaded(pipeline, tuple(keys))
        except ModelError:
            self._drop_unused_components()
            raise
        except Exception as e:  # noqa: BLE001 - the app must keep serving other models
            self._drop_unused_components()
            raise ModelError(f"model {entry.name!r} could not be loaded for {task} from "
                             f"{source.describe()}: {_reason(e)}") from e

    def _component_dtype(self, model: str, task: str, name: str, dtype):
        """The upscaler would upcast an fp16 VAE that asks for it (force_upcast) to float32
        in place during every call, disturbing concurrent users of a shared VAE; load
        that VAE in float32 instead."""
        if task == "upscale" and name == "vae" and dtype == torch.float16:
            if self.config(model, task, "vae").get("force_upcast", True):
                return torch.float32
        return dtype

    def _load_component(self, model: str, source: Source, name: str, index: dict, dtype,
                        device):
        library, class_name = index[name]
        if library not in ALLOWED_LIBRARIES:
            raise ModelError(f"model {model!r}: component {name} needs library {library!r}; "
                             f"only {', '.join(ALLOWED_LIBRARIES)} classes are loaded")
        cls = getattr(importlib.import_module(library), class_name, None)
        if cls is None:
            raise ModelError(f"model {model!r}: component {name} is a {library}.{class_name}, "
                             "which this version does not have")
        if source.is_local:
            self._check_allowed(model, os.path.join(source.location, name))
        where = dict(subfolder=name, revision=source.revision)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            dtype_arg = "dtype" if library == "transformers" else "torch_dtype"
            module = cls.from_pretrained(source.location, use_safetensors=True,
                                         **{dtype_arg: dtype}, **where)
            return module.to(device).eval().requires_grad_(False)
        return cls.from_pretrained(source.location, **where)

    def _check_unet(self, model: str, task: str) -> None:
        unet = self.config(model, task, "unet")
        channels = unet.get("in_channels")
        if channels not in UNET_IN_CHANNELS[task]:
            raise ModelError(f"model {model!r} cannot do {task}: its UNet takes {channels} input "
                             f"channels, {task} needs "
                             + " or ".join(map(str, UNET_IN_CHANNELS[task])))
        if task == "layout_to_image" and unet.get("attention_type") != "gated":
            raise ModelError(f"model {model!r} cannot do layout_to_image: its UNet has no "
                             "GLIGEN gated attention")

    def _check_allowed(self, model: str, folder: str) -> None:
        real = os.path.realpath(folder)
        if not any(real == d or real.startswith(d + os.sep) for d in self.allowed_dirs):
            raise ModelError(f"model {model!r}: folder {folder} is outside the allowed model "
                             f"folders ({', '.join(self.allowed_dirs)}); allow its parent "
                             "folder (allowed_dirs / --allow-dir) to use it")

    # ------------------------------------------------------------ memory

    def _estimate_new_bytes(self, entry: ModelEntry, task: str) -> int:
        """Bytes the not-yet-loaded components of a local source will take (from the
        safetensors headers); 0 for hub sources (checked after loading instead)."""
        source = entry.sources[task]
        if self.memory_budget is None or not source.is_local:
            return 0
        device, dtype = self.device_and_dtype(entry.name)
        try:
            index = self.config(entry.name, task)
            pipeline_cls = getattr(importlib.import_module("diffusers"), PIPELINES[task])
            names = _needed_components(pipeline_cls, index, task)
        except Exception:  # noqa: BLE001 - loading reports the real problem
            return 0
        itemsize = torch.tensor([], dtype=dtype).element_size()
        return sum(_safetensors_numel(os.path.join(source.location, n)) * itemsize
                   for n in names
                   if _component_key(source, n, self._component_dtype(entry.name, task, n, dtype),
                                     device) not in self._components)

    def _make_room(self, incoming: int, keep) -> None:
        if self.memory_budget is None:
            return
        while self._pipelines and self.memory_used() + incoming > self.memory_budget:
            victim = next((k for k in self._pipelines if k != keep), None)
            if victim is None:
                return
            del self._pipelines[victim]
            self._drop_unused_components()

    def _drop_unused_components(self) -> None:
        used = {k for loaded in self._pipelines.values() for k in loaded.component_keys}
        for key in [k for k in self._components if k not in used]:
            del self._components[key]
        _release_memory()


# ---------------------------------------------------------------- helpers

def _read_config(source: Source, subfolder: str | None) -> dict:
    from diffusers import DiffusionPipeline
    from diffusers.configuration_utils import ConfigMixin

    if subfolder is None:
        return DiffusionPipeline.load_config(source.location, revision=source.revision)
    if source.is_local:
        folder = os.path.join(source.location, subfolder)
        for name in ("scheduler_config.json", "config.json"):
            if os.path.exists(os.path.join(folder, name)):
                with open(os.path.join(folder, name)) as f:
                    return json.load(f)
        raise FileNotFoundError(f"no config file in {folder}")
    name = "scheduler_config.json" if "scheduler" in subfolder else "config.json"

    class _Config(ConfigMixin):
        config_name = name
    return _Config.load_config(source.location, subfolder=subfolder, revision=source.revision)


def _init_params(cls) -> set[str]:
    import inspect
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _needed_components(pipeline_cls, index: dict, task: str) -> list[str]:
    needed = []
    for name in sorted(_init_params(pipeline_cls)):
        if name in OPTIONAL_COMPONENTS or name in ("requires_safety_checker", "max_noise_level"):
            continue
        spec = index.get(name)
        if not isinstance(spec, (list, tuple)) or spec[0] is None:
            raise ModelError(f"the folder has no {name}, which {task} needs "
                             f"({pipeline_cls.__name__})")
        needed.append(name)
    return needed


def _component_key(source: Source, name: str, dtype, device) -> tuple:
    if source.is_local:
        return ("local", os.path.realpath(os.path.join(source.location, name)), str(dtype), device)
    return ("hub", source.location, source.revision, name, str(dtype), device)


def _module_bytes(component) -> int:
    if not isinstance(component, torch.nn.Module):
        return 0
    tensors = list(component.parameters()) + list(component.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _safetensors_numel(folder: str) -> int:
    """Number of tensor elements in a folder's safetensors files, read from their headers."""
    total = 0
    if not os.path.isdir(folder):
        return 0
    for name in os.listdir(folder):
        if name.endswith(".safetensors"):
            with open(os.path.join(folder, name), "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            for key, info in header.items():
                if key != "__metadata__":
                    n = 1
                    for dim in info["shape"]:
                        n *= dim
                    total += n
    return total


def _release_memory() -> None:
    """Give freed weights back to the operating system (glibc keeps freed heap otherwise)."""
    gc.collect(1)  # young generations: a full collection costs ~1 s in a process holding torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]

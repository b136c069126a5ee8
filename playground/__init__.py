"""The diffusion playground: one Python API over one model registry.

    from playground import Playground
    pg = Playground()                        # the starter models, device picked for you
    img = pg.text_to_image("a red circle", seed=1)
    img.info["settings"]                     # everything used, including the seed
    settings_of(img)["seconds"]

The Gradio UI, the HTTP endpoints (`gradio_client`) and notebooks all call these
methods; no logic lives anywhere else.

Return values: every task returns a `PIL.Image.Image` in mode "RGB" whose
`info["settings"]` holds the settings dict actually used (see `settings_of`).
`text_to_image(..., num_images=n)` with n > 1 returns a `list` of n such images;
image i was made with seed `seed + i`, and its settings say so, so any one of them can
be made again alone with `num_images=1`. The return type depends only on `num_images`.

Errors: bad input or an unusable model raise `PlaygroundError` (a `ValueError`) whose
message says what was wrong and what is allowed. A run stopped through
`RunControl.cancel()` raises `Cancelled`.

Settings keys (all tasks): task, model, revision, source, prompt, negative_prompt,
scheduler, steps, guidance, seed, width, height, seconds, device, dtype, versions,
warnings (list of sentences: what was changed or ignored, e.g. words the model does not
know, a cut prompt, a rounded size). Per task: layout_to_image adds phrases and boxes;
inpaint adds strength, focus_on_mask and, when the focus changed the prompt,
focused_prompt (what the model read); upscale adds noise_level and input_size; text_to_image adds
index and num_images; layout_to_image adds grounding (the share of the steps its boxes
steered); text_to_image and layout_to_image add place_objects and placed,
and colour_hints, when the option was on; layout_to_image adds regional_prompts likewise;
text_to_image adds compose_objects and composed when it composed the picture.
"""
from __future__ import annotations

from .errors import BadInput, Cancelled, ModelError, PlaygroundError
from .registry import TASKS, ModelEntry, Registry, parse_model_flag, read_models_file
from .run import RunControl, settings_of

__all__ = [
    "Playground", "RunControl", "settings_of", "Registry", "ModelEntry", "TASKS",
    "parse_model_flag", "read_models_file",
    "PlaygroundError", "BadInput", "ModelError", "Cancelled",
]


class Playground:
    """Text-to-image, layout-to-image, inpainting and x4 super-resolution over one registry.

    Args:
        registry: the models to serve; default: a `Registry` holding the starter models.
        device, dtype, memory_budget, allowed_dirs: passed to the default `Registry`
            (ignored when `registry` is given). device "cuda" | "mps" | "cpu" (default:
            picked), dtype "float16" | "bfloat16" | "float32" (default: fp16 on CUDA/MPS,
            fp32 on CPU), memory_budget in bytes (default: no limit), allowed_dirs:
            folders local models may be loaded from (the starter weights always are).

    Thread-safe: concurrent calls (e.g. from Gradio workers) each get their own
    pipeline object and scheduler over shared weights.
    """

    def __init__(self, registry: Registry | None = None, *, device: str | None = None,
                 dtype: str | None = None, memory_budget: int | None = None,
                 allowed_dirs=()):
        self.registry = registry or Registry(
            device=device, dtype=dtype, memory_budget=memory_budget, allowed_dirs=allowed_dirs)

    # ------------------------------------------------------------------ what is there

    def models(self, task: str) -> list[str]:
        """Names of the registered models that serve `task` (one of `TASKS`), default first."""
        return self.registry.models(task)

    def schedulers(self, model: str, task: str) -> list[str]:
        """Catalogue names of the schedulers `model` can use for `task` (its default first).

        Reads only config files; does not load weights."""
        from . import schedulers
        return schedulers.compatible_names(self.registry.scheduler_config(model, task))

    def defaults(self, model: str, task: str) -> dict:
        """Defaults and limits of `model` for `task`, for forms and sliders.

        Keys: scheduler, steps, guidance, width, height, size_multiple, max_side,
        steps_range (1, 150), guidance_range (0, 30); layout: max_boxes; inpaint:
        strength; upscale: noise_level, max_noise_level, input_size (w, h) or None,
        scale (4). Reads only config files; does not load weights."""
        return self.registry.defaults(model, task)

    # ------------------------------------------------------------------ the four tasks

    def text_to_image(self, prompt: str, negative_prompt: str = "", model: str = "starter",
                      scheduler: str | None = None, steps: int | None = None, guidance: float | None = None,
                      seed: int = -1, width: int | None = None, height: int | None = None,
                      num_images: int = 1, control: RunControl | None = None,
                      place_objects: bool = False, colour_hints: bool = False,
                      regional_prompts: bool = False, compose_objects: bool = False):
        """Make a picture from a caption.

        Args:
            prompt: what to draw (prompts beyond the model's 77 tokens are cut; the
                cut words are listed in settings["warnings"]).
            negative_prompt: what to steer away from ("" = nothing).
            model: a name from `models("text_to_image")`.
            scheduler: a name from `schedulers(model, "text_to_image")`; None = the
                model's default.
            steps: denoising steps, 1..150; None = the model's default
                (`defaults(model, task)["steps"]`: 20, the starter upscaler 4).
            guidance: classifier-free guidance scale, 0..30 (<= 1 turns it off); None =
                the model's default (`defaults(model, task)["guidance"]`).
            seed: 0..2**32-1, or -1 for a random one (the one used is in the settings).
            width, height: pixels; None = the model's native size. Sizes that are not a
                multiple of 8 are rounded down (and the warnings say so).
            num_images: 1..8. More than 1 returns a list (image i uses seed + i).
            control: optional `RunControl` for progress, previews and cancelling.
            place_objects: put each object the prompt places ("a red circle in the top
                left") in that cell of a 3 x 3 grid, by steering the starting noise
                before sampling (`tasks/placement.py`: 10 UNet passes with gradients;
                about +0.7 s per picture on the starter model). settings["placed"] lists
                the words and boxes used; a prompt without positions gets a warning.
            colour_hints: paint each placed object's colour faintly into the starting
                noise of its cell (`tasks/colour_hint.py`); with place_objects it keeps
                the colours that steering alone loses.
            regional_prompts: in every cross-attention layer, each placed object's cell
                reads only that object's words (`tasks/regions.py`), so two objects keep
                their own colours and shapes; best with place_objects and colour_hints.
            compose_objects: draw object by object (`tasks/compose.py`): a flat canvas
                of the background the prompt names, then the model's inpainting
                pipeline paints each placed object into a square of its size at its
                place, reading only its words. Needs an inpainting model of the same
                name; replaces the three options above. settings["composed"] lists
                the objects; a prompt without positions is drawn as usual, with a
                warning.

        Returns: a PIL RGB image (or a list of them) with info["settings"].
        """
        from .tasks import text_to_image
        return text_to_image.run(
            self.registry, prompt=prompt, negative_prompt=negative_prompt, model=model,
            scheduler=scheduler, steps=steps, guidance=guidance, seed=seed, width=width,
            height=height, num_images=num_images, control=control, place_objects=place_objects,
            colour_hints=colour_hints, regional_prompts=regional_prompts,
            compose_objects=compose_objects)

    def layout_to_image(self, prompt: str, phrases: list[str], boxes: list[list[float]],
                        negative_prompt: str = "", model: str = "starter",
                        scheduler: str | None = None, steps: int | None = None, guidance: float | None = None,
                        seed: int = -1, control: RunControl | None = None,
                        place_objects: bool = False, regional_prompts: bool = False,
                        colour_hints: bool = False, grounding: float | None = None):
        """Make a picture with given objects in given boxes (GLIGEN).

        Args:
            prompt: the caption of the whole picture.
            phrases: one phrase per box, e.g. ["a red circle", "a blue square"].
            boxes: one [x0, y0, x1, y1] per phrase, fractions of the picture (0..1),
                origin top left, x0 < x1 and y0 < y1. At most defaults()["max_boxes"].
            place_objects: also steer the starting noise so each phrase's object lands
                in its box (`tasks/placement.py`, as for text_to_image; the boxes then
                act through the noise as well as through the gated layers).
                settings["placed"] lists the words and boxes used.
            regional_prompts: in every cross-attention layer, the pixels of each box read
                only their own phrase and the rest of the picture the caption
                (`tasks/regions.py`), so two objects' colours and shapes do not swap; best
                together with place_objects, which decides where the objects land.
            colour_hints: paint the colour each phrase names ("red") faintly into the
                starting noise inside its box (`tasks/colour_hint.py`), so objects fit
                their boxes and keep their colours more often.
            grounding: the share of the steps (0..1) during which the boxes steer, from the
                first (GLIGEN's scheduled sampling); after that the caption alone draws.
                Default: the model's (`defaults(model, "layout")["grounding"]`): 1.0 for
                the starter model, which keeps more colours and shapes so, else 0.3
                (diffusers' default; large models draw more natural pictures with it).
            others: as in `text_to_image`.

        Returns: a PIL RGB image at the model's native size, with info["settings"]
        (including phrases and boxes).
        """
        from .tasks import layout_to_image
        return layout_to_image.run(
            self.registry, prompt=prompt, phrases=phrases, boxes=boxes,
            negative_prompt=negative_prompt, model=model, scheduler=scheduler, steps=steps,
            guidance=guidance, seed=seed, control=control, place_objects=place_objects,
            regional_prompts=regional_prompts, colour_hints=colour_hints, grounding=grounding)

    def inpaint(self, image, mask, prompt: str, negative_prompt: str = "",
                model: str = "starter", scheduler: str | None = None, steps: int | None = None,
                guidance: float | None = None, strength: float = 1.0, seed: int = -1,
                control: RunControl | None = None, focus_on_mask: bool = True):
        """Repaint the masked part of a picture.

        Args:
            image: PIL image, numpy array (H, W, 3) uint8, or a path to an image file.
            mask: same size as `image`; white (or opaque, for an RGBA/LA mask with
                varying alpha) = repaint, black = keep. Grey values blend.
            prompt: what to paint in the mask ("a green triangle"), or the whole picture
                wanted after repainting.
            strength: 0 < strength <= 1; 1 repaints the masked area from pure noise.
            focus_on_mask: when the prompt places two or more objects ("a red circle in
                the top left and a blue square in the bottom right", or "... above ..."),
                the model reads only the one placed where the mask is, with the
                background the prompt names; the settings' focused_prompt says what it
                read. One that names two or more objects without placing them ("a red
                circle and a blue square") is read down to the one whose colour is
                nowhere outside the mask, when the other colours are there. Any other
                prompt is read as written.
            others: as in `text_to_image`.

        Returns: a PIL RGB image of the input's size. Pixels where the mask is 0 are
        exactly the input's pixels (the original is blended back after decoding).
        """
        from .tasks import inpaint
        return inpaint.run(
            self.registry, image=image, mask=mask, prompt=prompt,
            negative_prompt=negative_prompt, model=model, scheduler=scheduler, steps=steps,
            guidance=guidance, strength=strength, seed=seed, control=control,
            focus_on_mask=focus_on_mask)

    def upscale(self, image, prompt: str = "", negative_prompt: str = "",
                model: str = "starter", scheduler: str | None = None, steps: int | None = None,
                guidance: float | None = None, noise_level: int = 20, seed: int = -1,
                control: RunControl | None = None):
        """Make a picture 4 times larger (x4 super-resolution).

        Args:
            image: PIL image, numpy array (H, W, 3) uint8, or a path to an image file.
                It is first brought to the model's input size rule (starter: exactly
                64 x 64; others: rounded down to a multiple of 8, longest side at most
                defaults()["max_side"]); settings["warnings"] says when it was resized.
            prompt: optional caption of the picture.
            noise_level: 0..defaults()["max_noise_level"] (starter 350): noise added to
                the small picture before upscaling; higher lets the model invent more.
            others: as in `text_to_image`.

        Returns: a PIL RGB image 4x the (resized) input, with info["settings"].
        """
        from .tasks import upscale
        return upscale.run(
            self.registry, image=image, prompt=prompt, negative_prompt=negative_prompt,
            model=model, scheduler=scheduler, steps=steps, guidance=guidance,
            noise_level=noise_level, seed=seed, control=control)

    # ------------------------------------------------------------------ compare and export

    def compare_grid(self, prompt: str, x_axis: str, x_values, y_axis: str | None = None,
                     y_values=None, **settings):
        """An X/Y grid of text-to-image runs over any two of scheduler, steps, guidance
        and seed, every cell from the same starting noise. Other keywords: negative_prompt,
        model, scheduler, steps, guidance, seed, width, height, reference_steps, control.

        Returns a `teach.grid.GridResult`: .picture (labelled grid, settings attached),
        .curve (distance to the most converged picture), .table() (seconds and distance
        per cell), .cell(x, y).image (each cell's own picture)."""
        from .teach import grid
        return grid.compare_grid(self, prompt, x_axis, x_values, y_axis, y_values, **settings)

    def guidance_sweep(self, prompt: str, values=(1.0, 3.0, 5.0, 7.5, 10.0, 15.0),
                       seeds=None, **settings):
        """A compare grid across guidance values (a row per seed when seeds are given)."""
        from .teach import grid
        return grid.guidance_sweep(self, prompt, values, seeds, **settings)

    def quality_vs_cost(self, **options):
        """Judge accuracy and Frechet distance (judge features) against steps and seconds
        per picture for several schedulers, on held-out starter prompts. Options:
        schedulers, steps, n_prompts, guidance, model, judge_renders, control.
        Returns a `teach.quality.QualityResult` (.table(), .plot, .counterexample)."""
        from .teach import quality
        return quality.quality_vs_cost(self, **options)

    def export_notebook(self, runs: list, path) -> str:
        """Write `runs` (result pictures, compare grids or settings dicts) as a Jupyter
        notebook to `path`: markdown, code that makes each result again, and the
        pictures embedded. Returns the path."""
        from .teach import notebook
        return notebook.write_notebook(self, runs, path)

    # ------------------------------------------------------------------ see inside the sampler

    def forward_noise(self, image, t: int, scheduler: str | None = None,
                      model: str = "starter", seed: int = 0, task: str = "text_to_image"):
        """Noise a picture to training step `t` (0..999 for the starter) by the closed form
        x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, in pixel space, with the
        model's noise schedule. Returns a `teach.forward.NoisedPicture` (.noisy, .noise,
        .snr, .alpha_bar, .sigma, .info())."""
        from .teach import forward
        return forward.forward_noise(self.registry, image, t, model=model, scheduler=scheduler,
                                     seed=seed, task=task)

    def noise_schedule(self, scheduler: str | None = None, model: str = "starter",
                       steps: int = 20, task: str = "text_to_image", plot: bool = False):
        """alpha_bar and sigma for every training step, and the steps the sampler visits.
        A dict; with plot=True a PIL plot of it instead."""
        from .teach import forward
        schedule = forward.noise_schedule(self.registry, model=model, scheduler=scheduler,
                                          steps=steps, task=task)
        return forward.schedule_plot(schedule) if plot else schedule

    def denoise_trace(self, prompt: str, show_steps=None, on_frame=None, **settings):
        """A text-to-image run that also returns a filmstrip: at each step in `show_steps`
        (numbers 1..steps; None = six spread out, the last included) the latent x_t decoded
        and the model's predicted clean picture x0. `on_frame(frame)` is called as each is
        made. Other keywords as in `text_to_image` (one image). Returns
        (picture with settings, list of `teach.trace.Frame`)."""
        from .teach import trace
        return trace.run(self.registry, prompt=prompt, show_steps=show_steps,
                         on_frame=on_frame, **settings)

    def attention_maps(self, prompt: str, show_steps=None, **settings):
        """Cross-attention maps per prompt token, averaged over heads, layers and the steps
        in `show_steps` (None = all), from a text-to-image run (keywords as there). Returns
        a `teach.attention.AttentionMaps` (.image, .tokens, .maps, .overlays)."""
        from .teach import attention
        return attention.run(self.registry, prompt=prompt, show_steps=show_steps, **settings)

    def show_code(self, result) -> str:
        """A plain-diffusers Python script that makes `result` (a picture from this
        playground, or its settings dict) again, pixel for pixel on the same machine."""
        from .teach import code
        settings = result if isinstance(result, dict) else settings_of(result)
        return code.show_code(self.registry, settings)

"""The playground from Python (a script or a Jupyter notebook): the same four tasks the
app serves, no UI, no server.

    python examples/python_api.py                 # pictures go to outputs/python_api/
    python examples/python_api.py --steps 4       # quicker
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, PngImagePlugin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone

from playground import Playground, PlaygroundError, settings_of  # noqa: E402
from playground.starter.world import Obj, Scene, render  # noqa: E402


def save(image: Image.Image, path: Path) -> None:
    """Write a lossless PNG that carries its settings (JSON text chunk "settings")."""
    info = PngImagePlugin.PngInfo()
    info.add_text("settings", json.dumps(settings_of(image), default=str))
    image.save(path, pnginfo=info)
    print(f"{path}: {settings_of(image)['seconds']:.2f} s, seed {settings_of(image)['seed']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="outputs/python_api")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pg = Playground()                                   # the starter models; device picked
    print("models:", pg.models("text_to_image"))
    print("schedulers:", pg.schedulers("starter", "text_to_image"))

    # Text to image: one picture, or several with num_images (seeds seed, seed+1, ...)
    picture = pg.text_to_image("a red circle in the top left", steps=args.steps, seed=1)
    save(picture, out / "text_to_image.png")
    again = pg.text_to_image(**{k: settings_of(picture)[k] for k in
                                ("prompt", "negative_prompt", "scheduler", "steps",
                                 "guidance", "seed")})
    print("same settings, same pixels:", again.tobytes() == picture.tobytes())

    # Position words, obeyed: place_objects steers the starting noise toward the cell, and
    # colour_hints paints the object's colour faintly into it (steering alone can lose it)
    placed = pg.text_to_image("a red circle in the top left", steps=args.steps, seed=1,
                              place_objects=True, colour_hints=True)
    save(placed, out / "text_to_image_placed.png")
    print("placed:", settings_of(placed)["placed"])
    # Two objects right far more often: compose_objects draws them one at a time, the
    # model's inpainter painting each into its place on a canvas of the named background
    composed = pg.text_to_image("a small red circle in the top left and a big blue square in "
                                "the bottom right", steps=args.steps, seed=1,
                                compose_objects=True)
    save(composed, out / "text_to_image_composed.png")

    # Layout to image: one phrase per box, boxes as [x0, y0, x1, y1] fractions
    layout = pg.layout_to_image("a red circle and a blue square",
                                phrases=["a red circle", "a blue square"],
                                boxes=[[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]],
                                scheduler="Euler a", steps=args.steps, seed=2)
    save(layout, out / "layout_to_image.png")
    # ... and with the starting noise steered toward the boxes as well
    steered = pg.layout_to_image("a red circle and a blue square",
                                 phrases=["a red circle", "a blue square"],
                                 boxes=[[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]],
                                 scheduler="Euler a", steps=args.steps, seed=2,
                                 place_objects=True)
    save(steered, out / "layout_to_image_placed.png")
    # ... and with regional prompts (each box reads only its own phrase) and colour hints
    # (each phrase's colour painted faintly into its box's starting noise), unsteered: the
    # Layout tab's start
    regional = pg.layout_to_image("a red circle and a blue square",
                                  phrases=["a red circle", "a blue square"],
                                  boxes=[[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]],
                                  scheduler="Euler a", steps=args.steps, seed=2,
                                  regional_prompts=True, colour_hints=True)
    save(regional, out / "layout_to_image_regional.png")
    # ... and with the boxes steering only the first 30% of the steps (diffusers' default
    # for GLIGEN; the starter model's default grounding is 1, every step)
    early = pg.layout_to_image("a red circle and a blue square",
                               phrases=["a red circle", "a blue square"],
                               boxes=[[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]],
                               scheduler="Euler a", steps=args.steps, seed=2, grounding=0.3)
    save(early, out / "layout_to_image_early_grounding.png")

    # Inpainting: white in the mask = repaint; everything else comes back unchanged.
    # Name what goes in the mask (a caption of the whole picture works too, less often)
    scene = render(Scene("white", [Obj("red", "circle", (0.1, 0.1, 0.45, 0.45))]))
    mask = Image.new("L", scene.size, 0)
    ImageDraw.Draw(mask).rectangle([32, 32, 63, 63], fill=255)
    inpainted = pg.inpaint(scene, mask, "a green square",
                           strength=1.0, steps=args.steps, seed=3)
    save(inpainted, out / "inpaint.png")

    # Super-resolution: 64 x 64 in, 256 x 256 out
    big = pg.upscale(scene, prompt="a red circle", noise_level=20, steps=args.steps, seed=4)
    save(big, out / "upscale.png")

    # Bad input raises PlaygroundError (a ValueError) saying what is allowed
    try:
        pg.text_to_image("a red circle", steps=0)
    except PlaygroundError as error:
        print("refused:", error)


if __name__ == "__main__":
    main()

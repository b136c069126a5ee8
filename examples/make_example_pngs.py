"""Make the example PNGs in examples/ again: one per task, made by the starter models,
each carrying its settings (the `settings` JSON chunk and the AUTOMATIC1111
`parameters` line). The app lists them under "Restore settings from a picture": click
one (or drop it on the app) and its tab opens with its settings.

    python examples/make_example_pngs.py            # writes examples/example_*.png and
                                                    # examples/playground.ipynb (all four)
    python examples/make_example_pngs.py --check    # only checks the shipped ones

Inpainting and super-resolution also need their input picture: the app's example
picture (a red circle and a blue square), `playground.ui.examples.example_picture()`;
inpainting repaints the blue square (`square_mask()`) as a green triangle.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone

from playground import Playground  # noqa: E402
from playground.share import read_png, reproduce, save_png  # noqa: E402
from playground.ui.examples import EXAMPLE_SCENE, example_picture  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = 20


def square_mask(size=(64, 64), pad: float = 0.06) -> Image.Image:
    """White over the example picture's blue square, its box padded by 6% (the masks the
    starter inpainting model was trained and measured with cover one object like this)."""
    x0, y0, x1, y1 = EXAMPLE_SCENE.objects[1].box
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[round((y0 - pad) * size[1]):round((y1 + pad) * size[1]),
         round((x0 - pad) * size[0]):round((x1 + pad) * size[0])] = 255
    return Image.fromarray(mask)


def inputs_of(task: str) -> dict:
    """The input pictures a task needs (none for text or layout to image)."""
    if task == "inpaint":
        return {"image": example_picture(), "mask": square_mask()}
    if task == "upscale":
        return {"image": example_picture()}
    return {}


def make_all(pg: Playground) -> dict[str, Image.Image]:
    picture = example_picture()
    return {
        "text_to_image": pg.text_to_image("a green triangle at the bottom right",
                                          steps=STEPS, seed=7),
        "layout_to_image": pg.layout_to_image(
            "a red circle and a blue square", ["a red circle", "a blue square"],
            [[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]], steps=STEPS, seed=3,
            regional_prompts=True, colour_hints=True),  # as the Layout tab starts
        "inpaint": pg.inpaint(picture, square_mask(), "a green triangle", steps=STEPS, seed=5),
        "upscale": pg.upscale(picture, "a red circle and a blue square", steps=STEPS,
                              noise_level=20, seed=1),
    }


def repo_relative_paths(notebook: Path) -> None:
    """The plain-diffusers scripts in the notebook name the starter folders by this clone's
    absolute path; the shipped notebook names them from the repository root instead, where
    it is run from (its first cell imports `playground`)."""
    root = str(HERE.parent) + "/"
    text = notebook.read_text().replace(root, "").replace(
        "Run the cells top to bottom", "Run the cells top to bottom, from the repository root")
    notebook.write_text(text)


def check(pg: Playground) -> bool:
    """Each shipped example, made again from the settings it carries: same pixels?"""
    same = True
    for path in sorted(HERE.glob("example_*.png")):
        recipe = read_png(path, pg=pg)
        again = reproduce(pg, recipe.settings | {"task": recipe.task}, **inputs_of(recipe.task))
        equal = np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(again))
        print(f"{path.name}: {recipe.task}, made again from its settings: "
              f"{'same pixels' if equal else 'DIFFERENT pixels'}")
        same &= equal
    return same


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that the shipped examples reproduce")
    args = parser.parse_args(argv)
    pg = Playground(device="cpu")  # the examples are CPU pictures: see README, Reproducibility
    if not args.check:
        made = make_all(pg)
        for task, image in made.items():
            save_png(image, HERE / f"example_{task}.png")
            print(f"wrote examples/example_{task}.png")
        runs = [{"settings": image.info["settings"], "image": image, "inputs": inputs_of(task)}
                for task, image in made.items()]
        pg.export_notebook(runs, HERE / "playground.ipynb")
        repo_relative_paths(HERE / "playground.ipynb")
        print("wrote examples/playground.ipynb")
    if not check(pg):
        sys.exit("some examples did not reproduce on this machine (see README, Reproducibility)")


if __name__ == "__main__":
    main()

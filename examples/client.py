"""The playground's HTTP API from another process with `gradio_client`.

Start the app first (`python app.py`), then:
    python examples/client.py                          # http://127.0.0.1:7860/
    python examples/client.py --url http://host:7860/ --steps 4

Each endpoint takes keyword arguments and returns (path of the PNG it sent, settings
used). Pictures go in with `handle_file(path)`.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw


def input_pictures(folder: Path) -> tuple[Path, Path]:
    """A 64 x 64 picture and a mask of its lower right quarter (white = repaint)."""
    picture = Image.new("RGB", (64, 64), (245, 245, 245))
    ImageDraw.Draw(picture).ellipse([8, 8, 30, 30], fill=(220, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([32, 32, 63, 63], fill=255)
    picture.save(folder / "picture.png")
    mask.save(folder / "mask.png")
    return folder / "picture.png", folder / "mask.png"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="outputs/client")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    picture, mask = input_pictures(Path(tempfile.mkdtemp()))

    client = Client(args.url, verbose=False)
    requests = {
        "text_to_image": dict(prompt="a red circle", scheduler="DPM++ 2M", seed=1),
        "layout_to_image": dict(prompt="a red circle and a blue square",
                                phrases=["a red circle", "a blue square"],
                                boxes=[[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]],
                                seed=2),
        "inpaint": dict(image=handle_file(str(picture)), mask=handle_file(str(mask)),
                        prompt="a green square", strength=1.0, seed=3),
        "upscale": dict(image=handle_file(str(picture)), prompt="a red circle",
                        noise_level=20, seed=4),
    }
    results = {}
    for endpoint, kwargs in requests.items():
        png, settings = client.predict(steps=args.steps, api_name=f"/{endpoint}", **kwargs)
        shutil.copy(png, out / f"{endpoint}.png")
        results[endpoint] = settings
        print(f"{endpoint}: {out / (endpoint + '.png')} {Image.open(png).size}, "
              f"seed {settings['seed']}, {settings['seconds']:.2f} s")

    try:  # a bad request comes back as an error with the reason
        client.predict(prompt="a red circle", steps=0, api_name="/text_to_image")
    except AppError as error:
        print("refused:", error)
    return results


if __name__ == "__main__":
    main()

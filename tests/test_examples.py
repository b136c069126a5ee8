"""The runnable examples in examples/ run and do what README says they do."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_api_example_makes_its_pictures(tmp_path, capsys):
    load("python_api").main(["--steps", "2", "--out", str(tmp_path)])
    sizes = {p.stem: Image.open(p).size for p in tmp_path.glob("*.png")}
    assert sizes == {"text_to_image": (64, 64), "text_to_image_placed": (64, 64),
                     "text_to_image_composed": (64, 64),
                     "layout_to_image": (64, 64), "layout_to_image_placed": (64, 64),
                     "layout_to_image_regional": (64, 64),
                     "layout_to_image_early_grounding": (64, 64),
                     "inpaint": (64, 64), "upscale": (256, 256)}
    printed = capsys.readouterr().out
    assert "placed: [{'words': 'red circle top left', 'cell': 'top left'" in printed
    assert "same settings, same pixels: True" in printed
    assert "refused: steps must be" in printed


def test_example_notebook_holds_the_four_example_pictures():
    """examples/playground.ipynb (made with the example PNGs) is a valid notebook whose
    embedded pictures are the example PNGs' pixels."""
    import base64
    import io

    import nbformat
    import numpy as np

    notebook = nbformat.read(EXAMPLES / "playground.ipynb", as_version=4)
    nbformat.validate(notebook)
    text = (EXAMPLES / "playground.ipynb").read_text()
    # its plain-diffusers scripts name the starter folders from the repository root
    assert "from_pretrained('playground/starter/weights/" in text
    assert "from_pretrained('/" not in text
    pictures = [Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"]))).convert("RGB")
                for cell in notebook.cells if cell.cell_type == "code"
                for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    expected = [np.asarray(Image.open(EXAMPLES / f"example_{task}.png").convert("RGB"))
                for task in ("text_to_image", "layout_to_image", "inpaint", "upscale")]
    got = [np.asarray(p) for p in pictures]
    for want in expected:
        assert any(g.shape == want.shape and np.array_equal(g, want) for g in got)

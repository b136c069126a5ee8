"""Sharing and reproducing results: settings written into PNGs (our JSON chunk and the
AUTOMATIC1111 `parameters` line), permalinks, the session history with its zip, and
turning any of these back into the arguments of a `Playground` call.

    from playground.share import save_png, read_png, reproduce
    save_png(img, "result.png")              # settings travel with the picture
    recipe = read_png("result.png")          # ours or an AUTOMATIC1111 PNG
    again = reproduce(pg, recipe.settings)   # same settings, same seed: same pixels
"""
from .a1111 import parse_parameters, to_parameters
from .pngmeta import png_text, read_png, save_png
from .permalink import link_query, read_query
from .recipe import Recipe, TAB_OF_TASK, TASK_OF_TAB, call_arguments, reproduce, restorable

__all__ = ["save_png", "read_png", "png_text", "to_parameters", "parse_parameters",
           "link_query", "read_query", "Recipe", "restorable", "call_arguments", "reproduce",
           "TAB_OF_TASK", "TASK_OF_TAB"]

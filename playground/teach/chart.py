"""Small line charts and labelled picture grids drawn with Pillow (no plotting library
needed): the compare grid's convergence curve and the quality-vs-cost panels."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

LINE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
INK, GRID_INK, PAPER = (30, 30, 30), (225, 225, 225), (255, 255, 255)
TITLE_CLEARANCE = 24  # blank pixels on top: Gradio lays a picture's label over its top left


def font(size: int = 12) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def text_width(draw: ImageDraw.ImageDraw, text: str, size: int = 12) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font(size))
    return right - left


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering low..high (1, 2, 5 times a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def label_of(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, x_label: str,
               y_label: str, size: tuple[int, int] = (440, 300),
               log_x: bool = False) -> Image.Image:
    """One panel: a line per named series of (x, y) points, joined in the order given
    (NaN y values are skipped), with ticks, axis labels and a legend."""
    width, height = size
    left, right, top, bottom = 52, 12, TITLE_CLEARANCE + 38, 40
    points = [(x, y) for pts in series.values() for x, y in pts
              if math.isfinite(y) and (x > 0 or not log_x)]
    picture = Image.new("RGB", size, PAPER)
    draw = ImageDraw.Draw(picture)
    draw.text((width // 2, TITLE_CLEARANCE + 4), title, fill=INK, font=font(13), anchor="mt")
    if not points:
        draw.text((width // 2, height // 2), "no data", fill=INK, font=font(), anchor="mm")
        return picture

    def fx(x):
        return math.log10(x) if log_x else x

    xs, ys = [fx(x) for x, _ in points], [y for _, y in points]
    x_ticks = nice_ticks(min(xs), max(xs)) if not log_x else _log_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys + [0.0]), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_pixel(x, y):
        px = left + (fx(x) - x0) / ((x1 - x0) or 1) * plot_w
        py = top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h
        return px, py

    for tick in y_ticks:
        _, py = to_pixel(10 ** x0 if log_x else x0, tick)
        draw.line([(left, py), (left + plot_w, py)], fill=GRID_INK)
        draw.text((left - 4, py), label_of(tick), fill=INK, font=font(10), anchor="rm")
    for tick in x_ticks:
        px = left + (tick - x0) / ((x1 - x0) or 1) * plot_w
        draw.line([(px, top), (px, top + plot_h)], fill=GRID_INK)
        shown = 10 ** tick if log_x else tick
        draw.text((px, top + plot_h + 4), label_of(shown), fill=INK, font=font(10), anchor="mt")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=INK)
    draw.text((left + plot_w // 2, height - 4), x_label, fill=INK, font=font(11), anchor="mb")
    draw.text((2, top - 15), y_label, fill=INK, font=font(11))

    legend_w = max(text_width(draw, name, 10) for name in series)
    for i, (name, pts) in enumerate(series.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        shown = [(x, y) for x, y in pts if math.isfinite(y) and (x > 0 or not log_x)]
        pixels = [to_pixel(x, y) for x, y in shown]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        legend_y, legend_x = top + 4 + 14 * i, left + plot_w - 30 - legend_w
        draw.line([(legend_x, legend_y + 6), (legend_x + 14, legend_y + 6)], fill=colour, width=3)
        draw.text((legend_x + 18, legend_y), name, fill=INK, font=font(10))
    return picture


def _log_ticks(low: float, high: float) -> list[float]:
    """Tick positions (log10 values) at 1, 2 and 5 times powers of ten within range."""
    ticks = [math.log10(m) + p for p in range(math.floor(low) - 1, math.ceil(high) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if low - 1e-9 <= t <= high + 1e-9]
    below = [t for t in ticks if t < low - 1e-9][-1:]
    above = [t for t in ticks if t > high + 1e-9][:1]
    return below + inside + above


def panels(pictures: list[Image.Image], columns: int = 2) -> Image.Image:
    """Pictures of one size side by side, `columns` per row."""
    w, h = pictures[0].size
    rows = math.ceil(len(pictures) / columns)
    sheet = Image.new("RGB", (w * min(columns, len(pictures)), h * rows), PAPER)
    for i, picture in enumerate(pictures):
        sheet.paste(picture, ((i % columns) * w, (i // columns) * h))
    return sheet


def captioned_row(pictures: list[Image.Image], captions: list[list[str]], *,
                  title: str = "", cell: int = 128) -> Image.Image:
    """Pictures enlarged to `cell` px (nearest neighbour, so pixels stay visible), each
    with lines of caption under it, and an optional title above."""
    line_h, pad = 14, 8
    n_lines = max((len(c) for c in captions), default=0)
    title_h = TITLE_CLEARANCE + 22 if title else 0
    column_w = max([cell] + [text_width(ImageDraw.Draw(Image.new("RGB", (1, 1))), line, 11)
                             for c in captions for line in c]) + pad
    sheet = Image.new("RGB", (column_w * len(pictures) + pad,
                              title_h + cell + n_lines * line_h + 2 * pad), PAPER)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, TITLE_CLEARANCE + 4), title, fill=INK, font=font(13))
    for i, (picture, lines) in enumerate(zip(pictures, captions)):
        x = pad + i * column_w
        sheet.paste(picture.convert("RGB").resize((cell, cell), Image.NEAREST), (x, title_h + pad))
        for j, line in enumerate(lines):
            draw.text((x, title_h + pad + cell + 2 + j * line_h), line, fill=INK, font=font(11))
    return sheet

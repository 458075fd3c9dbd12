"""Training curves as small PNG line charts, drawn with PIL (no plotting library needed)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe line colours (Okabe-Ito), in the order series are drawn.
COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0),
           (86, 180, 233), (0, 0, 0), (240, 228, 66))
SIZE = (640, 400)
MARGIN = (64, 36, 16, 44)  # left, top, right, bottom


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi]."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    count = int(math.ceil((hi - first) / step - 1e-9)) + 1
    return [first + i * step for i in range(count)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis covering [lo, hi] (both > 0): 1, 2, 5 x 10^k, or only 10^k if too many."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for steps in ((1, 2, 5), (1,)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in steps]
        below = [t for t in ticks if t <= lo]
        above = [t for t in ticks if t >= hi]
        ticks = [t for t in ticks if (below and t >= below[-1] or not below) and (above and t <= above[0] or not above)]
        if len(ticks) <= 8:
            return ticks
    return ticks


def _label(v: float) -> str:
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def plot_curves(path: str | Path, title: str, series: Mapping[str, Sequence[tuple[float, float]]],
                xlabel: str = "epoch", log_y: bool = False) -> Path:
    """Draw each series (label -> [(x, y), ...], None values skipped) as a line; write a PNG.

    log_y: a logarithmic y axis (values <= 0 are skipped), for losses that span decades.
    """
    points = {k: [(float(x), float(y)) for x, y in v
                  if y is not None and math.isfinite(y) and (y > 0 or not log_y)] for k, v in series.items()}
    points = {k: v for k, v in points.items() if v}
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    draw.text((SIZE[0] // 2, 8), title, fill="black", font=ImageFont.load_default(size=14), anchor="mt")
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    if not points:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no data yet", fill="gray", font=font, anchor="mm")
        img.save(path)
        return Path(path)
    xs = [x for v in points.values() for x, _ in v]
    ys = [y for v in points.values() for _, y in v]
    xt = nice_ticks(min(xs), max(xs))
    yt = log_ticks(min(ys), max(ys)) if log_y else nice_ticks(min(ys), max(ys))
    scale = math.log10 if log_y else float
    x0, x1, y0, y1 = xt[0], xt[-1], scale(yt[0]), scale(yt[-1])
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left),
                bottom - (scale(y) - y0) / (y1 - y0) * (bottom - top))

    for y in yt:
        py = to_px(x0, y)[1]
        draw.line([(left, py), (right, py)], fill=(230, 230, 230))
        draw.text((left - 6, py), _label(y), fill="black", font=font, anchor="rm")
    for x in xt:
        px = to_px(x, yt[0])[0]
        draw.line([(px, bottom), (px, bottom + 4)], fill="black")
        draw.text((px, bottom + 6), _label(x), fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) // 2, SIZE[1] - 6), xlabel, fill="black", font=font, anchor="mb")
    for i, pts in enumerate(points.values()):
        colour = COLOURS[i % len(COLOURS)]
        pxs = [to_px(x, y) for x, y in pts]
        if len(pxs) > 1:
            draw.line(pxs, fill=colour, width=2, joint="curve")
        for px, py in pxs if len(pxs) <= 60 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
    # legend: top right inside the axes, on white so it stays readable over the lines
    width = max(draw.textlength(name, font=font) for name in points) + 40
    lx = right - 8 - width
    draw.rectangle([lx, top + 6, right - 8, top + 10 + 16 * len(points)], fill="white", outline=(200, 200, 200))
    for i, name in enumerate(points):
        ly = top + 16 + 16 * i
        draw.line([(lx + 6, ly), (lx + 26, ly)], fill=COLOURS[i % len(COLOURS)], width=3)
        draw.text((lx + 32, ly), name, fill="black", font=font, anchor="lm")
    img.save(path)
    return Path(path)

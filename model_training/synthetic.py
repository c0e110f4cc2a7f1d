"""Synthetic images that are not chest X-rays: the negatives no collection holds enough of.

The gate (``model_training.gate``) learns what a chest radiograph is not from real images
(``../shared/data/non_cxr``) plus these: noise, blank and gradient images, rendered text
pages, charts, heat maps and confusion matrices, and screenshots that imitate our own upload
page. Each image is a pure
function of ``(kind, seed)`` and is returned as encoded PNG or JPEG bytes, so it reaches
the gate through the same decoding as an upload. Train, val and test use disjoint seeds.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

KINDS = ("noise", "blank", "gradient", "text_page", "chart", "screenshot", "pattern", "heatmap")
VARIANT_STREAM = 7  # the random stream of ``variant`` (fixed: new kinds must not change old variants)
WORDS = ("patient", "report", "the", "of", "upload", "model", "covid", "normal", "result", "image",
         "lorem", "ipsum", "dolor", "sit", "amet", "data", "chest", "total", "2024", "figure", "page",
         "table", "value", "score", "research", "demo", "not", "a", "diagnosis", "file", "choose")


def make(kind: str, seed: int) -> bytes:
    """One synthetic image of ``kind`` as PNG/JPEG bytes (the format is drawn from the seed)."""
    rng = np.random.default_rng([KINDS.index(kind), seed])
    image = _DRAW[kind](rng)
    if rng.random() < 0.5 and kind not in ("text_page", "screenshot"):
        image = image.convert("L")
    out = io.BytesIO()
    if rng.random() < 0.5:
        image.convert("RGB").save(out, format="JPEG", quality=int(rng.integers(70, 96)))
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def variant(data: bytes, seed: int, mild: bool = False) -> bytes:
    """Another view of a real image (train split only): a random crop of 40-100% of its area,
    maybe mirrored or turned, another contrast and gamma, gray or not, re-encoded. A few dozen
    photographs then teach the gate "photograph", not "these photographs". ``mild`` (for chest
    X-rays: how other hospitals' films differ) crops 75-100%, never turns, stays gray."""
    rng = np.random.default_rng([VARIANT_STREAM, seed])
    image = Image.open(io.BytesIO(data))
    image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    w, h = image.size
    area = rng.uniform(0.75 if mild else 0.4, 1.0)
    ratio = np.exp(rng.uniform(np.log(0.85), np.log(1.15)) if mild else rng.uniform(np.log(0.6), np.log(1.6)))
    cw, ch = min(w, int(w * np.sqrt(area * ratio))), min(h, int(h * np.sqrt(area / ratio)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x0, y0, x0 + max(cw, 32), y0 + max(ch, 32)))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.25 and not mild:
        image = image.rotate(90 * int(rng.integers(1, 4)), expand=True)
    if rng.random() < 0.5 or mild:
        image = image.convert("L")
    a = np.asarray(image, dtype=np.float32) / 255.0
    a = np.clip(a ** rng.uniform(0.6, 1.6) * rng.uniform(0.8, 1.2), 0, 1)
    image = Image.fromarray((a * 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="PNG" if rng.random() < 0.5 else "JPEG")
    return out.getvalue()


def _size(rng) -> tuple[int, int]:
    return int(rng.integers(160, 900)), int(rng.integers(160, 900))


def _noise(rng) -> Image.Image:
    w, h = _size(rng)
    channels = 3 if rng.random() < 0.5 else 1
    style = rng.integers(3)
    if style == 0:
        a = rng.integers(0, 256, (h, w, channels))
    elif style == 1:
        a = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (h, w, channels))
    else:  # salt and pepper over a flat gray
        a = np.full((h, w, channels), rng.uniform(0, 255))
        mask = rng.random((h, w)) < rng.uniform(0.02, 0.3)
        a[mask] = rng.choice([0, 255], size=(int(mask.sum()), 1))
    a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a[..., 0] if channels == 1 else a)


def _blank(rng) -> Image.Image:
    w, h = _size(rng)
    level = rng.choice([0, 255, int(rng.integers(0, 256))])
    colour = (tuple(int(level) for _ in range(3)) if rng.random() < 0.6
              else tuple(int(v) for v in rng.integers(0, 256, 3)))
    return Image.new("RGB", (w, h), colour)


def _gradient(rng) -> Image.Image:
    w, h = _size(rng)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(x - cx, y - cy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    lo, hi = sorted(rng.uniform(0, 255, 2))
    g = lo + (hi - lo) * t
    if rng.random() < 0.5:
        tint = rng.uniform(0.3, 1.0, 3)
        return Image.fromarray(np.clip(g[..., None] * tint, 0, 255).astype(np.uint8))
    return Image.fromarray(g.astype(np.uint8))


def _font(rng, size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _text_page(rng) -> Image.Image:
    w = int(rng.integers(300, 900))
    h = int(w * rng.uniform(1.0, 1.5))
    dark = rng.random() < 0.2
    bg, fg = ((20, 20, 20), (230, 230, 230)) if dark else ((255, 255, 255), (0, 0, 0))
    image = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(10, 28))
    font = _font(rng, size)
    y = int(rng.integers(10, 60))
    while y < h - size:
        words = rng.choice(WORDS, size=int(rng.integers(3, 14)))
        draw.text((int(rng.integers(10, 40)), y), " ".join(words), fill=fg, font=font)
        y += int(size * rng.uniform(1.2, 2.2))
    return image


def _chart(rng) -> Image.Image:
    w, h = int(rng.integers(300, 900)), int(rng.integers(240, 700))
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, bottom = 40, h - 30
    draw.line([(left, 10), (left, bottom), (w - 10, bottom)], fill=(0, 0, 0), width=2)
    n = int(rng.integers(4, 20))
    values = rng.uniform(0.1, 1.0, n)
    colour = tuple(int(v) for v in rng.integers(0, 200, 3))
    step = (w - left - 20) / n
    if rng.random() < 0.5:
        for i, v in enumerate(values):
            x0 = left + 5 + i * step
            draw.rectangle([x0, bottom - v * (bottom - 20), x0 + step * 0.7, bottom], fill=colour)
    else:
        points = [(left + 5 + i * step, bottom - v * (bottom - 20)) for i, v in enumerate(values)]
        draw.line(points, fill=colour, width=3)
    font = _font(rng, 12)
    draw.text((left + 10, 5), " ".join(rng.choice(WORDS, 3)), fill=(0, 0, 0), font=font)
    return image


def _screenshot(rng) -> Image.Image:
    """Something like a browser window on our upload page: a bar, headings, a box, buttons."""
    w, h = int(rng.integers(500, 900)), int(rng.integers(350, 700))
    image = Image.new("RGB", (w, h), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, w, 40], fill=(60, 64, 67))
    draw.rectangle([80, 10, w - 80, 30], fill=(255, 255, 255))
    font = _font(rng, int(rng.integers(12, 22)))
    draw.text((30, 60), "Chest X-ray classifier - research demo", fill=(20, 20, 20), font=font)
    y = 100
    for _ in range(int(rng.integers(2, 6))):
        draw.text((30, y), " ".join(rng.choice(WORDS, 8)), fill=(60, 60, 60), font=font)
        y += 28
    draw.rectangle([30, y + 10, w - 30, y + 110], outline=(120, 120, 120), width=2)
    draw.rectangle([30, y + 130, 150, y + 160], fill=(25, 103, 210))
    if rng.random() < 0.5:  # a small gray picture on the page, as a result view would show
        x0, y0 = int(w * 0.6), 90
        patch = rng.integers(40, 200, (60, 60)).astype(np.uint8)
        image.paste(Image.fromarray(patch).resize((100, 100)), (x0, y0))
    return image


def _pattern(rng) -> Image.Image:
    w, h = _size(rng)
    y, x = np.mgrid[0:h, 0:w]
    period = int(rng.integers(4, 60))
    if rng.random() < 0.5:
        a = (((x // period) + (y // period)) % 2) * 255
    else:
        a = (np.sin(2 * np.pi * (x if rng.random() < 0.5 else y) / period) * 0.5 + 0.5) * 255
    return Image.fromarray(a.astype(np.uint8))


def _heatmap(rng) -> Image.Image:
    """A confusion matrix or heat map as plots show them: a grid of shaded cells with numbers,
    axis labels, maybe a colour bar."""
    w, h = int(rng.integers(300, 800)), int(rng.integers(260, 700))
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    rows, cols = int(rng.integers(2, 12)), int(rng.integers(2, 12))
    left, top = int(w * rng.uniform(0.1, 0.25)), int(h * rng.uniform(0.05, 0.2))
    right, bottom = int(w * rng.uniform(0.7, 0.95)), int(h * rng.uniform(0.75, 0.92))
    cw, ch = (right - left) / cols, (bottom - top) / rows
    tint = rng.uniform(0.2, 1.0, 3) if rng.random() < 0.5 else np.ones(3)
    font = _font(rng, int(rng.integers(10, 20)))
    for r in range(rows):
        for c in range(cols):
            level = rng.uniform(0, 1)
            colour = tuple(int(255 - level * 255 * t) for t in tint)
            box = [left + c * cw, top + r * ch, left + (c + 1) * cw, top + (r + 1) * ch]
            draw.rectangle(box, fill=colour)
            if rng.random() < 0.8:
                draw.text((box[0] + cw / 3, box[1] + ch / 3), str(int(rng.integers(0, 1000))),
                          fill=(255, 255, 255) if level > 0.5 else (0, 0, 0), font=font)
    draw.text((left, bottom + 8), " ".join(rng.choice(WORDS, 2)), fill=(0, 0, 0), font=font)
    draw.text((4, top + (bottom - top) // 2), str(rng.choice(WORDS)), fill=(0, 0, 0), font=font)
    if rng.random() < 0.5:  # a colour bar
        for i in range(bottom - top):
            t = i / max(bottom - top - 1, 1)
            draw.line([(right + 15, top + i), (right + 30, top + i)],
                      fill=tuple(int(255 - t * 255 * k) for k in tint))
    return image


_DRAW = {"noise": _noise, "blank": _blank, "gradient": _gradient, "text_page": _text_page,
         "chart": _chart, "screenshot": _screenshot, "pattern": _pattern, "heatmap": _heatmap}

"""Built-in data: procedurally drawn anime-style faces, deterministic from ``(index, seed)``.

Each face draws its own background, back hair, neck and collar, face shape (rounded cheeks, a
pointed chin), large eyes (white, coloured iris with a darker rim, pupil, one or two highlights,
thick upper lash line), eyebrows, nose, mouth, blush, fringe (one of several cuts) and side locks.
Hair comes in many colours, so a generator that collapses onto a few modes shows it at a glance.

Faces are drawn with PIL at several times the requested size and reduced with a Lanczos filter,
so edges are antialiased at any resolution.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

# Bump when the drawing changes, so on-disk caches of rendered faces are not reused.
FACES_VERSION = 1

# (hue, saturation, value) centres of hair colours, with per-face jitter added on top
# (``_hair_rgb``). Names in HAIR_NAMES, same order.
_HAIR_HSV = [
    (0.07, 0.55, 0.20),  # black-brown
    (0.08, 0.65, 0.45),  # brown
    (0.12, 0.55, 0.95),  # blonde
    (0.02, 0.80, 0.75),  # red
    (0.93, 0.45, 0.95),  # pink
    (0.60, 0.70, 0.80),  # blue
    (0.36, 0.55, 0.65),  # green
    (0.77, 0.50, 0.70),  # purple
    (0.58, 0.08, 0.85),  # silver
    (0.00, 0.00, 0.97),  # white
    (0.07, 0.85, 0.95),  # orange
    (0.50, 0.60, 0.75),  # teal
    (0.66, 0.50, 0.25),  # navy
]
HAIR_NAMES = (
    "black-brown", "brown", "blonde", "red", "pink", "blue", "green", "purple", "silver", "white",
    "orange", "teal", "navy",
)
_FRINGES = ("spiky", "straight", "swept", "parted", "curtain")


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """``f < 1`` darkens, ``f > 1`` lightens towards white."""
    if f <= 1:
        return tuple(int(x * f) for x in c)  # type: ignore[return-value]
    t = min(f - 1, 1.0)
    return tuple(int(x + (255 - x) * t) for x in c)  # type: ignore[return-value]


def _rng(index: int, seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, FACES_VERSION])))


def hair_palette() -> list[tuple[float, float, float]]:
    """The hair colours' ``(hue, saturation, value)`` centres in ``[0, 1]``, in ``HAIR_NAMES`` order."""
    return list(_HAIR_HSV)


def hair_class(index: int, seed: int = 0) -> int:
    """Index into ``HAIR_NAMES`` of face ``index``'s hair colour (the draw ``render_face`` makes)."""
    rng = _rng(index, seed)
    rng.random(), rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform()  # background
    return int(rng.integers(len(_HAIR_HSV)))


def render_face(
    index: int, size: int, seed: int = 0, supersample: int = 4, hair: int | None = None
) -> Image.Image:
    """Face number ``index`` of the set ``seed`` as an RGB ``size`` x ``size`` PIL image.

    Drawn at ``max(size * supersample, 128)`` pixels and reduced with Lanczos, so the same
    ``(index, seed)`` gives the same face, antialiased, at every size. ``hair`` (an index into
    ``HAIR_NAMES``) replaces the face's own hair colour class and leaves everything else as it
    was (the diversity tests build a one-hair-colour set this way).
    """
    rng = _rng(index, seed)
    S = max(size * supersample, 128)
    u = lambda v: v * S  # noqa: E731  (unit square -> canvas pixels)

    def box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return [u(cx - rx), u(cy - ry), u(cx + rx), u(cy + ry)]

    # --- colours -----------------------------------------------------------------------
    bg_h = rng.random()
    bg_top = _rgb(bg_h, rng.uniform(0.1, 0.45), rng.uniform(0.75, 1.0))
    bg_bot = _rgb(bg_h + rng.uniform(-0.1, 0.1), rng.uniform(0.15, 0.5), rng.uniform(0.55, 0.9))
    drawn = int(rng.integers(len(_HAIR_HSV)))
    hh, hs, hv = _HAIR_HSV[drawn if hair is None else hair]
    hair = _rgb(hh + rng.uniform(-0.02, 0.02), hs + rng.uniform(-0.1, 0.1), hv + rng.uniform(-0.1, 0.05))
    hair_dark = _shade(hair, 0.7)
    hair_light = _shade(hair, 1.35)
    skin = _rgb(rng.uniform(0.04, 0.08), rng.uniform(0.12, 0.3), rng.uniform(0.9, 1.0))
    skin_shadow = _shade(skin, 0.88)
    iris = _rgb(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.55, 0.9))
    iris_dark = _shade(iris, 0.45)
    cloth = _rgb(rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.9))
    line = _shade(hair, 0.35) if hv > 0.5 else (30, 20, 25)

    # --- geometry (unit square; x to the right, y down) ----------------------------------
    cx = 0.5 + rng.uniform(-0.04, 0.04)
    sc = rng.uniform(1.02, 1.18)  # head scale
    top = 0.13 + rng.uniform(-0.03, 0.03)  # top of the skull
    fw = 0.23 * sc * rng.uniform(0.92, 1.06)  # half width of the face at the cheeks
    eye_y = top + 0.36 * sc
    chin_y = top + 0.62 * sc
    long_hair = rng.random() < 0.6
    hair_len = rng.uniform(0.75, 1.05) if long_hair else chin_y + 0.02

    img = Image.new("RGB", (S, S))
    d = ImageDraw.Draw(img)
    # Background: vertical gradient in 16 bands (smooth after the reduction).
    for i in range(64):
        t = i / 63
        c = tuple(int(a + (b - a) * t) for a, b in zip(bg_top, bg_bot))
        d.rectangle([0, u(i / 64), S, u((i + 1) / 64) + 1], fill=c)

    # Back hair: the skull and, for long hair, a mane down to ``hair_len``.
    hw = fw * rng.uniform(1.22, 1.4)
    d.ellipse(box(cx, top + 0.27 * sc, hw, 0.29 * sc), fill=hair)
    if long_hair:
        spread = rng.uniform(0.0, 0.08)
        d.polygon(
            [(u(cx - hw), u(top + 0.27 * sc)), (u(cx + hw), u(top + 0.27 * sc)),
             (u(cx + hw + spread), u(hair_len)), (u(cx - hw - spread), u(hair_len))],
            fill=hair,
        )
    # Neck and shoulders (clothes).
    d.rectangle([u(cx - fw * 0.33), u(chin_y - 0.1), u(cx + fw * 0.33), u(chin_y + 0.1)], fill=skin_shadow)
    d.ellipse(box(cx, chin_y + 0.3, 0.4, 0.22), fill=cloth)
    d.polygon([(u(cx - 0.07), u(chin_y + 0.08)), (u(cx + 0.07), u(chin_y + 0.08)), (u(cx), u(chin_y + 0.17))], fill=skin_shadow)
    if long_hair:  # hair falling in front of the shoulders
        for side in (-1, 1):
            x0 = cx + side * fw * 1.02
            d.polygon(
                [(u(x0), u(eye_y)), (u(x0 + side * fw * 0.3), u(eye_y)),
                 (u(x0 + side * fw * 0.35), u(hair_len)), (u(x0 - side * fw * 0.05), u(hair_len - 0.04))],
                fill=hair,
            )

    # Face: upper half ellipse, cheeks tapering to a pointed chin.
    face = []
    for k in range(0, 181, 6):  # upper arc, from the right cheek over the forehead
        a = math.radians(k)
        face.append((u(cx + fw * math.cos(a)), u(eye_y - 0.26 * sc * math.sin(a))))
    cheek = rng.uniform(0.55, 0.75)
    chin_w = fw * rng.uniform(0.08, 0.2)
    face += [
        (u(cx - fw * 0.97), u(eye_y + 0.1 * sc)),
        (u(cx - fw * cheek), u(chin_y - 0.08 * sc)),
        (u(cx - chin_w), u(chin_y)),
        (u(cx + chin_w), u(chin_y)),
        (u(cx + fw * cheek), u(chin_y - 0.08 * sc)),
        (u(cx + fw * 0.97), u(eye_y + 0.1 * sc)),
    ]
    d.polygon(face, fill=skin)

    # Eyes.
    ex = fw * rng.uniform(0.42, 0.5)
    erx = fw * rng.uniform(0.26, 0.32)
    ery = erx * rng.uniform(1.05, 1.35)
    eyc = eye_y + 0.02 * sc
    look = rng.uniform(-0.25, 0.25) * erx
    closed = rng.random() < 0.08
    for side in (-1, 1):
        x = cx + side * ex
        if closed:  # a happy closed eye: a thick arc
            d.arc(box(x, eyc + ery * 0.3, erx, ery * 0.6), 200, 340, fill=line, width=max(1, int(u(0.012))))
            continue
        d.ellipse(box(x, eyc, erx, ery), fill=(250, 250, 252))
        irx, iry = erx * 0.78, ery * 0.86
        ix = x + look
        d.ellipse(box(ix, eyc + ery * 0.08, irx, iry), fill=iris_dark)
        d.ellipse(box(ix, eyc + ery * 0.18, irx * 0.8, iry * 0.72), fill=iris)
        d.ellipse(box(ix, eyc + ery * 0.12, irx * 0.42, iry * 0.45), fill=_shade(iris_dark, 0.5))
        d.ellipse(box(ix - irx * 0.35, eyc - ery * 0.3, irx * 0.3, iry * 0.28), fill=(255, 255, 255))
        if rng.random() < 0.7:
            d.ellipse(box(ix + irx * 0.35, eyc + ery * 0.45, irx * 0.15, iry * 0.13), fill=(255, 255, 255))
        # Upper lash line over the top of the eye, thicker at the outer corner.
        lash = [
            (u(x - erx * 1.15), u(eyc - ery * 0.55 + (0.0 if side < 0 else 0.02))),
            (u(x), u(eyc - ery * 1.12)),
            (u(x + erx * 1.15), u(eyc - ery * 0.55 + (0.02 if side < 0 else 0.0))),
            (u(x + side * erx * 1.25), u(eyc - ery * 0.35)),
            (u(x), u(eyc - ery * 0.86)),
            (u(x - side * erx * 1.1), u(eyc - ery * 0.45)),
        ]
        d.polygon(lash, fill=line)
        # Eyebrow.
        by = eyc - ery * rng.uniform(1.45, 1.7)
        d.line([(u(x - erx * 0.8), u(by + 0.006)), (u(x + erx * 0.8), u(by - 0.004 * side))], fill=hair_dark, width=max(1, int(u(0.008))))

    # Blush, on a translucent layer.
    if rng.random() < 0.75:
        over = Image.new("RGBA", (S, S), (0, 0, 0, 0))
        od = ImageDraw.Draw(over)
        for side in (-1, 1):
            od.ellipse(box(cx + side * ex * 1.15, eyc + ery * 1.55, erx * 0.85, ery * 0.3), fill=(255, 90, 110, int(rng.uniform(60, 130))))
        img.paste(over, (0, 0), over)
        d = ImageDraw.Draw(img)

    # Nose and mouth.
    ny = eyc + (chin_y - eyc) * 0.45
    d.line([(u(cx), u(ny - 0.008)), (u(cx + 0.005), u(ny))], fill=_shade(skin, 0.7), width=max(1, int(u(0.005))))
    my = eyc + (chin_y - eyc) * 0.72
    mw = fw * rng.uniform(0.12, 0.25)
    mouth = rng.integers(3)
    if mouth == 0:  # smile
        d.arc(box(cx, my - 0.012, mw, 0.02), 20, 160, fill=(120, 40, 50), width=max(1, int(u(0.006))))
    elif mouth == 1:  # open mouth
        d.chord(box(cx, my - 0.008, mw * 0.8, 0.022), 0, 180, fill=(150, 40, 55))
        d.chord(box(cx, my + 0.006, mw * 0.45, 0.01), 180, 360, fill=(230, 110, 120))
    else:  # small straight mouth
        d.line([(u(cx - mw * 0.6), u(my)), (u(cx + mw * 0.6), u(my))], fill=(120, 40, 50), width=max(1, int(u(0.006))))

    # Fringe over the forehead: several cuts.
    fringe = _FRINGES[rng.integers(len(_FRINGES))]
    fy = eyc - ery * rng.uniform(1.2, 1.7)  # where the fringe ends (just above the eyes)
    left, right = cx - hw * 1.01, cx + hw * 1.01
    crown = top - 0.01
    if fringe == "spiky":
        n = int(rng.integers(4, 8))
        pts = [(u(left), u(top + 0.3 * sc))]
        for k in range(n):
            x0 = left + (right - left) * k / n
            x1 = left + (right - left) * (k + 0.5) / n
            pts += [(u(x0), u(fy - 0.06)), (u(x1 + rng.uniform(-0.01, 0.01)), u(fy + rng.uniform(-0.02, 0.03)))]
        pts += [(u(right), u(fy - 0.06)), (u(right), u(top + 0.3 * sc)), (u(cx), u(crown))]
    elif fringe == "straight":
        pts = [(u(left), u(top + 0.35 * sc)), (u(left + 0.03), u(fy)), (u(right - 0.03), u(fy)),
               (u(right), u(top + 0.35 * sc)), (u(cx), u(crown))]
    elif fringe == "swept":
        s = 1 if rng.random() < 0.5 else -1
        a, b = (left, right) if s > 0 else (right, left)
        pts = [(u(a), u(top + 0.3 * sc)), (u(a), u(fy + 0.02)), (u(b - s * 0.05), u(fy - 0.1)),
               (u(b), u(top + 0.33 * sc)), (u(cx), u(crown))]
    elif fringe == "parted":
        pts = [(u(left), u(top + 0.3 * sc)), (u(left + 0.02), u(fy)), (u(cx - 0.03), u(fy - 0.04)),
               (u(cx), u(top + 0.13 * sc)), (u(cx + 0.03), u(fy - 0.04)), (u(right - 0.02), u(fy)),
               (u(right), u(top + 0.3 * sc)), (u(cx), u(crown))]
    else:  # curtain: long strands framing the face with a gap in the middle
        gap = rng.uniform(0.03, 0.07)
        pts = [(u(left), u(top + 0.3 * sc)), (u(left), u(eyc + 0.06)), (u(cx - gap), u(fy - 0.03)),
               (u(cx), u(fy - 0.07)), (u(cx + gap), u(fy - 0.03)), (u(right), u(eyc + 0.06)),
               (u(right), u(top + 0.3 * sc)), (u(cx), u(crown))]
    d.polygon(pts, fill=hair)
    # A shine band across the crown and side locks framing the cheeks.
    d.arc(box(cx, top + 0.17 * sc, hw * 0.7, 0.1 * sc), 200, 340, fill=hair_light, width=max(1, int(u(0.015))))
    for side in (-1, 1):
        x0 = cx + side * fw * 1.05
        d.polygon([(u(x0 - side * 0.05), u(top + 0.2 * sc)), (u(x0 + side * 0.02), u(top + 0.22 * sc)),
                   (u(x0 + side * 0.01), u(chin_y - 0.02)), (u(x0 - side * 0.03), u(chin_y - 0.08))], fill=hair)
    if rng.random() < 0.25:  # a ribbon
        rc = _rgb(rng.random(), 0.8, 0.9)
        rx, ry = cx + rng.choice([-1, 1]) * hw * 0.75, top + 0.07 * sc
        d.polygon([(u(rx), u(ry)), (u(rx - 0.07), u(ry - 0.05)), (u(rx - 0.07), u(ry + 0.05))], fill=rc)
        d.polygon([(u(rx), u(ry)), (u(rx + 0.07), u(ry - 0.05)), (u(rx + 0.07), u(ry + 0.05))], fill=rc)

    return img.resize((size, size), Image.LANCZOS) if S != size else img


def face_array(index: int, size: int, seed: int = 0) -> np.ndarray:
    """Face ``index`` as ``uint8`` ``[size, size, 3]``."""
    return np.asarray(render_face(index, size, seed), dtype=np.uint8)

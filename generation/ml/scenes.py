"""Procedural illustrations with captions and ground truth.

Every picture the built-in base model learns from is drawn here with Pillow,
so the platform's base model carries no third-party rights. A `Scene` is the
ground truth (object, colour, background, position, size, count); `render`
draws it in the plain base style or in one of the demo artists' styles, and
`caption` writes it from a small grammar whose plainest form is
``a {colour} {object} on a {colour} background, {position}``.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 32
# Shapes are drawn this many times larger and box-filtered down, which gives
# clean anti-aliased edges at 32 px.
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 215, 40),
    "green": (40, 160, 70),
    "blue": (40, 90, 215),
    "purple": (130, 60, 180),
    "pink": (245, 140, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
OBJECTS = ("circle", "square", "triangle", "star", "house", "tree", "heart", "moon")
# Position name -> (column, row) in a 3x3 layout.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "centre": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
CORNERS = ("top left", "top right", "bottom left", "bottom right")
SIZES = ("small", "large")
COUNTS = (1, 2)

# Layout as fractions of the image side. Cell centres sit far enough apart
# (0.28 of the side, 9 px at 32 px) that a small object in a corner is still
# clearly in its corner, and a large one still fits inside the picture.
CELL_CENTRES = (0.22, 0.5, 0.78)
OBJECT_RADIUS = {"small": 0.15, "large": 0.21}
PAIR_RADIUS = 0.12
PAIR_OFFSET = 0.16
JITTER = 0.03


@dataclass(frozen=True)
class Scene:
    object: str
    colour: str
    background: str
    position: str
    size: str = "large"
    count: int = 1
    # Sub-pixel jitter of the layout, part of the scene so rendering is pure.
    dx: float = 0.0
    dy: float = 0.0

    def truth(self) -> dict:
        return asdict(self)

    @property
    def combination(self) -> tuple[str, str, str, str]:
        return (self.colour, self.object, self.background, self.position)


def is_held_out(scene: Scene) -> bool:
    """About 10% of (colour, object, background, position) combinations are
    never drawn for training, so evaluation captions are new to the model."""
    key = "|".join(scene.combination).encode()
    return zlib.crc32(key) % 10 == 0


def random_scene(rng: random.Random, *, held_out: bool | None = False, count: int | None = None) -> Scene:
    """Draws a scene; `held_out` False/True keeps to training/evaluation
    combinations, None allows both."""
    while True:
        colour, background = rng.sample(sorted(COLOURS), 2)
        position = rng.choice(list(POSITIONS))
        n = count if count is not None else (2 if rng.random() < 0.15 else 1)
        if n == 2 and position in CORNERS:  # two objects do not fit in a corner
            n = 1
        scene = Scene(
            object=rng.choice(OBJECTS),
            colour=colour,
            background=background,
            position=position,
            size="small" if n == 2 else rng.choice(SIZES),
            count=n,
            dx=rng.uniform(-JITTER, JITTER),
            dy=rng.uniform(-JITTER, JITTER),
        )
        if held_out is None or is_held_out(scene) == held_out:
            return scene


def object_centres(scene: Scene) -> list[tuple[float, float, float]]:
    """(x, y, radius) of each drawn object, as fractions of the image side."""
    column, row = POSITIONS[scene.position]
    cx, cy = CELL_CENTRES[column] + scene.dx, CELL_CENTRES[row] + scene.dy
    if scene.count == 1:
        return [(cx, cy, OBJECT_RADIUS[scene.size])]
    # A pair lies along the edge it belongs to: side by side at the top,
    # bottom and centre, one above the other on the left and right.
    if scene.position in ("left", "right"):
        return [(cx, cy - PAIR_OFFSET, PAIR_RADIUS), (cx, cy + PAIR_OFFSET, PAIR_RADIUS)]
    return [(cx - PAIR_OFFSET, cy, PAIR_RADIUS), (cx + PAIR_OFFSET, cy, PAIR_RADIUS)]


def _star(cx: float, cy: float, r: float, points: int = 5, inner: float = 0.48) -> list[tuple[float, float]]:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, r, r * inner)
    return list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles) + 0.08 * r))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    """Draws one object's silhouette (fill 255) centred on (cx, cy), radius r."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        h = 0.82 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + 0.98 * r, cy + 0.78 * r), (cx - 0.98 * r, cy + 0.78 * r)], fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy, 1.08 * r), fill=255)
    elif shape == "house":
        draw.rectangle((cx - 0.68 * r, cy - 0.05 * r, cx + 0.68 * r, cy + 0.9 * r), fill=255)
        draw.polygon([(cx - r, cy + 0.02 * r), (cx, cy - r), (cx + r, cy + 0.02 * r)], fill=255)
    elif shape == "tree":
        draw.ellipse((cx - 0.68 * r, cy - r, cx + 0.68 * r, cy + 0.36 * r), fill=255)
        draw.rectangle((cx - 0.2 * r, cy, cx + 0.2 * r, cy + r), fill=255)
    elif shape == "heart":
        lobe = 0.52 * r
        for side in (-1, 1):
            x = cx + side * 0.47 * r
            draw.ellipse((x - lobe, cy - 0.35 * r - lobe, x + lobe, cy - 0.35 * r + lobe), fill=255)
        draw.polygon([(cx - 0.97 * r, cy - 0.22 * r), (cx + 0.97 * r, cy - 0.22 * r), (cx, cy + 0.95 * r)], fill=255)
    elif shape == "moon":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        bite = 0.82 * r
        bx, by = cx + 0.5 * r, cy - 0.22 * r
        draw.ellipse((bx - bite, by - bite, bx + bite, by + bite), fill=0)
    else:
        raise ValueError(f"unknown object {shape!r}")


def object_mask(scene: Scene, size: int = IMAGE_SIZE, supersample: int = SUPERSAMPLE) -> Image.Image:
    """The scene's objects as a greyscale mask at `size * supersample` px."""
    side = size * supersample
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    for x, y, r in object_centres(scene):
        draw_shape(draw, scene.object, x * side, y * side, r * side)
    return mask


# ---------------------------------------------------------------- styles


def _fill(size: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def _downsample(mask: Image.Image, size: int) -> Image.Image:
    return mask.resize((size, size), Image.Resampling.BOX)


def _dilate(mask: Image.Image, pixels: int) -> Image.Image:
    return mask.filter(ImageFilter.MaxFilter(2 * pixels + 1))


def _pastel(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(0.55 * c + 0.45 * 255) for c in colour)


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(c * factor) for c in colour)


def _stripes(size: int, period: int, direction: int) -> Image.Image:
    """1-pixel diagonal lines every `period` pixels, as a mask."""
    y, x = np.mgrid[0:size, 0:size]
    return Image.fromarray((((x + direction * y) % period) == 0).astype(np.uint8) * 255)


def render_plain(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The base model's own style: flat colours, soft anti-aliased edges."""
    mask = _downsample(object_mask(scene, size), size)
    return Image.composite(_fill(size, COLOURS[scene.colour]), _fill(size, COLOURS[scene.background]), mask)


def render_pastel_outline(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Demo style: pastel palette with thick dark outlines."""
    big = object_mask(scene, size)
    outline = _downsample(_dilate(big, int(1.4 * SUPERSAMPLE)), size)
    fill = _downsample(big, size)
    image = _fill(size, _pastel(COLOURS[scene.background]))
    image = Image.composite(_fill(size, (45, 35, 60)), image, outline)
    return Image.composite(_fill(size, _pastel(COLOURS[scene.colour])), image, fill)


def render_ink_hatching(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Demo style: hatched ink texture, a thin ink outline, a lightly hatched ground."""
    big = object_mask(scene, size)
    fill = _downsample(big, size)
    outline = _downsample(_dilate(big, SUPERSAMPLE // 2 + 1), size)
    background = COLOURS[scene.background]
    image = Image.composite(_fill(size, _shade(background, 0.8)), _fill(size, background), _stripes(size, 4, -1))
    image = Image.composite(_fill(size, (30, 25, 20)), image, outline)
    colour = COLOURS[scene.colour]
    body = Image.composite(_fill(size, _shade(colour, 0.45)), _fill(size, colour), _stripes(size, 3, 1))
    return Image.composite(body, image, fill)


# A limited 16-colour palette in the manner of 8-bit games.
PIXEL_PALETTE = (
    (0, 0, 0), (29, 43, 83), (126, 37, 83), (0, 135, 81), (171, 82, 54), (95, 87, 79),
    (194, 195, 199), (255, 241, 232), (255, 0, 77), (255, 163, 0), (255, 236, 39),
    (0, 228, 54), (41, 173, 255), (131, 118, 156), (255, 119, 168), (255, 204, 170),
)


def _nearest_palette(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return min(PIXEL_PALETTE, key=lambda p: sum((a - b) ** 2 for a, b in zip(p, colour)))


def render_pixel_art(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Demo style: hard-edged 2x2 pixels, a 16-colour palette, a darker rim."""
    low = size // 2
    inside = object_mask(scene, low).resize((low, low), Image.Resampling.BOX).point(lambda v: 255 if v >= 128 else 0)
    rim = _dilate(inside, 1)
    colour = _nearest_palette(COLOURS[scene.colour])
    image = _fill(low, _nearest_palette(COLOURS[scene.background]))
    image = Image.composite(_fill(low, _nearest_palette(_shade(colour, 0.5))), image, rim)
    image = Image.composite(_fill(low, colour), image, inside)
    return image.resize((size, size), Image.Resampling.NEAREST)


def render_line_drawing(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Thin 1-pixel outlines only; in the autoencoder's data so that thin
    lines survive encoding (not a demo artist)."""
    big = object_mask(scene, size)
    ring = Image.fromarray(
        np.clip(np.asarray(_dilate(big, SUPERSAMPLE // 2), np.int16) - np.asarray(big.filter(ImageFilter.MinFilter(SUPERSAMPLE + 1)), np.int16), 0, 255).astype(np.uint8)
    )
    return Image.composite(_fill(size, COLOURS[scene.colour]), _fill(size, COLOURS[scene.background]), _downsample(ring, size))


@dataclass(frozen=True)
class ArtistStyle:
    slug: str
    artist: str
    description: str


# The demo artists whose styles a LoRA adapter learns on top of the base model.
DEMO_STYLES: dict[str, ArtistStyle] = {
    "pastel-outline": ArtistStyle("pastel-outline", "Mika Aoki", "pastel colours with thick dark outlines"),
    "ink-hatching": ArtistStyle("ink-hatching", "Jonas Feder", "diagonal ink hatching with a thin outline"),
    "pixel-art": ArtistStyle("pixel-art", "Pia Quadrat", "flat pixel art in a 16-colour palette"),
}
RENDERERS = {
    "plain": render_plain,
    "pastel-outline": render_pastel_outline,
    "ink-hatching": render_ink_hatching,
    "pixel-art": render_pixel_art,
    "line-drawing": render_line_drawing,
}


def render(scene: Scene, style: str = "plain", size: int = IMAGE_SIZE) -> Image.Image:
    try:
        renderer = RENDERERS[style]
    except KeyError:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(RENDERERS)}") from None
    return renderer(scene, size)


# ---------------------------------------------------------------- captions


def _noun(scene: Scene) -> str:
    return scene.object + ("s" if scene.count == 2 else "")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _place(position: str) -> str:
    if position == "centre":
        return "in the centre"
    return f"in the {position} corner" if position in CORNERS else f"at the {position}"


def plain_caption(scene: Scene) -> str:
    """The form the model must answer: 'a red star on a blue background, top left'."""
    subject = f"a {scene.colour}" if scene.count == 1 else f"two {scene.colour}"
    return f"{subject} {_noun(scene)} on a {scene.background} background, {scene.position}"


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """The plain caption, or (with an rng) one of the grammar's variants;
    every variant names the colour, object, background, position and count."""
    if rng is None or rng.random() < 0.5:
        return plain_caption(scene)
    c, noun, bg, pos = scene.colour, _noun(scene), scene.background, scene.position
    if scene.count == 1:
        subject = f"{_article(scene.size)} {scene.size} {c} {noun}" if rng.random() < 0.5 else f"{_article(c)} {c} {noun}"
    else:
        subject = f"two {c} {noun}" if rng.random() < 0.5 else f"two small {c} {noun}"
    variants = (
        f"{subject} on {_article(bg)} {bg} background, {pos}",
        f"{subject} {_place(pos)}, {bg} background",
        f"{subject} {_place(pos)} on {_article(bg)} {bg} background",
        f"{pos}: {subject}, {bg} background",
        f"{bg} background with {subject} {_place(pos)}",
    )
    return rng.choice(variants)


@dataclass(frozen=True)
class Illustration:
    image: Image.Image
    caption: str
    scene: Scene


def illustration(seed: int, style: str = "plain", *, held_out: bool | None = False, varied_caption: bool = False) -> Illustration:
    """One seeded drawing with its caption and ground truth."""
    rng = random.Random(seed)
    scene = random_scene(rng, held_out=held_out)
    return Illustration(render(scene, style), caption(scene, rng if varied_caption else None), scene)


def image_to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)

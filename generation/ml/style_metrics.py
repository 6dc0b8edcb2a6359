"""A style distance between two sets of images, made for the demo styles.

The scenes' content (which colour, which object, where) changes from image to
image, so the measure looks only at what a style changes whatever the
content, on images brought to the base model's resolution:

* palette: a joint histogram of saturation x brightness (4 x 4 bins), blind to
  hue, so "pastel" (light, washed out), "ink" (dark lines, shaded fills) and
  "pixel art" (a saturated 16-colour palette) differ while a red star and a
  blue moon in one style do not;
* texture, five statistics of the luminance: edge density (share of
  neighbouring pixels differing by more than 0.1), high-frequency energy (RMS of
  the image minus its 3x3 blur: hatching), dark share (brightness under 0.3:
  outlines and ink), 2x2 blockiness (differences across block borders over all
  differences: pixel art) and diagonal-line energy (hatching along the
  diagonals).

The distance between two sets is the L1 distance of their mean palette
histograms (0 to 2) plus the mean absolute difference of their mean texture
statistics, each divided by its spread over a fixed reference set (every
renderer of the scene generator on the same 48 scenes), so no statistic
dominates by its units.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from . import scenes

SATURATION_BINS = 4
VALUE_BINS = 4
TEXTURE_NAMES = ("edge_density", "hf_energy", "dark_share", "blockiness", "diagonal_energy")


def to_array(image: Image.Image, size: int = scenes.IMAGE_SIZE) -> np.ndarray:
    """RGB floats in [0, 1] at size x size (area average when shrinking)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        shrink = image.width >= size and image.height >= size
        image = image.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def _blur3(y: np.ndarray) -> np.ndarray:
    padded = np.pad(y, 1, mode="edge")
    return sum(padded[i:i + y.shape[0], j:j + y.shape[1]] for i in range(3) for j in range(3)) / 9.0


def palette_histogram(rgb: np.ndarray) -> np.ndarray:
    value = rgb.max(axis=-1)
    saturation = np.where(value > 0, (value - rgb.min(axis=-1)) / np.maximum(value, 1e-6), 0.0)
    s = np.minimum((saturation * SATURATION_BINS).astype(int), SATURATION_BINS - 1)
    v = np.minimum((value * VALUE_BINS).astype(int), VALUE_BINS - 1)
    hist = np.bincount((s * VALUE_BINS + v).ravel(), minlength=SATURATION_BINS * VALUE_BINS).astype(np.float64)
    return hist / hist.sum()


def texture_statistics(rgb: np.ndarray) -> np.ndarray:
    y = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gx, gy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    edge_density = 0.5 * ((gx > 0.1).mean() + (gy > 0.1).mean())
    hf_energy = float(np.sqrt(((y - _blur3(y)) ** 2).mean()))
    dark_share = float((rgb.max(axis=-1) < 0.3).mean())
    # Differences inside aligned 2x2 blocks vs across their borders.
    within = np.concatenate([gx[:, 0::2].ravel(), gy[0::2, :].ravel()])
    across = np.concatenate([gx[:, 1::2].ravel(), gy[1::2, :].ravel()])
    blockiness = float(across.sum() / (within.sum() + across.sum() + 1e-6))
    # Second differences along each diagonal: thin diagonal lines light one up.
    d1 = y[1:-1, 1:-1] * 2 - y[:-2, :-2] - y[2:, 2:]
    d2 = y[1:-1, 1:-1] * 2 - y[:-2, 2:] - y[2:, :-2]
    diagonal_energy = float(np.sqrt((d1 ** 2).mean()) + np.sqrt((d2 ** 2).mean())) / 2
    return np.array([edge_density, hf_energy, dark_share, blockiness, diagonal_energy], dtype=np.float64)


@dataclass(frozen=True)
class StyleSummary:
    """Mean palette histogram and mean texture statistics of a set of images."""

    palette: np.ndarray
    texture: np.ndarray
    count: int

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "texture": {name: round(float(v), 4) for name, v in zip(TEXTURE_NAMES, self.texture)},
        }


@dataclass(frozen=True)
class ImageStatistics:
    """Each image's palette histogram and texture statistics, one row per image."""

    palettes: np.ndarray
    textures: np.ndarray

    def summary(self, rows=None) -> StyleSummary:
        """The set's summary, or that of the images at `rows` (repeats allowed, as a resample draws them)."""
        palettes, textures = (self.palettes, self.textures) if rows is None else (self.palettes[rows], self.textures[rows])
        return StyleSummary(palette=palettes.mean(axis=0), texture=textures.mean(axis=0), count=len(palettes))


def image_statistics(images, size: int = scenes.IMAGE_SIZE) -> ImageStatistics:
    arrays = [image if isinstance(image, np.ndarray) else to_array(image, size) for image in images]
    if not arrays:
        raise ValueError("no images to summarise")
    return ImageStatistics(palettes=np.array([palette_histogram(a) for a in arrays]),
                           textures=np.array([texture_statistics(a) for a in arrays]))


def summarise(images, size: int = scenes.IMAGE_SIZE) -> StyleSummary:
    return image_statistics(images, size).summary()


@lru_cache(maxsize=1)
def texture_scales() -> np.ndarray:
    """Spread (standard deviation) of each texture statistic over the
    reference set: every renderer on the same 48 seeded scenes."""
    rng = random.Random(7)
    scene_list = [scenes.random_scene(rng, held_out=None) for _ in range(48)]
    stats = np.array([texture_statistics(to_array(scenes.render(scene, style)))
                      for style in sorted(scenes.RENDERERS) for scene in scene_list])
    return np.maximum(stats.std(axis=0), 1e-3)


def distance_parts(a: StyleSummary, b: StyleSummary) -> dict[str, float]:
    palette = float(np.abs(a.palette - b.palette).sum())
    texture = float(np.mean(np.abs(a.texture - b.texture) / texture_scales()))
    return {"palette": palette, "texture": texture, "total": palette + texture}


def style_distance(a, b) -> float:
    """Distance between two image sets (or StyleSummaries)."""
    a = a if isinstance(a, StyleSummary) else summarise(a)
    b = b if isinstance(b, StyleSummary) else summarise(b)
    return distance_parts(a, b)["total"]


def fraction_closed_interval(base: ImageStatistics, lora: ImageStatistics, works: ImageStatistics, *, paired: bool,
                             resamples: int = 1000, level: float = 0.9, seed: int = 0) -> list[float] | None:
    """How much the fraction closed depends on which scenes were drawn: the central `level` of its values over
    `resamples` sets drawn with replacement from the measured ones (a percentile bootstrap). Base and LoRA samples,
    drawn for the same prompts and seeds, are resampled together; with `paired`, the works too (the i-th sample
    was drawn for the i-th work's caption). None where no resample has a distance from the base to close."""
    rng = np.random.default_rng(seed % 2**64)  # a negative seed as torch's generators take it (numpy refuses it)
    n_samples, n_works = len(base.palettes), len(works.palettes)
    fractions = []
    for _ in range(resamples):
        rows = rng.integers(0, n_samples, n_samples)
        works_summary = works.summary(rows if paired else rng.integers(0, n_works, n_works))
        base_distance = distance_parts(base.summary(rows), works_summary)["total"]
        if base_distance > 0:
            fractions.append(1 - distance_parts(lora.summary(rows), works_summary)["total"] / base_distance)
    if not fractions:
        return None
    low, high = np.quantile(fractions, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]

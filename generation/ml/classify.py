"""Reads a scene back from pixels: background, object colour, position, shape.

Used to measure how well generated images follow their captions. It knows
the scene generator's palette, layout and shapes, and is checked against the
generator's own drawings (tests/ml), so its figures mean something.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from . import scenes

PALETTE_NAMES = list(scenes.COLOURS)
PALETTE = np.array([scenes.COLOURS[name] for name in PALETTE_NAMES], dtype=np.float32)
TEMPLATE_SIDE = 16
# Centroid thresholds between the three layout columns/rows (cell centres
# are at 0.22, 0.5 and 0.78 of the side).
COLUMN_EDGES = (0.36, 0.64)


def _nearest_colour(rgb: np.ndarray) -> int:
    return int(np.argmin(((PALETTE - rgb) ** 2).sum(axis=-1)))


def _object_mask(pixels: np.ndarray) -> tuple[np.ndarray, str, np.ndarray]:
    """Boolean mask of the main object, the background's name and its RGB."""
    labels = np.argmin(((pixels[:, :, None, :] - PALETTE) ** 2).sum(axis=-1), axis=-1)
    background_index = int(np.bincount(labels.ravel(), minlength=len(PALETTE)).argmax())
    background_rgb = np.median(pixels[labels == background_index], axis=0)
    # Half the distance to the nearest other palette colour: anything farther
    # from the background than that is drawn on top of it.
    others = np.delete(PALETTE, background_index, axis=0)
    threshold = 0.5 * np.sqrt(((others - PALETTE[background_index]) ** 2).sum(axis=-1)).min()
    distance = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=-1))
    mask = distance > threshold
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, components, range(1, count + 1))
        mask = components == (int(np.argmax(sizes)) + 1)
    return mask, PALETTE_NAMES[background_index], distance


def _normalised_crop(mask: np.ndarray) -> np.ndarray:
    """The mask cropped to a square around its bounding box, resized to a
    fixed side: compares shapes whatever their size and place."""
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(bottom - top, right - left)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    crop = image.transform((TEMPLATE_SIDE, TEMPLATE_SIDE), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def shape_templates() -> np.ndarray:
    """The mean normalised silhouette of each object, from the generator's
    own 32 px drawings at both sizes and many jittered positions."""
    rng = random.Random(0)
    templates = []
    for shape in scenes.OBJECTS:
        crops = []
        for _ in range(24):
            scene = scenes.Scene(
                shape, "black", "white", rng.choice(list(scenes.POSITIONS)), rng.choice(scenes.SIZES),
                dx=rng.uniform(-scenes.JITTER, scenes.JITTER), dy=rng.uniform(-scenes.JITTER, scenes.JITTER),
            )
            pixels = np.asarray(scenes.render(scene), dtype=np.float32)
            crops.append(_normalised_crop(pixels.mean(axis=-1) < 128))
        templates.append(np.mean(crops, axis=0))
    return np.stack(templates)


def classify(image: Image.Image) -> dict:
    """Ground-truth-like attributes read from an image: background, colour,
    position, shape (None where no object stands out from the background)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    side = pixels.shape[0]
    mask, background, distance = _object_mask(pixels)
    if mask.sum() < 2:
        return {"background": background, "colour": None, "position": None, "shape": None}
    # The object's own colour: its pixels farthest from the background
    # (anti-aliased edges are a blend of both).
    weights = distance[mask]
    core = pixels[mask][weights >= np.median(weights)]
    colour = PALETTE_NAMES[_nearest_colour(np.median(core, axis=0))]
    rows, cols = np.nonzero(mask)
    column = int(np.searchsorted(COLUMN_EDGES, (cols.mean() + 0.5) / side))
    row = int(np.searchsorted(COLUMN_EDGES, (rows.mean() + 0.5) / side))
    position = next(name for name, cell in scenes.POSITIONS.items() if cell == (column, row))
    errors = ((shape_templates() - _normalised_crop(mask)) ** 2).sum(axis=(1, 2))
    shape = scenes.OBJECTS[int(np.argmin(errors))]
    return {"background": background, "colour": colour, "position": position, "shape": shape}

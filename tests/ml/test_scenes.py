"""The procedural scene generator: deterministic, truthful, and captioned."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from generation.ml import scenes


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_seed_gives_same_drawing_caption_and_truth():
    first, second = scenes.illustration(42, varied_caption=True), scenes.illustration(42, varied_caption=True)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.caption == second.caption
    assert first.scene == second.scene


def test_different_seeds_give_different_scenes():
    drawn = {scenes.illustration(seed).scene for seed in range(50)}
    assert len(drawn) == 50


def test_ground_truth_matches_the_pixels():
    rng = random.Random(3)
    for _ in range(100):
        scene = scenes.random_scene(rng, held_out=None, count=1)
        image = pixels(scenes.render(scene))
        x, y, _ = scenes.object_centres(scene)[0]
        side = scenes.IMAGE_SIZE
        # A square, circle... is solid at its centre; a moon's bite is not, so
        # look at the object's left flank there.
        px = int((x - (0.6 if scene.object == "moon" else 0) * scenes.OBJECT_RADIUS[scene.size]) * side)
        py = int((y + (0.35 if scene.object == "tree" else 0) * scenes.OBJECT_RADIUS[scene.size]) * side)
        assert tuple(image[py, px]) == scenes.COLOURS[scene.colour], scene
        # The corner diagonally opposite the object is background.
        column, row = scenes.POSITIONS[scene.position]
        far = (side - 1 if column == 0 else 0, side - 1 if row == 0 else 0)
        assert tuple(image[far[1], far[0]]) == scenes.COLOURS[scene.background], scene


def test_two_objects_are_drawn_as_two_separate_shapes():
    from scipy import ndimage

    scene = scenes.Scene("star", "red", "blue", "top", size="small", count=2)
    mask = (pixels(scenes.render(scene)) != scenes.COLOURS["blue"]).any(axis=-1)
    assert ndimage.label(mask)[1] == 2


def test_plain_caption_has_the_form_the_model_must_answer():
    scene = scenes.Scene("star", "red", "blue", "top left")
    assert scenes.plain_caption(scene) == "a red star on a blue background, top left"
    assert scenes.caption(scene) == scenes.plain_caption(scene)


def test_every_caption_variant_names_every_attribute():
    rng = random.Random(0)
    for _ in range(300):
        scene = scenes.random_scene(rng, held_out=None)
        text = scenes.caption(scene, rng)
        assert re.search(rf"\b{scene.colour}\b", text) and re.search(rf"\b{scene.background} background\b", text), text
        assert scene.object in text and scene.position in text, text
        assert ("two" in text) == (scene.count == 2), text


def test_about_a_tenth_of_combinations_are_held_out_and_never_drawn_for_training():
    rng = random.Random(1)
    assert not any(scenes.is_held_out(scenes.random_scene(rng)) for _ in range(500))
    assert all(scenes.is_held_out(scenes.random_scene(rng, held_out=True)) for _ in range(50))
    everything = [scenes.Scene(o, c, b, p) for o in scenes.OBJECTS for c in scenes.COLOURS for b in scenes.COLOURS
                  for p in scenes.POSITIONS if b != c]
    share = sum(map(scenes.is_held_out, everything)) / len(everything)
    assert 0.07 < share < 0.13


@pytest.mark.parametrize("style", sorted(scenes.DEMO_STYLES))
def test_demo_styles_are_deterministic_and_differ_from_the_plain_style(style):
    scene = scenes.Scene("house", "yellow", "green", "centre")
    styled = scenes.render(scene, style)
    assert styled.tobytes() == scenes.render(scene, style).tobytes()
    assert styled.size == (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE)
    assert np.abs(pixels(styled) - pixels(scenes.render(scene))).mean() > 5


def test_demo_styles_are_clearly_different_from_each_other():
    scene = scenes.Scene("star", "red", "blue", "centre")
    drawn = [pixels(scenes.render(scene, style)) for style in scenes.DEMO_STYLES]
    for i in range(len(drawn)):
        for j in range(i + 1, len(drawn)):
            assert np.abs(drawn[i] - drawn[j]).mean() > 10


def test_unknown_style_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown style"):
        scenes.render(scenes.Scene("star", "red", "blue", "centre"), "watercolour")

"""The evaluation's pixel classifier reads the generator's own drawings right,
so its accuracy figures on generated images mean something."""

from __future__ import annotations

import random

import pytest

from generation.ml import scenes
from generation.ml.classify import classify
from generation.ml.evaluate_base import ATTRIBUTES, held_out_scenes


def accuracy_on_clean_drawings(n: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    correct = dict.fromkeys(ATTRIBUTES, 0)
    for _ in range(n):
        scene = scenes.random_scene(rng, held_out=None, count=1)
        found = classify(scenes.render(scene))
        for name, field in ATTRIBUTES.items():
            correct[name] += found[name] == getattr(scene, field)
    return {name: hits / n for name, hits in correct.items()}


def test_classifier_is_at_least_95_percent_right_on_clean_drawings():
    accuracy = accuracy_on_clean_drawings(400, seed=11)
    assert min(accuracy.values()) >= 0.95, accuracy


def test_classifier_reads_a_known_scene_exactly():
    scene = scenes.Scene("moon", "yellow", "black", "bottom right", size="small")
    assert classify(scenes.render(scene)) == {
        "background": "black", "colour": "yellow", "position": "bottom right", "shape": "moon",
    }


def test_empty_picture_has_no_object():
    image = scenes.render(scenes.Scene("star", "blue", "blue", "centre"))  # same colour: nothing stands out
    assert classify(image)["shape"] is None


@pytest.mark.parametrize("n", [1, 200])
def test_evaluation_captions_are_distinct_and_never_drawn_for_training(n):
    chosen = held_out_scenes(n)
    assert len(chosen) == n
    assert len({scenes.plain_caption(s) for s in chosen}) == n
    assert all(scenes.is_held_out(s) and s.count == 1 for s in chosen)

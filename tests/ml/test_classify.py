"""The evaluation's pixel classifier reads the generator's own drawings right,
so its accuracy figures on generated images mean something."""

from __future__ import annotations

import random

import pytest

from generation.ml import scenes
from generation.ml.classify import classify
from generation.ml.evaluate_base import ATTRIBUTES, held_out_caption_count, held_out_scenes
from generation.ml.evaluate_base import main as evaluate_base_main


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


@pytest.mark.parametrize("n", [1, 200, held_out_caption_count()])
def test_evaluation_captions_are_distinct_and_never_drawn_for_training(n):
    chosen = held_out_scenes(n)
    assert len(chosen) == n
    assert len({scenes.plain_caption(s) for s in chosen}) == n
    assert all(scenes.is_held_out(s) and s.count == 1 for s in chosen)


def test_asking_for_more_held_out_captions_than_exist_is_an_error_not_an_endless_draw():
    with pytest.raises(ValueError, match=f"only {held_out_caption_count()} held-out captions exist"):
        held_out_scenes(held_out_caption_count() + 1)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_base_main(["--n", str(held_out_caption_count() + 1)])
    assert exit_info.value.code == 2

"""Measures caption adherence of a base model on held-out captions.

    python -m generation.ml.evaluate_base --model DIR [--n 200]

Samples one image per plain caption of a (colour, object, background,
position) combination that the training never drew, reads the image back
with the pixel classifier and prints JSON with the accuracy per attribute
and its chance level.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from pathlib import Path

import torch

from . import BUILTIN_BASE_MODEL, default_threads, scenes
from .classify import classify
from .model_card import write_model_card
from .pipeline import generate, load_pipeline

ATTRIBUTES = {"colour": "colour", "background": "background", "position": "position", "shape": "object"}
CHANCE = {
    "colour": 1 / len(scenes.COLOURS),
    "background": 1 / len(scenes.COLOURS),
    "position": 1 / len(scenes.POSITIONS),
    "shape": 1 / len(scenes.OBJECTS),
}
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0


@functools.cache  # derived from the scene grammar's constants
def held_out_caption_count() -> int:
    """How many distinct held-out plain captions exist: the most `held_out_scenes` can give."""
    return sum(scenes.is_held_out(scenes.Scene(object=o, colour=c, background=b, position=p))
               for o in scenes.OBJECTS for c in scenes.COLOURS for b in scenes.COLOURS if b != c
               for p in scenes.POSITIONS)


def held_out_scenes(n: int, seed: int = 2024) -> list[scenes.Scene]:
    """n single-object scenes with distinct held-out plain captions."""
    if n > held_out_caption_count():  # the draw below would never end
        raise ValueError(f"only {held_out_caption_count()} held-out captions exist; asked for {n}")
    rng = random.Random(seed)
    chosen: dict[str, scenes.Scene] = {}
    while len(chosen) < n:
        scene = scenes.random_scene(rng, held_out=True, count=1)
        chosen.setdefault(scenes.plain_caption(scene), scene)
    return list(chosen.values())


def evaluate(pipe, n: int = 200, *, seed: int = 0, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, batch_size: int = 25) -> dict:
    targets = held_out_scenes(n)
    correct = {name: 0 for name in ATTRIBUTES}
    started = time.perf_counter()
    for start in range(0, n, batch_size):
        batch = targets[start : start + batch_size]
        images = generate(pipe, [scenes.plain_caption(s) for s in batch], seed=seed + start, steps=steps, guidance=guidance)
        for scene, image in zip(batch, images):
            found = classify(image)
            for name, field in ATTRIBUTES.items():
                correct[name] += found[name] == getattr(scene, field)
    seconds = time.perf_counter() - started
    return {
        "n": n,
        "accuracy": {name: round(correct[name] / n, 4) for name in ATTRIBUTES},
        "chance": {name: round(CHANCE[name], 4) for name in ATTRIBUTES},
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "seconds_per_image": round(seconds / n, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.evaluate_base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUILTIN_BASE_MODEL, help="diffusers model folder (default: the built-in one)")
    parser.add_argument("--n", type=int, default=200, help="number of held-out captions (default 200)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="write MODEL/evaluation.json and refresh its model card")
    args = parser.parse_args(argv)
    if not (args.model / "model_index.json").is_file():
        parser.error(f"--model {args.model}: not a diffusers model folder (no model_index.json)")
    if args.n < 1 or args.steps < 1:
        parser.error("--n and --steps must be at least 1")
    if args.n > held_out_caption_count():
        parser.error(f"--n: only {held_out_caption_count()} held-out captions exist")
    torch.set_num_threads(default_threads())
    pipe = load_pipeline(args.model)
    result = evaluate(pipe, args.n, seed=args.seed, steps=args.steps, guidance=args.guidance)
    print(json.dumps(result))
    if args.save:
        (args.model / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
        if (args.model / "training.json").is_file():
            write_model_card(args.model)
    return result


if __name__ == "__main__":
    main()

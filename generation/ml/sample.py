"""Samples images from a diffusers model folder (the built-in one by default).

    python -m generation.ml.sample --prompt "a red star on a blue background, top left" --out star.png

Writes PNG(s) and prints one JSON line per image. Image i of --count K uses
seed + i, so the same seed and parameters give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from . import BUILTIN_BASE_MODEL, default_threads
from .lora_training import (
    AdapterError, BaseModelError, UnknownResolution, apply_adapters, checked_adapter_file, load_base_pipeline,
    native_resolution_of,
)
from .pipeline import SamplesNotFinite, generate
from .train_lora import folder_write_problem, run_cli, seed_argument
from .training_config import SAMPLING_STEPS_MAX, SEED_MAX, SETTING_MAXIMA


def output_paths(out: Path, seeds: list[int]) -> list[Path]:
    """`out` itself for one image, else `<stem>-<seed><suffix>` beside it."""
    if len(seeds) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{seed}{out.suffix}") for seed in seeds]


def image_seeds(args: argparse.Namespace) -> list[int]:
    """Image i of --count K uses seed + i."""
    return [args.seed + i for i in range(args.count)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUILTIN_BASE_MODEL, help="diffusers model folder (default: the built-in one)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default=None, help="negative prompt")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="seed of the first image, -2**63 to 2**64 - 1; image i uses seed + i (default 0)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--width", type=int, help="default: the model's native size")
    parser.add_argument("--height", type=int, help="default: the model's native size")
    parser.add_argument("--upscale", type=int, default=1, help="enlarge the PNG N times, nearest-neighbour (default 1: native size)")
    parser.add_argument("--lora", type=Path,
                        help="LoRA adapter: a folder with pytorch_lora_weights.safetensors, or the file itself")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (default 1.0)")
    parser.add_argument("--out", type=Path, required=True, help="PNG path; with --count K, files are named <stem>-<seed>.png")
    args = parser.parse_args(argv)
    if not (args.model / "model_index.json").is_file():
        parser.error(f"--model {args.model}: not a diffusers model folder (no model_index.json)")
    try:  # its config files read now, not as a traceback once loading fails
        native = native_resolution_of(args.model)
    except UnknownResolution as exc:  # the pipeline would draw at sample_size * 8 px: None * 8
        if args.width is None or args.height is None:
            parser.error(f"--model: {exc}; give --width and --height")
        native = None
    except BaseModelError as exc:
        parser.error(f"--model: {exc}")
    if args.lora is not None:
        try:
            checked_adapter_file(args.lora)
        except AdapterError as exc:
            parser.error(f"--lora: {exc}")
    if args.steps < 1 or args.count < 1 or args.upscale < 1:
        parser.error("--steps, --count and --upscale must be at least 1")
    if args.steps > SAMPLING_STEPS_MAX:
        parser.error(f"--steps must be at most {SAMPLING_STEPS_MAX} (got {args.steps})")
    if args.seed + args.count - 1 > SEED_MAX:  # refused now, not after the first images are written
        parser.error(f"--seed {args.seed}: the {args.count} images take seeds up to {args.seed + args.count - 1}, "
                     "past 2**64 - 1")
    maximum = SETTING_MAXIMA["resolution"]  # training's bound; far larger sizes failed to allocate with a traceback
    for side in ("width", "height"):  # diffusers' pipelines draw multiples of 8 only
        value = getattr(args, side)
        if value is not None and (value < 8 or value % 8):
            parser.error(f"--{side} must be a multiple of 8, at least 8 (got {value})")
        if value is not None and value > maximum:
            parser.error(f"--{side} must be at most {maximum} (got {value})")
    width, height = (args.width or native) * args.upscale, (args.height or native) * args.upscale
    # Larger PNGs Pillow refuses to open as decompression bombs; --upscale 100000 grew until the OOM killer came.
    if width * height > Image.MAX_IMAGE_PIXELS:
        parser.error(f"--upscale {args.upscale}: the PNG would be {width}x{height} px, more than the "
                     f"{Image.MAX_IMAGE_PIXELS} px Pillow opens")
    if not (math.isfinite(args.guidance) and args.guidance >= 0 and math.isfinite(args.lora_scale)):
        parser.error("--guidance must be a number of at least 0, --lora-scale a finite number")
    if args.out.suffix.lower() != ".png":
        parser.error(f"--out {args.out}: must end in .png")
    # Checked now, not as an OSError once the images are drawn.
    problem = folder_write_problem(args.out.parent)
    if problem:
        parser.error(f"--out: {problem}")
    for path in output_paths(args.out, image_seeds(args)):
        if path.is_dir():
            parser.error(f"--out: {path} is a folder")
        if path.exists() and not os.access(path, os.W_OK):
            parser.error(f"--out: {path} is not writable")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    return run_cli(_main, argv, out_of_memory_advice="lower --width or --height")


def _main(argv: list[str] | None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(default_threads())
    try:
        pipe = load_base_pipeline(args.model)  # a folder diffusers cannot load: one sentence, as train_lora's --base
        if args.lora is not None:
            apply_adapters(pipe, [("style", args.lora, args.lora_scale)])
    except (AdapterError, BaseModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    seeds = image_seeds(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for seed, path in zip(seeds, output_paths(args.out, seeds)):
        started = time.perf_counter()
        try:
            image = generate(
                pipe, args.prompt, seed=seed, negative_prompt=args.negative, steps=args.steps,
                guidance=args.guidance, width=args.width, height=args.height,
            )[0]
        except SamplesNotFinite as exc:  # saved, it would be a black image
            cause = f"the LoRA at --lora-scale {args.lora_scale:g} (lower it)" if args.lora else f"--model {args.model}"
            print(f"error: {exc}; likely cause: {cause}", file=sys.stderr)
            raise SystemExit(2)
        seconds = time.perf_counter() - started
        native = image.size
        if args.upscale > 1:
            image = image.resize((native[0] * args.upscale, native[1] * args.upscale), Image.Resampling.NEAREST)
        image.save(path)
        record = {
            "path": str(path),
            "seed": seed,
            "prompt": args.prompt,
            "negative": args.negative,
            "steps": args.steps,
            "guidance": args.guidance,
            "model": str(args.model),
            "lora": str(args.lora) if args.lora else None,
            "lora_scale": args.lora_scale if args.lora else None,
            "native_size": list(native),
            "size": list(image.size),
            "upscaled": f"nearest x{args.upscale}" if args.upscale > 1 else None,
            "seconds": round(seconds, 3),
        }
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


if __name__ == "__main__":
    main()

"""Samples images from a diffusers model folder (the built-in one by default).

    python -m generation.ml.sample --prompt "a red star on a blue background, top left" --out star.png

Writes PNG(s) and prints one JSON line per image. Image i of --count K uses
seed + i, so the same seed and parameters give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from . import BUILTIN_BASE_MODEL, default_threads
from .lora_training import AdapterError, apply_adapters, checked_adapter_file
from .pipeline import generate, load_pipeline


def output_paths(out: Path, seeds: list[int]) -> list[Path]:
    """`out` itself for one image, else `<stem>-<seed><suffix>` beside it."""
    if len(seeds) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{seed}{out.suffix}") for seed in seeds]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUILTIN_BASE_MODEL, help="diffusers model folder (default: the built-in one)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default=None, help="negative prompt")
    parser.add_argument("--seed", type=int, default=0)
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
    if args.lora is not None:
        try:
            checked_adapter_file(args.lora)
        except AdapterError as exc:
            parser.error(f"--lora: {exc}")
    if args.steps < 1 or args.count < 1 or args.upscale < 1:
        parser.error("--steps, --count and --upscale must be at least 1")
    for side in ("width", "height"):  # diffusers' pipelines draw multiples of 8 only
        value = getattr(args, side)
        if value is not None and (value < 8 or value % 8):
            parser.error(f"--{side} must be a multiple of 8, at least 8 (got {value})")
    if not (math.isfinite(args.guidance) and args.guidance >= 0 and math.isfinite(args.lora_scale)):
        parser.error("--guidance must be a number of at least 0, --lora-scale a finite number")
    if args.out.suffix.lower() != ".png":
        parser.error(f"--out {args.out}: must end in .png")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(default_threads())
    pipe = load_pipeline(args.model)
    if args.lora is not None:
        try:
            apply_adapters(pipe, [("style", args.lora, args.lora_scale)])
        except AdapterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2)
    seeds = [args.seed + i for i in range(args.count)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for seed, path in zip(seeds, output_paths(args.out, seeds)):
        started = time.perf_counter()
        image = generate(
            pipe, args.prompt, seed=seed, negative_prompt=args.negative, steps=args.steps,
            guidance=args.guidance, width=args.width, height=args.height,
        )[0]
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

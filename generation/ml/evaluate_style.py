"""Measures how far a style LoRA moves the base model towards an artist's works.

    python -m generation.ml.evaluate_style --base DIR --lora DIR --works DIR
        [--n 48] [--style SLUG] [--grid PNG]

Samples the same prompts with the same seeds from the base model and from
the base with the LoRA, and prints JSON with the figures below. The prompts
are the works' own captions when every work has one (`name.txt`), so samples
and works show the same content and the distance sees only the style; give it
works the LoRA was not trained on (the demo command draws a held-out set).
Without captions (no work has one) the held-out captions of `evaluate_base`
are used; some works with captions and some without, or a caption without its
work, are refused as train_lora refuses them.

* the style distance (`style_metrics`: palette histogram + outline/texture
  statistics) from the base's samples to the works and from the LoRA's
  samples to the works, and the fraction of that distance the LoRA closes,
  with how much it depends on the scenes measured (the central 90% of it
  over 1000 resamples of the measured scenes, samples together with the
  works they were drawn for; too narrow with few works);
* the VAE bound: the same distance for the works passed through the base's
  VAE (how far what the latent space represents lies from the works; a
  reference, not a floor: the distance compares the sets' mean statistics, so
  samples can come closer than it), and the fraction of the closable distance
  (base minus bound) closed. A fraction is null where it is undefined: no
  distance from the base to close, or (for the closable one) none above the
  bound;
* the spread of the works themselves: the distance between their two halves
  (content noise when samples and works do not show the same scenes);
* caption adherence (the base model's pixel classifier on the held-out
  captions, `evaluate_base`) with and without the LoRA, in points (mean of
  the colour, background, position and shape accuracies, in %). With
  `--style SLUG` (a demo renderer of `scenes`) also the classifier's score
  on the works themselves drawn in that style for the same captions (how well
  the classifier reads that style at all), and the style-aware adherence: an
  attribute is right when the classifier reads it as the caption says, or as
  it reads the caption drawn in that style at one of the layouts the caption
  leaves open (both sizes, several sub-pixel shifts). The classifier knows
  the base's plain palette and reads a pastel blue as purple, or a small
  pixel-art star as a circle, a square or a house, however faithful the
  drawing; the plain score cannot tell that from a caption not followed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import BUILTIN_BASE_MODEL, default_threads, scenes
from . import style_metrics as sm
from .classify import classify
from .evaluate_base import ATTRIBUTES, DEFAULT_GUIDANCE, DEFAULT_STEPS, held_out_caption_count, held_out_scenes
from .lora_training import (
    WEIGHTS_NAME, AdapterError, BaseModelError, TrainingDataError, _native_resolution, apply_adapters, atomic_write,
    caption_report, checked_adapter_file, disable_adapters, load_base_pipeline, load_training_images,
    native_resolution_of, vae_batches,
)
from .pipeline import SamplesNotFinite, generate
from .train_lora import (
    DataFolderError, caption_files, check_image, describe_os_error, folder_write_problem, image_files, read_caption,
    refuse_broken_images, refuse_images_sharing_a_stem, refuse_unpaired_captions, run_cli, seed_argument,
    unread_subfolders, visible_entries,
)
from .training_config import SAMPLING_STEPS_MAX, SEED_MAX

TARGET_FRACTION_CLOSED = 0.70
TARGET_MAX_ADHERENCE_DROP = 10.0
LAYOUTS_PER_SIZE = 8  # sub-pixel shifts per object size drawn for the style-aware readings
GRID_CELL = 128  # about this many pixels a side per image in --grid (the built-in base's 32 px drawn 4x)


def work_images(folder) -> list[tuple[Path, str | None]]:
    """The works in `folder`, each with its caption's text (None: no work has one), read as train_lora reads its
    --data: hidden files left out, a caption's suffix in any case, every image and caption read now, not after the
    base has loaded, and, once any caption is there, an image without one or a caption without its image refused
    (else one misnamed caption would silently swap the works' captions for the held-out ones)."""
    folder = Path(folder)
    entries = visible_entries(folder, "works folder")
    paths = image_files(entries)
    refuse_broken_images(entries)
    if len(paths) < 2:
        raise DataFolderError(f"need at least 2 images in {folder}, found {len(paths)}{unread_subfolders(entries)}")
    refuse_images_sharing_a_stem(paths)
    for path in paths:
        check_image(path)
    captions = caption_files(entries)
    if captions:
        refuse_unpaired_captions(entries, paths, captions)
    return [(path, read_caption(captions[path.stem]) if path.stem in captions else None) for path in paths]


def sample(pipe, prompts: list[str], *, seed: int, steps: int, guidance: float, batch_size: int = 24,
           not_finite: str = "") -> list[Image.Image]:
    """The i-th prompt drawn with seed + i, as evaluate_base draws them; a sample that is not finite is a
    SamplesNotFinite with `not_finite` (its likely cause) added."""
    images = []
    for start in range(0, len(prompts), batch_size):
        try:
            images += generate(pipe, prompts[start:start + batch_size], seed=seed + start, steps=steps,
                               guidance=guidance)
        except SamplesNotFinite as exc:
            raise SamplesNotFinite(f"{exc}{not_finite}") from None
    return images


def style_readings(scene: scenes.Scene, style: str, resolution: int,
                   layouts_per_size: int = LAYOUTS_PER_SIZE) -> dict[str, set[str]]:
    """Per attribute, every way the classifier reads this scene's caption drawn
    in `style`: the scene itself and the layouts its caption leaves open (the
    object's size, sub-pixel shifts), each of which a sample could fairly draw."""
    rng = random.Random(scenes.plain_caption(scene))  # a str seed: the same layouts in every run
    sizes = ("small",) if scene.count == 2 else scenes.SIZES
    layouts = [scene] + [
        dataclasses.replace(scene, size=size, dx=rng.uniform(-scenes.JITTER, scenes.JITTER),
                            dy=rng.uniform(-scenes.JITTER, scenes.JITTER))
        for size in sizes for _ in range(layouts_per_size)
    ]
    found = [classify(scenes.render(layout, style, resolution)) for layout in layouts]
    return {name: {reading[name] for reading in found} for name in ATTRIBUTES}


def adherence(images, targets, accepted: list[dict[str, set[str]]] | None = None) -> dict:
    """Per-attribute share of images the classifier reads as their caption
    says; with `accepted` (see `style_readings`), a reading among those also
    counts as right."""
    correct = {name: 0 for name in ATTRIBUTES}
    for i, (image, scene) in enumerate(zip(images, targets)):
        found = classify(image)
        for name, field in ATTRIBUTES.items():
            correct[name] += found[name] == getattr(scene, field) or (
                accepted is not None and found[name] in accepted[i][name])
    accuracy = {name: correct[name] / len(targets) for name in ATTRIBUTES}
    return {"points": round(100 * float(np.mean(list(accuracy.values()))), 2),
            "accuracy": {k: round(v, 4) for k, v in accuracy.items()}}


@torch.no_grad()
def through_vae(pipe, images: list[Image.Image]) -> list[np.ndarray]:
    """Each image encoded (latent mean) and decoded by the base's VAE, in the training cache's batches and precision
    (`lora_training.vae_batches`)."""
    vae = pipe.vae
    out = []
    with vae_batches(vae, images, vae.device) as batches:
        for pixels in batches:
            decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample
            decoded = ((decoded.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            out += [np.asarray(d, dtype=np.float32) for d in decoded]
    return out


def save_grid(path, rows: list[list[Image.Image]], scale: int | None = None) -> None:
    """Rows of images, each drawn `scale` times its size with no smoothing: by default about GRID_CELL px a side
    (4x the built-in base's 32 px, 1x an SD base's 512 px; never smaller than drawn), so a grid of large samples
    stays within what Pillow opens."""
    if scale is None:
        scale = max(1, GRID_CELL // rows[0][0].width)
    side = rows[0][0].width * scale
    columns = max(len(r) for r in rows)
    grid = Image.new("RGB", (columns * side, len(rows) * side), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (x * side, y * side))
    # A full disk must not leave a cut file where an earlier grid was; 0644, for anyone to look at.
    atomic_write(Path(path), lambda handle: grid.save(handle, format="PNG"), mode=0o644)


def evaluate_style(*, base, lora, works, n: int = 48, seed: int = 0, steps: int = DEFAULT_STEPS,
                   guidance: float = DEFAULT_GUIDANCE, scale: float = 1.0, style: str | None = None,
                   grid=None, pipe=None) -> dict:
    started = time.perf_counter()
    pipe = pipe or load_base_pipeline(base)
    lora_path = Path(lora)
    lora_file = lora_path if lora_path.is_file() else lora_path / WEIGHTS_NAME
    # Loaded now, so that an adapter that does not fit fails before minutes of sampling.
    apply_adapters(pipe, [("evaluated-style", lora_file, scale)])
    disable_adapters(pipe)
    resolution = _native_resolution(dict(pipe.unet.config), dict(pipe.vae.config), base=base)
    works_found = work_images(works)
    work_paths = [path for path, _ in works_found]
    work_pils = load_training_images(work_paths, resolution)
    works_statistics = sm.image_statistics(work_pils, resolution)
    works_summary = works_statistics.summary()
    halves = (works_statistics.summary(slice(0, None, 2)), works_statistics.summary(slice(1, None, 2)))
    vae_summary = sm.summarise(through_vae(pipe, work_pils), resolution)

    targets = held_out_scenes(n)
    adherence_prompts = [scenes.plain_caption(s) for s in targets]
    captions = [caption for _, caption in works_found]
    if all(captions):
        style_prompts = captions
        prompt_source = "works' captions"
    else:
        style_prompts, prompt_source = adherence_prompts, "held-out captions"
    drawn: dict[tuple[bool, tuple[str, ...]], list[Image.Image]] = {}

    def images_for(prompts: list[str], with_lora: bool) -> list[Image.Image]:
        key = (with_lora, tuple(prompts))
        if key not in drawn:
            if with_lora:
                apply_adapters(pipe, [("evaluated-style", lora_file, scale)])
            else:
                disable_adapters(pipe)
            cause = (f"; likely cause: the LoRA at --scale {scale:g} (lower it) or adapter {lora_file} itself"
                     if with_lora else f"; drawn by the base without the LoRA (--guidance {guidance:g}, base {base})")
            drawn[key] = sample(pipe, prompts, seed=seed, steps=steps, guidance=guidance, not_finite=cause)
        return drawn[key]

    base_images = images_for(style_prompts, False)
    lora_images = images_for(style_prompts, True)
    base_adherence_images = images_for(adherence_prompts, False)
    lora_adherence_images = images_for(adherence_prompts, True)
    disable_adapters(pipe)

    base_statistics, lora_statistics = sm.image_statistics(base_images, resolution), sm.image_statistics(lora_images, resolution)
    base_summary, lora_summary = base_statistics.summary(), lora_statistics.summary()
    d_base = sm.distance_parts(base_summary, works_summary)
    d_lora = sm.distance_parts(lora_summary, works_summary)
    d_vae = sm.distance_parts(vae_summary, works_summary)
    d_noise = sm.distance_parts(*halves)
    # Undefined (None, null in the JSON) rather than 0, which would read as a LoRA that does nothing: no distance
    # from the base to the works to close, or none above the VAE bound.
    closed = 1 - d_lora["total"] / d_base["total"] if d_base["total"] > 0 else None
    closable = d_base["total"] - d_vae["total"]
    closed_of_closable = (d_base["total"] - d_lora["total"]) / closable if closable > 0 else None
    interval = sm.fraction_closed_interval(base_statistics, lora_statistics, works_statistics,
                                           paired=all(captions), seed=seed) if closed is not None else None

    base_adherence = adherence(base_adherence_images, targets)
    lora_adherence = adherence(lora_adherence_images, targets)
    drop = base_adherence["points"] - lora_adherence["points"]
    result = {
        "base": str(base),
        "lora": str(lora),
        "works": str(works),
        "n_works": len(work_paths),
        "style_prompts": prompt_source,
        "n_style_samples": len(style_prompts),
        "style_prompts_note": caption_report(pipe.tokenizer, style_prompts),
        "n_adherence_samples": n,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "lora_scale": scale,
        "resolution": resolution,
        "style_distance": {
            "base_to_works": _rounded(d_base),
            "lora_to_works": _rounded(d_lora),
            "vae_bound": _rounded(d_vae),
            "works_half_to_half": _rounded(d_noise),
            "fraction_closed": _rounded_or_none(closed),
            "fraction_closed_interval": interval and [round(bound, 4) for bound in interval],
            "fraction_of_closable_closed": _rounded_or_none(closed_of_closable),
        },
        "texture": {
            "works": works_summary.to_dict()["texture"],
            "works_through_vae": vae_summary.to_dict()["texture"],
            "base": base_summary.to_dict()["texture"],
            "lora": lora_summary.to_dict()["texture"],
        },
        "caption_adherence": {
            "base": base_adherence,
            "lora": lora_adherence,
            "drop_points": round(drop, 2),
        },
        "targets": {
            "fraction_closed_at_least": TARGET_FRACTION_CLOSED,
            "adherence_drop_at_most_points": TARGET_MAX_ADHERENCE_DROP,
            "met": bool(closed is not None and closed >= TARGET_FRACTION_CLOSED
                        and drop <= TARGET_MAX_ADHERENCE_DROP),
        },
    }
    if style is not None:
        # The base draws in the plain style: its samples are held to the plain readings.
        in_style = [scenes.render(s, style, resolution) for s in targets]
        plain = [style_readings(s, "plain", resolution) for s in targets]
        base_aware = adherence(base_adherence_images, targets, plain)
        lora_aware = adherence(lora_adherence_images, targets, [style_readings(s, style, resolution) for s in targets])
        result["caption_adherence"]["works_in_style_same_captions"] = adherence(in_style, targets)
        result["caption_adherence"]["style_aware"] = {
            "base": base_aware, "lora": lora_aware,
            "drop_points": round(base_aware["points"] - lora_aware["points"], 2),
            "layouts_per_size": LAYOUTS_PER_SIZE,
        }
        result["targets"]["met_style_aware"] = bool(
            closed is not None and closed >= TARGET_FRACTION_CLOSED
            and base_aware["points"] - lora_aware["points"] <= TARGET_MAX_ADHERENCE_DROP)
    if grid is not None:
        rows = [base_images[:8], lora_images[:8], work_pils[:8]]
        try:
            save_grid(grid, rows)
            result["grid"] = str(grid)
        except OSError as exc:  # the measures took minutes: they are printed all the same
            result["grid"], result["grid_error"] = None, describe_os_error(exc)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _rounded(parts: dict) -> dict:
    return {k: round(v, 4) for k, v in parts.items()}


def _rounded_or_none(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def grid_problem(grid, works) -> str | None:
    """Why the grid PNG cannot be written at `grid` (None: it can): not inside the works folder, where it would
    replace a work or become one, and somewhere this user may write. Checked before minutes of sampling."""
    grid, works = Path(grid), Path(works)
    if grid.resolve().is_relative_to(works.resolve()):
        return f"it is inside the --works folder {works}, where it would replace or add a work; give a path outside it"
    problem = folder_write_problem(grid.parent)
    if problem:
        return problem
    if grid.exists() and not os.access(grid, os.W_OK):
        return f"{grid} is not writable"
    return None


def main(argv: list[str] | None = None) -> dict:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.evaluate_style", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=BUILTIN_BASE_MODEL, help="diffusers model folder (default: built-in)")
    parser.add_argument("--lora", type=Path, required=True, help="adapter folder (or its .safetensors file)")
    parser.add_argument("--works", type=Path, required=True, help="folder of the artist's works")
    parser.add_argument("--n", type=int, default=48, help="held-out captions for caption adherence (default 48)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="seed of the first sample; the i-th uses seed + i (default 0)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("--scale", type=float, default=1.0, help="LoRA strength (default 1)")
    parser.add_argument("--style", choices=sorted(scenes.RENDERERS), help="demo renderer the works were drawn with")
    parser.add_argument("--grid", type=Path, help="write a PNG: base samples, LoRA samples, works")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help=f"CPU threads (default {default_threads()}: half this machine's cores)")
    args = parser.parse_args(argv)
    if not (args.base / "model_index.json").is_file():
        parser.error(f"--base {args.base}: not a diffusers model folder (no model_index.json)")
    try:
        native_resolution_of(args.base)
    except BaseModelError as exc:
        parser.error(f"--base: {exc}")
    try:
        checked_adapter_file(args.lora)
    except AdapterError as exc:
        parser.error(f"--lora: {exc}")
    for option, value, least in (("--n", args.n, 2), ("--steps", args.steps, 1), ("--threads", args.threads, 1)):
        if value < least:  # each named alone: one message for three options left the reader to guess which
            parser.error(f"{option} must be at least {least} (got {value})")
    if args.steps > SAMPLING_STEPS_MAX:  # not an "out of memory" once the base has loaded
        parser.error(f"--steps must be at most {SAMPLING_STEPS_MAX} (got {args.steps})")
    if args.n > held_out_caption_count():
        parser.error(f"--n: only {held_out_caption_count()} held-out captions exist")
    if not (math.isfinite(args.guidance) and args.guidance >= 0):
        parser.error(f"--guidance must be a number of at least 0 (got {args.guidance:g})")
    if not math.isfinite(args.scale):
        parser.error(f"--scale must be a finite number (got {args.scale:g})")
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        parser.error(f"--grid {args.grid}: give a .png file path")  # checked now, not after minutes of sampling
    if args.grid is not None and args.grid.is_dir():
        parser.error(f"--grid {args.grid}: is a folder; give a .png file path")
    try:
        n_works = len(work_images(args.works))
    except ValueError as exc:
        parser.error(f"--works: {exc}")
    samples = max(args.n, n_works)  # the style prompts (one per work, or the n held-out ones) and the n held-out
    if args.seed + samples - 1 > SEED_MAX:
        parser.error(f"--seed {args.seed}: the {samples} samples take seeds up to {args.seed + samples - 1}, "
                     "past 2**64 - 1")
    if args.grid is not None:
        problem = grid_problem(args.grid, args.works)
        if problem:
            parser.error(f"--grid {args.grid}: {problem}")
    torch.set_num_threads(args.threads)
    try:
        result = evaluate_style(base=args.base, lora=args.lora, works=args.works, n=args.n, seed=args.seed,
                                steps=args.steps, guidance=args.guidance, scale=args.scale, style=args.style,
                                grid=args.grid)
    except (AdapterError, BaseModelError, TrainingDataError, DataFolderError, SamplesNotFinite) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    if result["style_prompts_note"]:
        print(f"note: {result['style_prompts_note']}", file=sys.stderr)
    print(json.dumps(result))
    if result.get("grid_error"):
        print(f"error: the grid was not written: {result['grid_error']}", file=sys.stderr)
        raise SystemExit(2)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)

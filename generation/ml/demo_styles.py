"""Builds the demo artists: their works, their style adapters, their manifests.

    python -m generation.ml.demo_styles --out generation/ml/demo_styles [--base DIR]

For each demo artist of `scenes.DEMO_STYLES` (pastel-outline, ink-hatching,
pixel-art: the three most distinct renderers) it draws 20 captioned works
(deterministic; drawn at the base's 32 px and enlarged 8x by nearest
neighbour to 256 px, the platform's minimum upload side), trains a LoRA on
them with the "thorough" preset (the demo shows what the platform can do:
on two of the three styles it meets the quality target that the standard
preset, the five-minute one, does not; README), measures it with `evaluate_style` on 48
works of held-out captions that the training never saw, and writes

    <out>/<slug>/works/NN.png + NN.txt
    <out>/<slug>/adapter/pytorch_lora_weights.safetensors
    <out>/<slug>/manifest.json    artist, works (sha256, caption), adapter sha256,
                                  base model sha256s, training config, seconds,
                                  evaluation figures
    <out>/index.json              the slugs, the base model's sha256s

Run it again whenever the base model changes: everything is regenerated and
each style folder is replaced only once it is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from . import BUILTIN_BASE_MODEL, default_threads, scenes, sha256_file

WORKS_PER_STYLE = 20
WORK_SIDE = 256  # the platform's default minimum upload side
EVALUATION_WORKS = 48
PRESET = "thorough"

# Display details of the demo artists (fictional), keyed by renderer slug.
BIOS = {
    "pastel-outline": "Draws soft pastel shapes held together by thick, dark outlines.",
    "ink-hatching": "Works in pen and ink: diagonal hatching, thin outlines, hatched grounds.",
    "pixel-art": "Makes chunky pixel art in a sixteen-colour palette.",
}
# Each artist's works come from their own seeds, disjoint from each other.
SEED_OFFSETS = {"pastel-outline": 710_000, "ink-hatching": 720_000, "pixel-art": 730_000}


def base_model_hashes(base) -> dict[str, str]:
    base = Path(base)
    return {p.relative_to(base).as_posix(): sha256_file(p)
            for p in sorted(base.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def draw_works(slug: str, folder: Path, count: int = WORKS_PER_STYLE) -> list[dict]:
    """`count` training works in the style, with varied captions."""
    folder.mkdir(parents=True, exist_ok=True)
    works = []
    for i in range(count):
        drawing = scenes.illustration(SEED_OFFSETS[slug] + i, slug, held_out=False, varied_caption=True)
        image = drawing.image.resize((WORK_SIDE, WORK_SIDE), Image.Resampling.NEAREST)
        name = f"{i + 1:02d}.png"
        image.save(folder / name, optimize=True)
        (folder / name).with_suffix(".txt").write_text(drawing.caption + "\n", encoding="utf-8")
        works.append({"file": f"works/{name}", "caption": drawing.caption, "sha256": sha256_file(folder / name)})
    return works


def draw_evaluation_works(slug: str, folder: Path, count: int = EVALUATION_WORKS) -> None:
    """Works on the held-out captions of `evaluate_base` (never trained on)."""
    from .evaluate_base import held_out_scenes

    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(held_out_scenes(count)):
        scenes.render(scene, slug).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(scenes.plain_caption(scene), encoding="utf-8")


class _Progress:
    def __init__(self, slug: str):
        self.slug = slug

    def on_progress(self, step, total, loss, eta):
        if step % max(1, total // 10) == 0 or step == total:
            eta_text = f"{eta:.0f} s" if eta is not None else "?"
            print(f"[{self.slug}] step {step}/{total} loss {loss:.4f} eta {eta_text}", file=sys.stderr, flush=True)

    def on_preview(self, step, images):
        pass

    def on_checkpoint(self, step):
        pass

    def on_resume(self, step):
        pass

    def before_saving(self):
        pass

    def should_cancel(self):
        return False

    def on_log(self, line):
        print(f"[{self.slug}] {line}", file=sys.stderr, flush=True)


def build_style(slug: str, *, base: Path, out: Path, preset: str = PRESET, evaluate: bool = True,
                n_works: int = WORKS_PER_STYLE, n_evaluation: int = EVALUATION_WORKS,
                base_hashes: dict | None = None, evaluation_steps: int | None = None, **overrides) -> dict:
    """Draws, trains, evaluates and writes one demo style; `overrides` change
    the preset's training settings (tests use a few steps)."""
    from .evaluate_style import evaluate_style
    from .lora_training import base_kind_of, train_lora
    from .train_lora import read_data_folder
    from .training_config import preset_config

    style = scenes.DEMO_STYLES[slug]
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}.", dir=out))
    staging.chmod(0o755)
    scratch = Path(tempfile.mkdtemp(prefix=f"demo-style-{slug}-"))
    try:
        works = draw_works(slug, staging / "works", n_works)
        config = preset_config(preset, base_kind_of(base), **overrides)
        result = train_lora(base_path=base, examples=read_data_folder(staging / "works"),
                            out_dir=staging / "adapter", config=config, work_dir=scratch / "work",
                            callbacks=_Progress(slug))
        adapter = Path(result.weights_path)
        manifest = {
            "slug": slug,
            "artist": style.artist,
            "bio": BIOS[slug],
            "style_description": style.description,
            "works": works,
            "adapter": {
                "file": "adapter/" + adapter.name,
                "sha256": result.sha256,
                "bytes": adapter.stat().st_size,
                "trainable_parameters": result.trainable_parameters,
            },
            "base_model": {"sha256": base_hashes or base_model_hashes(base)},
            "training": {
                "preset": preset,
                "config": config.to_dict(),
                "steps": result.steps,
                "final_loss": round(result.final_loss, 6),
                "seconds": round(result.seconds, 1),
                "train_seconds": round(result.train_seconds, 1),
                "encode_seconds": round(result.encode_seconds, 2),
            },
        }
        if evaluate:
            draw_evaluation_works(slug, scratch / "evaluation-works", n_evaluation)
            figures = evaluate_style(base=base, lora=adapter, works=scratch / "evaluation-works", n=n_evaluation,
                                     style=slug, grid=scratch / "grid.png",
                                     **({"steps": evaluation_steps} if evaluation_steps else {}))
            if figures.get("grid_error"):  # the shipped style comes with its grid, or not at all
                raise OSError(f"the evaluation grid was not written: {figures['grid_error']}")
            for key in ("base", "lora", "works", "grid"):
                figures.pop(key, None)
            figures["works"] = f"{n_evaluation} held-out captions drawn in the style (not shipped)"
            manifest["evaluation"] = figures
            shutil.copy(scratch / "grid.png", staging / "evaluation-grid.png")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        target = out / slug
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def update_index(out: Path, slugs: list[str], base_hashes: dict) -> dict:
    """Adds `slugs` to <out>/index.json, under a lock on the folder and written
    atomically, so runs for different styles side by side all land in it."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    folder = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        path = out / "index.json"
        index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        index = {"styles": sorted(set(index.get("styles", [])) | set(slugs)), "base_model": {"sha256": base_hashes},
                 "command": "python -m generation.ml.demo_styles --out " + out.as_posix()}
        staging = path.with_name(f".index.json.{os.getpid()}")
        staging.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        os.replace(staging, path)
        return index
    finally:
        os.close(folder)  # releases the lock


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.demo_styles", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (e.g. generation/ml/demo_styles)")
    parser.add_argument("--base", type=Path, default=BUILTIN_BASE_MODEL, help="base model folder (default: built-in)")
    parser.add_argument("--styles", default=",".join(scenes.DEMO_STYLES), help="comma-separated slugs (default: all)")
    parser.add_argument("--preset", default=PRESET, choices=("quick", "standard", "thorough"))
    parser.add_argument("--works", type=int, default=WORKS_PER_STYLE, help="works per artist (default 20)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation figures")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help=f"CPU threads (default {default_threads()}: half this machine's cores)")
    args = parser.parse_args(argv)
    if not (args.base / "model_index.json").is_file():
        parser.error(f"--base {args.base}: not a diffusers model folder (no model_index.json)")
    if args.threads < 1 or args.works < 1:
        parser.error("--threads and --works must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a folder")
    slugs = [s.strip() for s in args.styles.split(",") if s.strip()]
    unknown = [s for s in slugs if s not in scenes.DEMO_STYLES]
    if unknown or not slugs:
        parser.error(f"--styles: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(scenes.DEMO_STYLES)}")

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    hashes = base_model_hashes(args.base)
    manifests = {slug: build_style(slug, base=args.base, out=args.out, preset=args.preset,
                                   evaluate=not args.no_evaluate, n_works=args.works, base_hashes=hashes)
                 for slug in slugs}
    update_index(args.out, slugs, hashes)
    summary = {slug: {"adapter_sha256": m["adapter"]["sha256"], "training_seconds": m["training"]["seconds"],
                      **({"fraction_closed": m["evaluation"]["style_distance"]["fraction_closed"],
                          "adherence_drop_points": m["evaluation"]["caption_adherence"]["drop_points"],
                          "style_aware_drop_points": m["evaluation"]["caption_adherence"]["style_aware"]["drop_points"]}
                         if "evaluation" in m else {})}
               for slug, m in manifests.items()}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

"""Style LoRA training: this project's loop against diffusers' own script.

    python benchmarks/lora_training.py --reference /tmp/diffusers-ref/train_text_to_image_lora.py \
        [--reference-site /tmp/diffusers-ref/site] [--base DIR] [--resolution PX] [--steps 60] [--warmup 5] \
        [--batch 8] [--rank 16] [--works 20] [--mixed-precision auto|no|fp16|bf16] [--compile]

Trains the same base, data (`--works` demo works, 256 px PNG or the
resolution if larger), batch, resolution, rank, learning rate and steps
twice, each in its own process, one after the other: with
`generation.ml.lora_training.train_lora` and with diffusers'
`examples/text_to_image/train_text_to_image_lora.py` (from a snapshot of the
diffusers repository at the installed version; never committed, its path is
given on the command line). Prints steps/s (over the optimizer steps after
`--warmup`, timed by a global optimizer step hook, so loading and encoding
are excluded for both; both loops read the loss back every step, so on a GPU
each hook fires after its step's kernels), peak memory (process peak RSS; peak CUDA memory on a
GPU) and the ratios, as one JSON line after a table. It also counts the
floating-point operations of one step of each (on the base's shapes, meta
tensors) and prints the rate each run reached, and on the CPU the rate of a
large fp32 matrix product: a step that runs near that rate can only get
faster by doing less, and the reference's step over ours is the most that
caching the encoded works can give.

Both runs use the same precision: `--mixed-precision` (default "auto": bf16
on a GPU that has it, else fp16; fp32 on the CPU) is this loop's weights
dtype and the reference's `--mixed_precision` (its frozen weights in that
dtype under autocast; the LoRA in fp32 for fp16).

Any Stable Diffusion 1.x/2.x-shaped folder works as `--base`;
`benchmarks/sd_shaped_base.py --kind sd15` writes a randomly initialised one
(for speed and memory no trained weights are needed).

What the reference needs here, supplied by this file at run time only:
* `datasets` (for its imagefolder loader): not a project requirement; install
  it apart, e.g. `pip install --target /tmp/diffusers-ref/site datasets`, and
  pass `--reference-site`; that folder is appended to sys.path (the
  project's own packages win).
* `torchvision.transforms`: PyPI's torchvision does not import beside this
  torch build, so a shim with the same semantics (Pillow resize of the
  shorter side with the requested filter, centre crop, random flip, to
  tensor, normalise) stands in for the six transforms the script uses.
* `CLIPTokenizer`: the built-in base's tokenizer is a word-level `tokenizers`
  model; the script's CLIPTokenizer class reads it as all-unknown tokens, so
  it is pointed at `AutoTokenizer`, which loads the same file correctly.
The reference runs with `--report_to tensorboard` only if tensorboard is
installed; otherwise accelerate's tracker is given as "all" with none present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generation.ml import default_threads  # noqa: E402  (no torch: cheap)

LEARNING_RATE = 1e-4
# --mixed-precision (accelerate's names, as the reference takes them) -> this loop's dtype
WEIGHT_DTYPES = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}


# ---------------------------------------------------------------- measuring, in the child


def _install_step_timer():
    times: list[float] = []

    def hook(optimizer, args, kwargs):
        times.append(time.perf_counter())

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(hook)
    return times


def _report(times: list[float], warmup: int, started: float) -> None:
    import resource

    import torch

    timed = times[warmup:]
    steps_per_second = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) >= 2 else float("nan")
    report = {
        "optimizer_steps": len(times),
        "timed_steps": max(0, len(timed) - 1),
        "steps_per_second": steps_per_second,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        report["device"] = torch.cuda.get_device_name()
    else:
        report["device"] = "cpu"
    print("BENCH " + json.dumps(report), flush=True)


def _torchvision_shim():
    """`torchvision.transforms` as the reference script uses it, on Pillow."""
    import enum
    import importlib.machinery
    import random
    import types

    import numpy as np
    import torch
    from PIL import Image

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        NEAREST_EXACT = "nearest-exact"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"
        BOX = "box"
        HAMMING = "hamming"
        LANCZOS = "lanczos"

    filters = {
        InterpolationMode.NEAREST: Image.Resampling.NEAREST, InterpolationMode.NEAREST_EXACT: Image.Resampling.NEAREST,
        InterpolationMode.BILINEAR: Image.Resampling.BILINEAR, InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
        InterpolationMode.BOX: Image.Resampling.BOX, InterpolationMode.HAMMING: Image.Resampling.HAMMING,
        InterpolationMode.LANCZOS: Image.Resampling.LANCZOS,
    }

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class Resize:
        def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
            self.size, self.filter = size, filters[interpolation]

        def __call__(self, image):
            w, h = image.size
            if isinstance(self.size, int):  # the shorter side becomes `size`
                if w <= h:
                    new = (self.size, int(self.size * h / w))
                else:
                    new = (int(self.size * w / h), self.size)
            else:
                new = (self.size[1], self.size[0])
            return image.resize(new, self.filter)

    class CenterCrop:
        def __init__(self, size):
            self.size = size

        def __call__(self, image):
            w, h = image.size
            left, top = int(round((w - self.size) / 2.0)), int(round((h - self.size) / 2.0))
            return image.crop((left, top, left + self.size, top + self.size))

    class RandomCrop(CenterCrop):
        def __call__(self, image):
            w, h = image.size
            left, top = random.randint(0, w - self.size), random.randint(0, h - self.size)
            return image.crop((left, top, left + self.size, top + self.size))

    class RandomHorizontalFlip:
        def __init__(self, p=0.5):
            self.p = p

        def __call__(self, image):
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1) < self.p else image

    class Lambda:
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, x):
            return self.fn(x)

    class ToTensor:
        def __call__(self, image):
            return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

        def __call__(self, tensor):
            return (tensor - self.mean) / self.std

    package = types.ModuleType("torchvision")
    package.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
    for name, value in dict(InterpolationMode=InterpolationMode, Compose=Compose, Resize=Resize, CenterCrop=CenterCrop,
                            RandomCrop=RandomCrop, RandomHorizontalFlip=RandomHorizontalFlip, Lambda=Lambda,
                            ToTensor=ToTensor, Normalize=Normalize).items():
        setattr(transforms, name, value)
    package.transforms = transforms
    return {"torchvision": package, "torchvision.transforms": transforms}


def child_ours(args) -> None:
    import torch

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    from generation.ml.lora_training import LoraTrainingConfig, train_lora
    from generation.ml.train_lora import read_data_folder

    times = _install_step_timer()
    config = LoraTrainingConfig(rank=args.rank, alpha=args.rank, learning_rate=LEARNING_RATE, steps=args.steps,
                                batch_size=args.batch, resolution=args.resolution, flip=True, seed=0,
                                checkpoint_every=10**9, preview_every=0, compile_unet=args.compile)
    work = Path(args.scratch) / "ours-work"
    shutil.rmtree(work, ignore_errors=True)
    train_lora(base_path=args.base, examples=read_data_folder(Path(args.data) / "captioned"),
               out_dir=Path(args.scratch) / "ours-adapter", config=config, work_dir=work,
               dtype=WEIGHT_DTYPES[args.mixed_precision])
    _report(times, args.warmup, started)


def child_reference(args) -> None:
    import runpy

    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    # Import what decides optional back-ends before the shim exists, so none
    # of them believes torchvision is installed.
    import accelerate  # noqa: F401
    import transformers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401

    if args.reference_site:
        sys.path.append(str(args.reference_site))
    sys.modules.update(_torchvision_shim())
    transformers.CLIPTokenizer = transformers.AutoTokenizer
    try:
        import tensorboard  # noqa: F401

        report_to = "tensorboard"
    except ImportError:
        report_to = "all"  # accelerate then starts no tracker
    times = _install_step_timer()
    out = Path(args.scratch) / "reference-out"
    shutil.rmtree(out, ignore_errors=True)
    sys.argv = [
        str(args.reference),
        "--pretrained_model_name_or_path", str(args.base),
        "--train_data_dir", str(Path(args.data) / "imagefolder"),
        "--resolution", str(args.resolution),
        "--center_crop", "--random_flip",
        "--image_interpolation_mode", "box",
        "--train_batch_size", str(args.batch),
        "--max_train_steps", str(args.steps),
        "--learning_rate", str(LEARNING_RATE),
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
        "--rank", str(args.rank),
        "--seed", "0",
        "--dataloader_num_workers", "0",
        "--checkpointing_steps", str(10**9),
        "--output_dir", str(out),
        "--cache_dir", str(Path(args.scratch) / "hf-cache"),
        "--report_to", report_to,
        "--mixed_precision", args.mixed_precision,
    ]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    runpy.run_path(str(args.reference), run_name="__main__")
    _report(times, args.warmup, started)


# ---------------------------------------------------------------- the parent


def step_flops(base: Path, batch: int, resolution: int, rank: int) -> dict[str, float]:
    """Floating-point operations of one training step, counted by
    `FlopCounterMode` on the base's shapes (meta tensors: no weights, no
    time): this loop runs the UNet forward and backward with an attention
    LoRA; the reference runs the same and, every step, the VAE encoder and
    the text encoder. Their ratio caps the speed-up of caching when both run
    their kernels equally fast."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    from generation.ml.lora_training import UNET_TARGET_SETS, _vae_factor

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(base / "vae"))
        text_config = CLIPTextConfig.from_pretrained(base / "text_encoder")
        text_encoder = CLIPTextModel(text_config)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=list(UNET_TARGET_SETS["attention"])))
    latent = resolution // _vae_factor(dict(vae.config))
    meta = dict(device="meta")
    latents = torch.zeros(batch, unet.config.in_channels, latent, latent, **meta)
    tokens = torch.zeros(batch, text_config.max_position_embeddings, dtype=torch.long, **meta)
    with FlopCounterMode(display=False) as unet_count:
        cond = torch.zeros(batch, text_config.max_position_embeddings, text_config.hidden_size, **meta)
        pred = unet(latents, torch.zeros(batch, dtype=torch.long, **meta), cond, return_dict=False)[0]
        F.mse_loss(pred, torch.zeros_like(pred)).backward()
    with FlopCounterMode(display=False) as encode_count, torch.no_grad():
        vae.encode(torch.zeros(batch, 3, resolution, resolution, **meta)).latent_dist.sample()
        text_encoder(tokens)
    ours = unet_count.get_total_flops()
    return {"ours": ours, "reference": ours + encode_count.get_total_flops()}


def fp32_matmul_gflops(threads: int) -> float:
    """What this machine's cores reach on a large fp32 matrix product: the
    ceiling of any step made of convolutions and matrix products."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = float("inf")
    for _ in range(5):  # the best of five rounds: a busy moment must not lower the ceiling
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 1024**3 * 10 / best / 1e9


def write_data(folder: Path, works: int, side: int) -> None:
    """The same works twice: as `name.png + name.txt` for this project's
    loader and as an imagefolder with metadata.jsonl for `datasets`."""
    from PIL import Image

    from generation.ml import scenes

    captioned, imagefolder = folder / "captioned", folder / "imagefolder"
    captioned.mkdir(parents=True, exist_ok=True)
    imagefolder.mkdir(parents=True, exist_ok=True)
    with open(imagefolder / "metadata.jsonl", "w") as metadata:
        for i in range(works):
            drawing = scenes.illustration(910_000 + i, "pastel-outline")
            image = drawing.image.resize((side, side), Image.Resampling.NEAREST)
            name = f"{i:02d}.png"
            image.save(captioned / name)
            (captioned / name).with_suffix(".txt").write_text(drawing.caption)
            image.save(imagefolder / name)
            metadata.write(json.dumps({"file_name": name, "text": drawing.caption}) + "\n")


def run_child(kind: str, args, scratch: Path, data: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--scratch", str(scratch), "--data", str(data),
               "--base", str(args.base), "--steps", str(args.steps), "--batch", str(args.batch),
               "--rank", str(args.rank), "--resolution", str(args.resolution), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--mixed-precision", args.mixed_precision] + (
                  ["--compile"] if args.compile else [])
    if kind == "reference":
        command += ["--reference", str(args.reference)]
        if args.reference_site:
            command += ["--reference-site", str(args.reference_site)]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(ROOT))
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode != 0 or not lines:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise SystemExit(f"the {kind} run failed (exit {completed.returncode}):\n{tail}")
    return json.loads(lines[-1][6:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="path to diffusers' train_text_to_image_lora.py")
    parser.add_argument("--reference-site", type=Path, help="extra package folder for the reference (datasets)")
    parser.add_argument("--base", type=Path, help="diffusers model folder (default: the built-in base)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5, help="optimizer steps left out of the timing")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--works", type=int, default=20,
                        help="demo works to train on (default 20; fewer shortens this loop's encoding on big bases)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--resolution", type=int, help="default: the base's native size")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help=f"CPU threads of each run (default {default_threads()}: the platform's, half the cores)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this many times; best of each")
    parser.add_argument("--mixed-precision", choices=("auto", *WEIGHT_DTYPES), default="auto",
                        help="both runs' precision (default auto: bf16 on a GPU that has it, else fp16; no (fp32) "
                             "on the CPU)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile this project's UNet (its compile time falls in the warm-up steps; "
                             "see wall s)")
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "ours":
        return child_ours(args)
    if args.child == "reference":
        return child_reference(args)

    from generation.ml import BUILTIN_BASE_MODEL

    args.base = (args.base or BUILTIN_BASE_MODEL).resolve()
    if not (args.base / "model_index.json").is_file():
        parser.error(f"--base {args.base}: not a diffusers model folder")
    if args.reference is None or not args.reference.is_file():
        parser.error("--reference: give the path of diffusers' examples/text_to_image/train_text_to_image_lora.py")
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup by at least 2")
    if args.works < 1 or args.batch < 1 or args.rank < 1:
        parser.error("--works, --batch and --rank must be at least 1")
    # Checked here, not once the data is drawn (--repeats 0) or inside a child run (--threads 0).
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.resolution is not None and (args.resolution < 8 or args.resolution % 8):
        parser.error(f"--resolution must be a multiple of 8, at least 8 (got {args.resolution})")
    if args.resolution is None:
        from generation.ml.lora_training import UnknownResolution, native_resolution_of

        try:
            args.resolution = native_resolution_of(args.base)
        except UnknownResolution as exc:
            parser.error(f"--base: {exc}; give --resolution")

    if args.mixed_precision == "auto":
        from generation.ml.lora_training import choose_device_and_dtype

        dtype = str(choose_device_and_dtype()[1]).replace("torch.", "")
        args.mixed_precision = {"float32": "no", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    flops = step_flops(args.base, args.batch, args.resolution, args.rank)
    scratch = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    try:
        data = scratch / "data"
        write_data(data, args.works, max(256, args.resolution))
        results: dict[str, list[dict]] = {"ours": [], "reference": []}
        for _ in range(args.repeats):
            for kind in ("ours", "reference"):
                results[kind].append(run_child(kind, args, scratch, data))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    best = {kind: max(runs, key=lambda r: r["steps_per_second"]) for kind, runs in results.items()}
    ours, ref = best["ours"], best["reference"]
    memory_key = "peak_cuda_mb" if "peak_cuda_mb" in ours else "peak_rss_mb"
    summary = {
        "base": str(args.base), "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
        "rank": args.rank, "resolution": args.resolution, "threads": args.threads, "device": ours["device"],
        "compile": args.compile, "mixed_precision": args.mixed_precision,
        "ours": ours, "reference": ref,
        "speedup_steps_per_second": ours["steps_per_second"] / ref["steps_per_second"],
        "memory_ratio": ours[memory_key] / ref[memory_key], "memory_measure": memory_key,
        "flops_per_step": flops, "flop_ceiling": flops["reference"] / flops["ours"],
        "all_runs": results,
    }
    if ours["device"] == "cpu":
        summary["fp32_matmul_gflops"] = fp32_matmul_gflops(args.threads)
    for kind in ("ours", "reference"):
        best[kind]["gflops"] = flops[kind] * best[kind]["steps_per_second"] / 1e9
    print(f"{'':12s}{'steps/s':>10s}{'peak ' + memory_key.split('_')[1] + ' MB':>16s}{'wall s':>10s}"
          f"{'GFLOP/step':>12s}{'GFLOP/s':>10s}")
    for kind in ("ours", "reference"):
        r = best[kind]
        print(f"{kind:12s}{r['steps_per_second']:10.2f}{r[memory_key]:16.0f}{r['wall_seconds']:10.1f}"
              f"{flops[kind] / 1e9:12.1f}{r['gflops']:10.1f}")
    print(f"speed-up {summary['speedup_steps_per_second']:.2f}x, memory ratio {summary['memory_ratio']:.2f}; "
          f"the reference's step does {summary['flop_ceiling']:.2f}x this loop's operations"
          + (f"; a large fp32 matrix product runs at {summary['fp32_matmul_gflops']:.0f} GFLOP/s here"
             if "fp32_matmul_gflops" in summary else ""))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

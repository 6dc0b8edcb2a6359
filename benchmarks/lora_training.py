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

Both train full batches of `--batch` every step: this loop draws its batches
from the encoded works (with replacement), and the reference's imagefolder
lists the works in turn, repeated up to a whole number of batches and at
least `--steps` of them (at most 256), so its DataLoader, which keeps a short
last batch, has none (20 works at batch 8 would otherwise average 6.67
samples a step) and goes through one epoch in the run. The operation counts
and GFLOP/s are per full batch.

Where the two loops still differ, said again in the printed notes:
* Gradient clipping: this loop clips the LoRA's gradients to norm 1.0
  (`LoraTrainingConfig.max_grad_norm`) every step; the reference clips none.
  Its `lora_layers` is a `filter` iterator that its optimizer consumes, so
  its `clip_grad_norm_(lora_layers, ...)` gets an empty list. The reference
  is run as published, not patched; the norm of a LoRA's gradients is a
  small cost beside a UNet step.
* Image loading: the reference decodes and transforms its images every step;
  this loop encodes them once. On the CPU its DataLoader loads in the
  training process (`--dataloader_num_workers 0`), since workers would take
  the cores the runs are timed on; on CUDA it gets min(4, cores) workers
  (forked, so they see the shims below), so decoding (about 72 ms for a
  batch of 8 at 512 px on one core of a 2-core EPYC) runs beside its GPU
  step instead of before it.
Both processes flush denormal floats to zero on the CPU
(`torch.set_flush_denormal(True)`, which this loop's base loader sets,
generation/ml/pipeline.py), and both run offline (`HF_HUB_OFFLINE`,
`HF_DATASETS_OFFLINE`, `TRANSFORMERS_OFFLINE` in their environment, so they
are read before huggingface_hub is imported).

Checked before anything is drawn or run: the arguments (the upper bounds of
`generation.ml.training_config.SETTING_MAXIMA` for --rank, --batch, --steps
and --resolution), that --reference-site is a folder and that `datasets`
imports with it on the path, and the reference's `check_min_version(...)`
against the installed diffusers: older than the script asks is refused, a
different major.minor prints a warning; both versions go in the JSON.

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
import importlib.machinery
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generation.ml import default_threads  # noqa: E402  (no torch: cheap)
from generation.ml.training_config import SETTING_MAXIMA, LoraTrainingConfig  # noqa: E402  (no torch either)

LEARNING_RATE = 1e-4
# --mixed-precision (accelerate's names, as the reference takes them) -> this loop's dtype
WEIGHT_DTYPES = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
# This benchmark's arguments bounded by the training settings' maxima (argument -> SETTING_MAXIMA key).
BOUNDED_ARGUMENTS = {"rank": "rank", "batch": "batch_size", "steps": "steps", "resolution": "resolution"}
# In both children's environment, so huggingface_hub, transformers and datasets read them when first imported
# (set later, once they are imported, they change nothing). Every file the runs need is local.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}
# DataLoader workers of the reference on CUDA (at most this many, and no more than the cores); 0 on the CPU.
REFERENCE_LOADER_WORKERS_CUDA = 4
# The reference's epoch is made this many batches long at most (see reference_dataset_length).
REFERENCE_EPOCH_BATCHES_MAX = 256
MAX_GRAD_NORM = LoraTrainingConfig.__dataclass_fields__["max_grad_norm"].default  # this loop's, as the benchmark trains
NOTES = (
    f"gradient clipping differs: this loop clips the LoRA's gradients to norm {MAX_GRAD_NORM:g} every step; the "
    "reference clips none (its `lora_layers` filter iterator is consumed by its optimizer, so clip_grad_norm_ gets "
    "an empty list); the reference runs unpatched",
    "the reference decodes and transforms its images every step (DataLoader workers: 0 on the CPU, where they would "
    f"take the timed cores; min({REFERENCE_LOADER_WORKERS_CUDA}, cores) on CUDA); this loop encodes them once",
)


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
    started = time.perf_counter()
    os.environ.update(OFFLINE_ENV)  # run_child sets them too; this covers a child started by hand
    import torch

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


def reference_loader_workers(cuda: bool, cores: int | None = None) -> int:
    """The reference's `--dataloader_num_workers`: 0 on the CPU, where worker
    processes would take the cores both runs are timed on; on CUDA up to
    REFERENCE_LOADER_WORKERS_CUDA, so decoding its images runs beside its GPU
    steps (as any real run of the script would), not before each of them."""
    if not cuda:
        return 0
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, min(REFERENCE_LOADER_WORKERS_CUDA, cores))


def reference_argv(args, report_to: str, workers: int) -> list[str]:
    """The reference script's command line: this loop's settings in its names."""
    return [
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
        "--dataloader_num_workers", str(workers),
        "--checkpointing_steps", str(10**9),
        "--output_dir", str(Path(args.scratch) / "reference-out"),
        "--cache_dir", str(Path(args.scratch) / "hf-cache"),
        "--report_to", report_to,
        "--mixed_precision", args.mixed_precision,
    ]


def child_reference(args) -> None:
    import runpy

    started = time.perf_counter()
    os.environ.update(OFFLINE_ENV)  # run_child sets them too; this covers a child started by hand
    import torch

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()  # where accelerate will put it, as this loop's choose_device_and_dtype
    if not cuda:
        # Process-wide, as this loop's process sets it when it loads the base on the CPU
        # (generation/ml/pipeline.py, load_pipeline): the same arithmetic for both.
        torch.set_flush_denormal(True)
    # Import what decides optional back-ends before the shim exists, so none
    # of them believes torchvision is installed.
    import accelerate  # noqa: F401
    import transformers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401

    if args.reference_site:
        sys.path.append(str(args.reference_site))
    sys.modules.update(_torchvision_shim())
    transformers.CLIPTokenizer = transformers.AutoTokenizer
    workers = reference_loader_workers(cuda)
    if workers:
        import multiprocessing

        # Forked workers inherit the shims above (and the script's functions, defined in __main__ by runpy);
        # spawned ones (the default from Python 3.14) would import a torchvision that is not there.
        multiprocessing.set_start_method("fork", force=True)
    try:
        import tensorboard  # noqa: F401

        report_to = "tensorboard"
    except ImportError:
        report_to = "all"  # accelerate then starts no tracker
    times = _install_step_timer()
    shutil.rmtree(Path(args.scratch) / "reference-out", ignore_errors=True)
    sys.argv = reference_argv(args, report_to, workers)
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


def reference_dataset_length(works: int, batch: int, steps: int = 1) -> int:
    """Entries of the reference's imagefolder: the works repeated up to a
    whole number of batches, at least one, and at least `steps` batches (at
    most REFERENCE_EPOCH_BATCHES_MAX). Its DataLoader keeps a short last
    batch (no drop_last) and goes through the entries without repeats, so
    with `works` entries it would train smaller batches than this loop,
    which draws full batches from its cache, whenever `works` is not a
    multiple of `batch`. One epoch for the whole run: its DataLoader starts
    its workers (on CUDA) afresh every epoch, and with one batch an epoch
    (8 works at batch 8) every step would wait for a worker to load it."""
    batches = max(-(-works // batch), min(steps, REFERENCE_EPOCH_BATCHES_MAX))
    return batches * batch


def write_data(folder: Path, works: int, side: int, batch: int = 1, steps: int = 1) -> None:
    """The same works twice: as `name.png + name.txt` for this project's
    loader and as an imagefolder with metadata.jsonl for `datasets`, where
    they are repeated in turn (links to the same files under other names) up
    to `reference_dataset_length(works, batch, steps)` entries."""
    from PIL import Image

    from generation.ml import scenes

    captioned, imagefolder = folder / "captioned", folder / "imagefolder"
    captioned.mkdir(parents=True, exist_ok=True)
    imagefolder.mkdir(parents=True, exist_ok=True)
    captions = []
    for i in range(works):
        drawing = scenes.illustration(910_000 + i, "pastel-outline")
        image = drawing.image.resize((side, side), Image.Resampling.NEAREST)
        name = f"{i:02d}.png"
        image.save(captioned / name)
        (captioned / name).with_suffix(".txt").write_text(drawing.caption)
        captions.append(drawing.caption)
    with open(imagefolder / "metadata.jsonl", "w") as metadata:
        for k in range(reference_dataset_length(works, batch, steps)):
            name, source = f"{k:02d}.png", captioned / f"{k % works:02d}.png"
            try:
                os.link(source, imagefolder / name)
            except OSError:  # a file system without hard links
                shutil.copyfile(source, imagefolder / name)
            metadata.write(json.dumps({"file_name": name, "text": captions[k % works]}) + "\n")


def child_env() -> dict[str, str]:
    """The children's environment: this project first on the path, OpenMP's
    threads asleep when idle (as the platform's processes), offline."""
    return dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **OFFLINE_ENV)


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
    completed = subprocess.run(command, capture_output=True, text=True, env=child_env(), cwd=str(ROOT))
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode != 0 or not lines:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise SystemExit(f"the {kind} run failed (exit {completed.returncode}):\n{tail}")
    return json.loads(lines[-1][6:])


class ReferenceSetupError(Exception):
    """What the reference would fail on, found before anything runs."""


def reference_datasets_version(site: Path | None) -> str:
    """The version of the `datasets` the reference will import (from this
    environment or, appended to the path as the child does, `site`); a
    ReferenceSetupError when there is none or it does not import."""
    if site is not None and not site.is_dir():
        raise ReferenceSetupError(f"--reference-site {site}: not a folder")
    where = f" here or in --reference-site {site}" if site else (
        " here; install it apart (pip install --target DIR datasets) and give --reference-site DIR")
    if importlib.machinery.PathFinder.find_spec("datasets", [*sys.path, *([str(site)] if site else [])]) is None:
        raise ReferenceSetupError(f"the reference needs `datasets`, which is not installed{where}")
    # Found is not yet importable (a missing dependency, another Python's build): import it as the child will.
    code = ("import sys\nif sys.argv[1]: sys.path.append(sys.argv[1])\n"
            "import datasets\nprint(datasets.__version__)")
    try:
        completed = subprocess.run([sys.executable, "-c", code, str(site or "")], capture_output=True, text=True,
                                   env=child_env(), cwd=str(ROOT), timeout=300)
    except subprocess.TimeoutExpired:
        raise ReferenceSetupError("the reference needs `datasets`: importing it took more than 300 s") from None
    if completed.returncode != 0 or not completed.stdout.strip():
        last = (completed.stderr.strip() or "no output").splitlines()[-1]
        within = f" (with --reference-site {site} on the path)" if site else ""
        raise ReferenceSetupError(f"the reference needs `datasets`, which does not import{within}: {last}")
    return completed.stdout.strip().splitlines()[-1]


def reference_min_version(script: Path) -> str | None:
    """The diffusers version the reference script asks for (its `check_min_version("...")`), None when it asks none."""
    found = re.search(r"""^\s*check_min_version\(\s*["']([^"']+)["']\s*\)""", script.read_text(errors="replace"),
                      re.MULTILINE)
    return found.group(1) if found else None


def _major_minor(version: str) -> tuple[int, ...] | None:
    found = re.match(r"\s*v?(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else None


def reference_versions(script: Path) -> tuple[dict, str | None]:
    """The reference's and the installed diffusers' versions, for the JSON,
    and a warning when their major.minor differ. A ReferenceSetupError when
    the installed diffusers is older than the script asks: its
    check_min_version would stop it only after this loop's whole run."""
    from packaging.version import InvalidVersion, Version

    required, installed = reference_min_version(script), importlib.metadata.version("diffusers")
    versions = {"reference_min_diffusers": required, "diffusers": installed}
    if required is None:
        return versions, (f"warning: {script} calls no check_min_version(...): the diffusers version it was written "
                          f"for is unknown (installed: {installed})")
    try:
        too_old = Version(installed) < Version(required)
    except InvalidVersion:
        too_old = False
    if too_old:
        raise ReferenceSetupError(f"--reference {script} needs diffusers {required} or later "
                                  f"(its check_min_version); {installed} is installed")
    if _major_minor(required) != _major_minor(installed):
        return versions, (f"warning: the reference script is from diffusers {required} (its check_min_version), "
                          f"the installed diffusers is {installed}: the script may differ from the one "
                          f"released with {installed}")
    return versions, None


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
    # The training settings' bounds, which this loop's config would otherwise refuse inside its child, after loading.
    for name, key in BOUNDED_ARGUMENTS.items():
        if getattr(args, name) > SETTING_MAXIMA[key]:
            parser.error(f"--{name} must be at most {SETTING_MAXIMA[key]} (got {getattr(args, name)})")
    # What the reference would fail on only after this loop's whole run.
    try:
        versions, version_warning = reference_versions(args.reference)
        versions["datasets"] = reference_datasets_version(args.reference_site)
    except ReferenceSetupError as exc:
        parser.error(str(exc))
    if version_warning:
        print(version_warning, file=sys.stderr, flush=True)

    if args.mixed_precision == "auto":
        from generation.ml.lora_training import choose_device_and_dtype

        dtype = str(choose_device_and_dtype()[1]).replace("torch.", "")
        args.mixed_precision = {"float32": "no", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    flops = step_flops(args.base, args.batch, args.resolution, args.rank)
    scratch = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    try:
        data = scratch / "data"
        write_data(data, args.works, max(256, args.resolution), batch=args.batch, steps=args.steps)
        results: dict[str, list[dict]] = {"ours": [], "reference": []}
        for _ in range(args.repeats):
            for kind in ("ours", "reference"):
                results[kind].append(run_child(kind, args, scratch, data))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summarise(args, flops, results, versions)


def summarise(args, flops: dict[str, float], results: dict[str, list[dict]], versions: dict) -> dict:
    """Prints the table (the best run of each), the medians over repeats, the notes and the JSON line."""
    best = {kind: max(runs, key=lambda r: r["steps_per_second"]) for kind, runs in results.items()}
    ours, ref = best["ours"], best["reference"]
    memory_key = "peak_cuda_mb" if "peak_cuda_mb" in ours else "peak_rss_mb"
    median = {kind: {"steps_per_second": statistics.median(r["steps_per_second"] for r in runs),
                     memory_key: statistics.median(r[memory_key] for r in runs)}
              for kind, runs in results.items()}
    summary = {
        "base": str(args.base), "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
        "works": args.works, "reference_dataset_length": reference_dataset_length(args.works, args.batch, args.steps),
        "rank": args.rank, "resolution": args.resolution, "threads": args.threads, "device": ours["device"],
        "compile": args.compile, "mixed_precision": args.mixed_precision, "repeats": args.repeats,
        "versions": versions,
        "ours": ours, "reference": ref,
        "speedup_steps_per_second": ours["steps_per_second"] / ref["steps_per_second"],
        "memory_ratio": ours[memory_key] / ref[memory_key], "memory_measure": memory_key,
        "median": median,
        "speedup_median_steps_per_second": median["ours"]["steps_per_second"] / median["reference"]["steps_per_second"],
        "flops_per_step": flops, "flop_ceiling": flops["reference"] / flops["ours"],
        "reference_loader_workers": reference_loader_workers(ours["device"] != "cpu"),
        "notes": list(NOTES),
        "all_runs": results,
    }
    if ours["device"] == "cpu":
        summary["fp32_matmul_gflops"] = fp32_matmul_gflops(args.threads)
    for kind in ("ours", "reference"):
        best[kind]["gflops"] = flops[kind] * best[kind]["steps_per_second"] / 1e9
    # Significant digits, not fixed decimals: at SD sizes on a CPU both rates are about 0.1 steps/s.
    print(f"{'':12s}{'steps/s':>10s}{'peak ' + memory_key.split('_')[1] + ' MB':>16s}{'wall s':>10s}"
          f"{'GFLOP/step':>12s}{'GFLOP/s':>10s}")
    for kind in ("ours", "reference"):
        r = best[kind]
        print(f"{kind:12s}{r['steps_per_second']:10.4g}{r[memory_key]:16.0f}{r['wall_seconds']:10.1f}"
              f"{flops[kind] / 1e9:12.4g}{r['gflops']:10.4g}")
    print(f"speed-up {summary['speedup_steps_per_second']:.2f}x, memory ratio {summary['memory_ratio']:.2f}; "
          f"the reference's step does {summary['flop_ceiling']:.2f}x this loop's operations"
          + (f"; a large fp32 matrix product runs at {summary['fp32_matmul_gflops']:.0f} GFLOP/s here"
             if "fp32_matmul_gflops" in summary else ""))
    if args.repeats > 1:
        print(f"medians of {args.repeats} runs each: this loop {median['ours']['steps_per_second']:.4g} steps/s, "
              f"the reference {median['reference']['steps_per_second']:.4g}: "
              f"{summary['speedup_median_steps_per_second']:.2f}x (the table shows the best run of each)")
    for note in NOTES:
        print(f"note: {note}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

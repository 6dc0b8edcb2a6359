"""Loading any Stable Diffusion folder from disk, and sampling from it.

The same code path serves the built-in base model and an operator's SD 1.x,
2.x or SDXL checkpoint in diffusers layout. Nothing here touches the network:
every load passes `local_files_only=True`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from . import BUILTIN_BASE_MODEL
from .devices import pick_device, pick_dtype

__all__ = ["BUILTIN_BASE_MODEL", "load_pipeline", "pick_device", "pick_dtype", "generate"]

PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
    "StableDiffusionXLPipeline": StableDiffusionXLPipeline,
}


def pipeline_class(path: str | Path) -> type[DiffusionPipeline]:
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path} is not a diffusers model folder (no model_index.json)")
    name = json.loads(index.read_text())["_class_name"]
    try:
        return PIPELINE_CLASSES[name]
    except KeyError:
        raise ValueError(f"{path}: unsupported pipeline {name!r}; expected one of {', '.join(PIPELINE_CLASSES)}") from None


def load_pipeline(path: str | Path = BUILTIN_BASE_MODEL, device=None, dtype=None) -> DiffusionPipeline:
    """Loads a StableDiffusionPipeline or StableDiffusionXLPipeline folder, by default on CUDA (bf16 on a GPU
    that has it natively, else fp16), else on Apple's MPS in fp16, else on the CPU in fp32: `devices.pick_dtype`,
    the rule training follows too."""
    cls = pipeline_class(path)
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    extra = {}
    if cls is StableDiffusionPipeline:
        extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(str(path), dtype=dtype, local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cpu":
        # Denormal floats make CPU inference several times slower; flushing
        # them to zero does not change the images visibly.
        torch.set_flush_denormal(True)
    return pipe.to(device)


class SamplesNotFinite(ValueError):
    """A sample came out NaN or infinite (an adapter at too high a strength, a broken model): saved or scored, it
    would pass for a black image, since the cast to 8 bits turns NaN into 0."""


class _DropPromptTruncationNotes(logging.Filter):
    """diffusers logs the part of a prompt its text encoder cannot read, for every prompt and every batch: megabytes
    of log for a long caption. Callers say it once instead (lora_training.caption_report)."""

    def filter(self, record):
        return not record.getMessage().startswith("The following part of your input was truncated")


def quiet_prompt_truncation(pipe) -> None:
    pipeline_logger = logging.getLogger(type(pipe).__module__)  # the logger of the pipeline class's own module
    if not any(isinstance(existing, _DropPromptTruncationNotes) for existing in pipeline_logger.filters):
        pipeline_logger.addFilter(_DropPromptTruncationNotes())


def generate(
    pipe: DiffusionPipeline,
    prompt: str | list[str],
    *,
    seed: int = 0,
    negative_prompt: str | list[str] | None = None,
    steps: int = 20,
    guidance: float = 5.0,
    width: int | None = None,
    height: int | None = None,
):
    """Images for one prompt (or a list), the i-th drawn from seed + i, so each
    image can be reproduced on its own with its seed. A sample that is not
    finite is a SamplesNotFinite naming its seed, not a black image."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    negatives = None
    if negative_prompt is not None:
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    quiet_prompt_truncation(pipe)
    arrays = pipe(
        prompt=prompts,
        negative_prompt=negatives,
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=width,
        height=height,
        generator=generators,
        output_type="np",  # checked as numbers, then made images as the pipeline's "pil" output makes them
    ).images
    finite = np.isfinite(arrays).reshape(len(prompts), -1).all(axis=1)
    if not finite.all():
        raise SamplesNotFinite(f"samples came out as numbers that are not finite (NaN or infinite; the first with "
                               f"seed {seed + int(np.argmin(finite))})")
    return pipe.image_processor.numpy_to_pil(arrays)

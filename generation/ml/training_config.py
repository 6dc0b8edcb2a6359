"""The training settings of a style LoRA: the config, its presets, and the checks on them.

No torch here: every process of the platform checks `TRAINING_PRESET_OVERRIDES` with these when its
settings load, and the `train_lora` CLI checks its arguments before torch loads.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

# LoRA targets in the UNet, as peft's `target_modules` (module name suffixes).
UNET_TARGET_SETS: dict[str, tuple[str, ...]] = {
    # The diffusers recipe: the attention projections.
    "attention": ("to_k", "to_q", "to_v", "to_out.0"),
    # Every linear and convolution of the UNet (LoRA on convolutions too, as
    # LyCORIS's LoCon). The built-in base has attention only at its 8x8 and
    # 4x4 latents; this is what reaches the 16x16 level, where outlines,
    # hatching and pixel blocks live.
    "full": ("to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
             "conv_in", "conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv", "conv_out"),
}

# Fixed preview prompts in the built-in model's scene grammar (SD-class bases
# understand them too): different objects, colours and positions, so the
# preview grid shows the style on several layouts.
DEFAULT_PREVIEW_PROMPTS = (
    "a red star on a blue background, top left",
    "a yellow house on a green background, centre",
    "a pink heart on a white background, bottom right",
    "two purple circles on a yellow background, top",
)
DEFAULT_PREVIEW_SEEDS = (0, 1)
# What torch's generators take: any 64-bit number, signed or unsigned.
SEED_MIN, SEED_MAX = -2**63, 2**64 - 1
# Upper bounds far above any real use (the presets train rank 32 at batch 8 at most and 2000 steps at most; LoRAs
# for SD and SDXL use ranks up to a few hundred and batches of tens; SDXL draws at 1024 px), so that a typo such as
# 100000000 is refused in a sentence instead of failing to allocate its memory with a traceback, or running for years.
SETTING_MAXIMA = {"rank": 1024, "alpha": 4096, "batch_size": 1024, "resolution": 4096, "steps": 1_000_000}
# Sampling steps (sample, evaluate_style): the schedulers split 1000 training timesteps, so more steps repeat them
# (DDPM's and DDIM's schedulers refuse them); a typo such as 100000000000 ran out of memory making the timestep list.
SAMPLING_STEPS_MAX = 1000
# The schedules of diffusers.optimization.get_scheduler that need nothing more than warm-up and total steps.
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class LoraTrainingConfig:
    rank: int
    alpha: int
    learning_rate: float
    steps: int
    batch_size: int
    resolution: int | None = None  # None: the base's native sample size * VAE scale factor
    train_text_encoder: bool = False
    unet_targets: str = "attention"  # a key of UNET_TARGET_SETS
    # Also train each work mirrored. Off by default: mirroring changes what an
    # artist's hand does one way (hatching direction, the side light comes
    # from); on the ink-hatching demo style it closed 25% and 27% of the style
    # distance against 31% and 30% without (two seeds; README).
    flip: bool = False
    seed: int = 0
    checkpoint_every: int = 50  # steps
    preview_every: int = 100  # steps (0: none)
    preview_prompts: tuple[str, ...] = DEFAULT_PREVIEW_PROMPTS
    preview_seeds: tuple[int, ...] = DEFAULT_PREVIEW_SEEDS
    # Optional extras (defaults reproduce the plain diffusers recipe).
    lr_scheduler: str = "constant"  # one of LR_SCHEDULERS
    lr_warmup_steps: int = 0
    snr_gamma: float | None = None  # Min-SNR loss weighting (None: plain MSE)
    # Share of examples trained with the empty caption, so the style also
    # reaches the unconditional branch that classifier-free guidance subtracts.
    caption_dropout: float = 0.0
    weight_decay: float = 1e-2  # AdamW's, as in the reference script
    max_grad_norm: float = 1.0
    preview_inference_steps: int = 20
    preview_guidance_scale: float = 5.0
    # torch.compile the UNet for training: on this project's 2-core CPU 1.4x
    # per step on the built-in base, after a first compile of about 190 s
    # (about 14 s later, from inductor's on-disk cache). Off by default: it
    # pays off only for long runs or on a worker whose cache is warm.
    compile_unet: bool = False

    # Fields that change the trained weights; the others (checkpoint and
    # preview cadence, preview prompts) may change between a run and its resume.
    _NOT_IN_FINGERPRINT = (
        "checkpoint_every", "preview_every", "preview_prompts", "preview_seeds",
        "preview_inference_steps", "preview_guidance_scale",
    )

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:  # the checks below compare numbers
            raise ValueError("; ".join(problems))
        self.preview_prompts = tuple(self.preview_prompts)
        self.preview_seeds = tuple(int(s) for s in self.preview_seeds)
        for name in ("rank", "alpha", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1")
        for name, maximum in SETTING_MAXIMA.items():
            value = getattr(self, name)
            if value is not None and value > maximum:
                problems.append(f"{name} must be at most {maximum} (got {value})")
        if not self.learning_rate > 0:
            problems.append("learning_rate must be positive")
        for name in ("lr_warmup_steps", "weight_decay", "max_grad_norm", "preview_guidance_scale"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 or more")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            problems.append("snr_gamma must be positive, or null for the plain loss")
        if self.preview_inference_steps < 1:
            problems.append("preview_inference_steps must be at least 1")
        if self.preview_every and not (self.preview_prompts and self.preview_seeds):
            problems.append("preview_prompts and preview_seeds must not be empty while preview_every is not 0")
        if self.lr_scheduler not in LR_SCHEDULERS:
            problems.append(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}")
        if not SEED_MIN <= int(self.seed) <= SEED_MAX:
            problems.append(f"seed must be from -2**63 to 2**64 - 1 (got {self.seed})")
        seeds_out_of_range = [seed for seed in self.preview_seeds if not SEED_MIN <= seed <= SEED_MAX]
        if seeds_out_of_range:  # the previews' generators would refuse them at the first preview, deep into the run
            problems.append(f"preview_seeds must be from -2**63 to 2**64 - 1 (got {', '.join(map(str, seeds_out_of_range))})")
        # diffusers' pipelines draw (the previews, generation) only at multiples of 8 px
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            problems.append(f"resolution must be a multiple of 8 px, at least 8 (got {self.resolution})")
        if self.checkpoint_every < 1:
            problems.append("checkpoint_every must be at least 1")
        if self.preview_every < 0:
            problems.append("preview_every must be 0 (none) or more")
        if self.unet_targets not in UNET_TARGET_SETS:
            problems.append(f"unet_targets must be one of {', '.join(UNET_TARGET_SETS)}")
        if not 0 <= self.caption_dropout < 1:
            problems.append("caption_dropout must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["preview_prompts"] = list(self.preview_prompts)
        data["preview_seeds"] = list(self.preview_seeds)
        return data

    @classmethod
    def from_dict(cls, d: dict) -> "LoraTrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**d)

    def fingerprint_dict(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_FINGERPRINT}


def _is_number(value, kind) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


# What each annotation of LoraTrainingConfig accepts (settings come from JSON: lists for tuples).
_TYPE_CHECKS = {
    "int": ("a whole number", lambda v: _is_number(v, numbers.Integral)),
    "int | None": ("a whole number or null", lambda v: v is None or _is_number(v, numbers.Integral)),
    "float": ("a number", lambda v: _is_number(v, numbers.Real)),
    "float | None": ("a number or null", lambda v: v is None or _is_number(v, numbers.Real)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("text", lambda v: isinstance(v, str)),
    "tuple[str, ...]": ("a list of texts", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    "tuple[int, ...]": ("a list of whole numbers",
                        lambda v: isinstance(v, (list, tuple)) and all(_is_number(x, numbers.Integral) for x in v)),
}


def _type_problems(config: LoraTrainingConfig) -> list[str]:
    """Values of the wrong type, and numbers that are not finite (JSON reads NaN and Infinity)."""
    problems = []
    for f in dataclasses.fields(config):
        expected, accepts = _TYPE_CHECKS[f.type]
        value = getattr(config, f.name)
        if not accepts(value):
            problems.append(f"{f.name} must be {expected} (got {value!r})")
        elif f.type.startswith("float") and value is not None and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number (got {value})")
    return problems


def _preset(**kw) -> LoraTrainingConfig:
    return LoraTrainingConfig(**kw)


# Built-in base (32 px, 16x16 latents): the timings in the comments were
# measured on this project's 2-core CPU with the shipped base model (see the
# README); "standard" is the one the artist's button uses.
PRESETS: dict[str, dict[str, LoraTrainingConfig]] = {
    # Every layer ("full"): on the demo styles it closes 56%, 25% and 34% of
    # the style distance against 27%, 10% and 4% for the attention projections
    # alone, for 1.7x the step time (README). lr 3e-4: 1e-3 closed 58% on
    # pastel-outline for the same adherence. Thorough (about 6.5 min of steps
    # on one thread) meets the quality target on pastel-outline and
    # ink-hatching (73%, 79% closed); standard keeps click-to-published
    # under five minutes (61%, 31%).
    "builtin": {
        "quick": _preset(rank=8, alpha=8, learning_rate=1e-3, steps=150, batch_size=8, caption_dropout=0.1,
                         unet_targets="full", checkpoint_every=50, preview_every=50),
        "standard": _preset(rank=16, alpha=16, learning_rate=3e-4, steps=400, batch_size=8, caption_dropout=0.1,
                            unet_targets="full", checkpoint_every=50, preview_every=100),
        "thorough": _preset(rank=32, alpha=32, learning_rate=5e-4, steps=1500, batch_size=8, caption_dropout=0.1,
                            unet_targets="full", lr_scheduler="cosine", lr_warmup_steps=50,
                            checkpoint_every=100, preview_every=250),
    },
    # Stable Diffusion class bases (512 px SD 1.x/2.x; SDXL at its own size).
    "sd": {
        "quick": _preset(rank=16, alpha=16, learning_rate=1e-4, steps=500, batch_size=1,
                         checkpoint_every=100, preview_every=250, snr_gamma=5.0),
        "standard": _preset(rank=16, alpha=16, learning_rate=1e-4, steps=1000, batch_size=2,
                            checkpoint_every=100, preview_every=250, snr_gamma=5.0),
        "thorough": _preset(rank=32, alpha=32, learning_rate=1e-4, steps=2000, batch_size=4,
                            lr_scheduler="cosine", lr_warmup_steps=100,
                            checkpoint_every=200, preview_every=500, snr_gamma=5.0),
    },
}


def preset_config(preset: str, base_kind: str = "builtin", **overrides) -> LoraTrainingConfig:
    try:
        presets = PRESETS[base_kind]
    except KeyError:
        raise ValueError(f"unknown base kind {base_kind!r}; choose from {', '.join(PRESETS)}") from None
    try:
        config = presets[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(presets)}") from None
    data = config.to_dict()
    data.update({k: v for k, v in overrides.items() if v is not None})
    return LoraTrainingConfig.from_dict(data)


def configured_preset(preset: str, base_kind: str, overrides: dict) -> LoraTrainingConfig:
    """The preset with its settings from TRAINING_PRESET_OVERRIDES (a null sets None: Min-SNR off, say)."""
    return LoraTrainingConfig.from_dict({**preset_config(preset, base_kind).to_dict(), **overrides.get(preset, {})})


def check_preset_overrides(overrides) -> dict:
    """`overrides` if it is a valid TRAINING_PRESET_OVERRIDES value ({preset: {setting: value}}), each
    preset still valid with it over every kind of base; else a ValueError in one sentence."""
    example = '{"standard": {"steps": 600}}'
    if not isinstance(overrides, dict):
        raise ValueError(f"must be a JSON object of presets and their settings, such as {example}")
    presets = PRESETS["builtin"]
    for preset, settings in overrides.items():
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
        if not isinstance(settings, dict):
            raise ValueError(f"the settings of {preset!r} must be a JSON object, such as {example}")
        for base_kind in PRESETS:
            try:
                configured_preset(preset, base_kind, overrides)
            except ValueError as error:
                raise ValueError(f"{preset!r}: {error}") from None
    return overrides

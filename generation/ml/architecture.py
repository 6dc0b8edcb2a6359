"""The built-in model's architecture: Stable Diffusion's parts, made small.

32 px images, an autoencoder that downsamples only 2x (16x16x4 latents, so
thin outlines survive), a UNet with cross-attention at every resolution and a
2-layer CLIP text encoder, trained with v-prediction on SD's scaled-linear
betas rescaled to zero terminal SNR (so the layout comes from the caption, not
from what pure noise happens to look like).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import build_tokenizer


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 32
    vae_channels: tuple[int, ...] = (32, 64)  # two blocks: one 2x downsampling
    vae_layers: int = 1
    latent_channels: int = 4
    # 16x16, 8x8 and 4x4 latents; cross-attention at 8x8 and 4x4 (and the
    # middle), where the caption decides what goes where. At 16x16 it cost
    # twice the step time for little gain.
    unet_channels: tuple[int, ...] = (64, 112, 128)
    unet_layers: int = 1
    unet_heads: int = 4
    norm_groups: int = 16
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


BASE_CONFIG = ModelConfig()
# For tests: the same code path in a model that trains a step in milliseconds.
TINY_CONFIG = ModelConfig(
    vae_channels=(8, 16), unet_channels=(16, 16, 32), unet_layers=1, unet_heads=2,
    norm_groups=8, text_width=32, text_layers=1, text_heads=2,
)

NOISE_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
    steps_offset=1,
)


def build_vae(config: ModelConfig) -> AutoencoderKL:
    blocks = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=config.vae_channels,
        layers_per_block=config.vae_layers,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=config.image_size,
    )


def build_unet(config: ModelConfig) -> UNet2DConditionModel:
    blocks = len(config.unet_channels)
    downsampling = 2 ** (len(config.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=config.image_size // downsampling,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",),
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers,
        attention_head_dim=config.unet_heads,
        cross_attention_dim=config.text_width,
        norm_num_groups=config.norm_groups,
    )


def build_text_encoder(config: ModelConfig, vocab_size: int, tokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=config.text_width,
            intermediate_size=4 * config.text_width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=tokenizer.model_max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**NOISE_SCHEDULE)


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    """A fast multistep solver (good images in ~20 steps) on the training betas."""
    return DPMSolverMultistepScheduler(**NOISE_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2)


def build_pipeline(config: ModelConfig = BASE_CONFIG) -> StableDiffusionPipeline:
    """A randomly initialised pipeline of the given shape."""
    tokenizer = build_tokenizer()
    return StableDiffusionPipeline(
        vae=build_vae(config),
        text_encoder=build_text_encoder(config, len(tokenizer), tokenizer),
        tokenizer=tokenizer,
        unet=build_unet(config),
        scheduler=sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def parameter_counts(pipeline) -> dict[str, int]:
    """Parameters per model of the pipeline (SDXL's second text encoder too) and in all."""
    counts = {
        name: sum(p.numel() for p in getattr(pipeline, name).parameters())
        for name in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipeline, name, None) is not None
    }
    counts["total"] = sum(counts.values())
    return counts

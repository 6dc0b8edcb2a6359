"""A randomly initialised Stable Diffusion 1.5- or SDXL-shaped base model folder.

    python benchmarks/sd_shaped_base.py --kind sd15|sdxl --out DIR [--device cuda] [--dtype fp16]

Full-size shapes without weights (nothing comes from a hub): the UNet, VAE
and CLIP text encoder(s) of the published configurations, with the built-in
word-level tokenizer padded to 77 tokens (CLIP's vocabulary would have to be
downloaded). Samples are noise; what it is for is speed and memory at real
model sizes: `benchmarks/lora_training.py --base DIR`, `train_lora --base DIR`.
fp32 on disk: SD 1.5 about 4.3 GB, SDXL about 13 GB (half in fp16 or bf16).
`--device cuda` draws the random weights on the GPU: seconds instead of
minutes for SDXL; a device that is not there is refused before anything is
drawn. The folder is written as a temporary sibling (`.NAME.partial-PID`)
and renamed into place when complete, so a build that fails or is killed
leaves no `--out` behind and the same command builds it again (a rerun
removes the partial folders that builds no longer running left).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLIP_MAX_LENGTH = 77
# CLIP ViT-L/14's text tower (SD 1.5's encoder, SDXL's first) and OpenCLIP ViT-bigG/14's (SDXL's second).
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu")
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  projection_dim=1280, hidden_act="gelu")


def unet_config(kind: str) -> dict:
    if kind == "sd15":
        return dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                    block_out_channels=(320, 640, 1280, 1280),
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    if kind == "sdxl":
        return dict(sample_size=128, cross_attention_dim=2048, attention_head_dim=(5, 10, 20), layers_per_block=2,
                    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=2816)
    raise ValueError(f"unknown kind {kind!r}: sd15 or sdxl")


def vae_config(kind: str) -> dict:
    return dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                sample_size=512 if kind == "sd15" else 1024,
                scaling_factor=0.18215 if kind == "sd15" else 0.13025)


def build(kind: str, device: str = "cpu"):
    """The pipeline, randomly initialised (seeded); on "meta", shapes only."""
    import torch
    from diffusers import (
        AutoencoderKL, DDPMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from generation.ml.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(max_length=CLIP_MAX_LENGTH)
    special = dict(vocab_size=len(tokenizer), max_position_embeddings=CLIP_MAX_LENGTH,
                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    schedule = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                    steps_offset=1)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(kind))
        vae = AutoencoderKL(**vae_config(kind))
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L, **special))
        if kind == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIG_G, **special))
    if kind == "sd15":
        return StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=DDPMScheduler(**schedule, clip_sample=False), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=EulerDiscreteScheduler(**schedule, timestep_spacing="leading"))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(out: Path) -> None:
    """Removes the temporary folders of earlier builds of `out` whose process is gone (killed, or crashed before
    its cleanup); those of builds still running stay."""
    prefix = f".{out.name}.partial-"
    if not out.parent.is_dir():
        return
    for leftover in out.parent.iterdir():
        pid = leftover.name[len(prefix):]
        if leftover.name.startswith(prefix) and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("sd15", "sdxl"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not exist)")
    parser.add_argument("--device", default="cpu", help="where to draw the weights (default cpu; cuda is faster)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="precision on disk")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} already exists")
    from generation.ml.architecture import parameter_counts
    from generation.ml.lora_training import choose_device_and_dtype, device_problem

    try:  # before anything is drawn or written
        problem = device_problem(args.device)
        if problem:
            parser.error(f"--device {args.device}: {problem}")
        device, dtype = choose_device_and_dtype(args.device, args.dtype)
    except RuntimeError as exc:  # a device name torch does not know
        parser.error(f"--device {args.device}: {exc}")
    out = args.out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        pipe = build(args.kind, str(device))
        counts = parameter_counts(pipe)
        pipe.to(dtype=dtype).save_pretrained(partial)
        if out.exists():  # another build finished first
            raise FileExistsError(f"--out {args.out} appeared while this build ran; this build is discarded")
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print({name: f"{n / 1e6:.1f} M parameters" for name, n in counts.items()}, "->", args.out)


if __name__ == "__main__":
    main()

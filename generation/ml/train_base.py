"""Trains the built-in base model from scratch on procedurally drawn scenes.

    python -m generation.ml.train_base --out DIR [--minutes M] [--resume]

First the autoencoder (on plain scenes, the demo artists' styles and thin
line drawings), then the UNet and text encoder together on cached latents of
plain scenes, with 10% empty captions for classifier-free guidance. The
budget `--minutes` is split between the two phases and each phase's learning
rate decays with its share of the time; `--vae-steps/--unet-steps` give a
fixed number of steps instead (reproducible step for step). A checkpoint is
written every few minutes; `--resume` continues from it. At the end DIR holds
a diffusers StableDiffusionPipeline folder, training.json, evaluation.json,
samples.png and the model card README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.training_utils import compute_snr
from tqdm.auto import tqdm

from . import scenes
from .architecture import (
    BASE_CONFIG,
    TINY_CONFIG,
    ModelConfig,
    build_text_encoder,
    build_unet,
    build_vae,
    parameter_counts,
    sampling_scheduler,
    training_scheduler,
)
from .evaluate_base import evaluate, held_out_scenes
from .model_card import sample_grid, write_model_card
from .pipeline import generate
from .tokenizer import build_tokenizer

CHECKPOINT = "checkpoint.pt"
# Autoencoder data: mostly the base style, plus every texture a style
# adapter may later need to reproduce through it.
VAE_STYLES = {"plain": 0.4, "pastel-outline": 0.15, "ink-hatching": 0.15, "pixel-art": 0.15, "line-drawing": 0.15}
CAPTION_DROPOUT = 0.1
SNR_GAMMA = 5.0
KL_WEIGHT = 1e-6
WARMUP_STEPS = 100
FINAL_LR_FRACTION = 0.1


@dataclass(frozen=True)
class DataSizes:
    vae_images: int
    unet_scenes: int


FULL_DATA = DataSizes(vae_images=12000, unet_scenes=40000)
TINY_DATA = DataSizes(vae_images=16, unet_scenes=16)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.train_base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (a diffusers pipeline folder)")
    parser.add_argument("--minutes", type=float, default=40.0, help="training budget in wall-clock minutes (default 40)")
    parser.add_argument("--vae-share", type=float, default=0.15, help="share of the budget for the autoencoder")
    parser.add_argument("--vae-steps", type=int, help="fixed autoencoder steps instead of its time budget")
    parser.add_argument("--unet-steps", type=int, help="fixed UNet steps instead of its time budget")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vae-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--eval-n", type=int, default=200, help="held-out captions to evaluate (0: skip)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2: both cores)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and data set, for tests")
    args = parser.parse_args(argv)
    if args.resume and not (args.out / CHECKPOINT).is_file():
        parser.error(f"--resume: no checkpoint at {args.out / CHECKPOINT}")
    if args.minutes <= 0 or not 0 < args.vae_share < 1:
        parser.error("--minutes must be positive and --vae-share between 0 and 1")
    return args


def learning_rate(peak: float, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak as progress goes 0 -> 1."""
    warmup = min(1.0, (step + 1) / WARMUP_STEPS)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return peak * warmup * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


def render_pool(count: int, seed: int, styles: dict[str, float], held_out: bool | None) -> tuple[torch.Tensor, list[scenes.Scene]]:
    """`count` drawings as a uint8 tensor (N, 3, H, W), with their scenes."""
    rng = random.Random(seed)
    names, weights = list(styles), list(styles.values())
    drawn, images = [], np.empty((count, scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, 3), np.uint8)
    for i in range(count):
        scene = scenes.random_scene(rng, held_out=held_out)
        images[i] = scenes.image_to_array(scenes.render(scene, rng.choices(names, weights)[0]))
        drawn.append(scene)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), drawn


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def machine_facts() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": "cpu (no GPU)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out: Path = args.out
        self.config: ModelConfig = TINY_CONFIG if args.tiny else BASE_CONFIG
        self.data = TINY_DATA if args.tiny else FULL_DATA
        torch.manual_seed(args.seed)
        self.tokenizer = build_tokenizer()
        self.vae = build_vae(self.config)
        self.unet = build_unet(self.config)
        self.text_encoder = build_text_encoder(self.config, len(self.tokenizer), self.tokenizer)
        self.noise_scheduler = training_scheduler()
        self.generator = torch.Generator().manual_seed(args.seed)
        self.caption_rng = random.Random(args.seed)
        self.vae_optimizer = torch.optim.AdamW(self.vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        self.unet_optimizer = torch.optim.AdamW(
            list(self.unet.parameters()) + list(self.text_encoder.parameters()), lr=args.lr, weight_decay=1e-2
        )
        self.state = {"phase": "vae", "vae_step": 0, "unet_step": 0, "scaling_factor": None,
                      "seconds": {"data": 0.0, "vae": 0.0, "unet": 0.0}, "losses": {"vae": None, "unet": None}}
        self.last_checkpoint = time.monotonic()

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "state": self.state,
            "config": self.config.to_dict(),
            "vae": self.vae.state_dict(),
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "vae_optimizer": self.vae_optimizer.state_dict(),
            "unet_optimizer": self.unet_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "caption_rng": self.caption_rng.getstate(),
        }
        partial = self.out / (CHECKPOINT + ".partial")
        torch.save(checkpoint, partial)
        os.replace(partial, self.out / CHECKPOINT)  # never leave a half-written checkpoint
        self.last_checkpoint = time.monotonic()

    def load_checkpoint(self) -> None:
        checkpoint = torch.load(self.out / CHECKPOINT, weights_only=False)
        if checkpoint["config"] != self.config.to_dict():
            raise SystemExit("the checkpoint was made with another model shape (--tiny differs)")
        self.state = checkpoint["state"]
        self.vae.load_state_dict(checkpoint["vae"])
        self.unet.load_state_dict(checkpoint["unet"])
        self.text_encoder.load_state_dict(checkpoint["text_encoder"])
        self.vae_optimizer.load_state_dict(checkpoint["vae_optimizer"])
        self.unet_optimizer.load_state_dict(checkpoint["unet_optimizer"])
        self.generator.set_state(checkpoint["generator"])
        self.caption_rng.setstate(checkpoint["caption_rng"])

    def maybe_checkpoint(self) -> None:
        if time.monotonic() - self.last_checkpoint >= self.args.checkpoint_minutes * 60:
            self.save_checkpoint()

    # ------------------------------------------------------------ phases

    def progress(self, phase: str, fixed_steps: int | None, budget_seconds: float) -> float:
        if fixed_steps is not None:
            return self.state[f"{phase}_step"] / fixed_steps
        return self.state["seconds"][phase] / budget_seconds

    def train_vae(self) -> None:
        args = self.args
        started = time.perf_counter()
        pool, _ = render_pool(self.data.vae_images, args.seed + 1, VAE_STYLES, held_out=None)
        self.state["seconds"]["data"] += time.perf_counter() - started
        budget = args.minutes * 60 * args.vae_share
        self.vae.train()
        bar = tqdm(total=args.vae_steps, initial=self.state["vae_step"], desc="autoencoder", unit="step")
        while (progress := self.progress("vae", args.vae_steps, budget)) < 1:
            step_started = time.perf_counter()
            for group in self.vae_optimizer.param_groups:
                group["lr"] = learning_rate(args.vae_lr, self.state["vae_step"], progress)
            index = torch.randint(len(pool), (args.vae_batch_size,), generator=self.generator)
            images = to_model_range(pool[index])
            posterior = self.vae.encode(images).latent_dist
            reconstruction = self.vae.decode(posterior.sample(generator=self.generator)).sample
            mse = F.mse_loss(reconstruction, images)
            loss = mse + KL_WEIGHT * posterior.kl().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            self.vae_optimizer.step()
            self.vae_optimizer.zero_grad(set_to_none=True)
            self.state["vae_step"] += 1
            self.state["seconds"]["vae"] += time.perf_counter() - step_started
            # Reconstruction PSNR on the [-1, 1] range (peak-to-peak 2).
            self.state["losses"]["vae"] = {"mse": mse.item(), "psnr_db": 10 * math.log10(4 / max(mse.item(), 1e-10))}
            bar.update(1)
            bar.set_postfix(psnr=f"{self.state['losses']['vae']['psnr_db']:.1f}dB", done=f"{progress:.0%}")
            self.maybe_checkpoint()
        bar.close()
        self.state["phase"] = "unet"
        self.save_checkpoint()

    @torch.no_grad()
    def cache_latents(self) -> tuple[torch.Tensor, torch.Tensor, list[scenes.Scene]]:
        """Latent mean and std of every training scene, encoded once."""
        started = time.perf_counter()
        pool, drawn = render_pool(self.data.unet_scenes, self.args.seed + 2, {"plain": 1.0}, held_out=False)
        self.vae.eval()
        means, stds = [], []
        for batch in torch.split(pool, 256):
            dist = self.vae.encode(to_model_range(batch)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        mean, std = torch.cat(means), torch.cat(stds)
        if self.state["scaling_factor"] is None:
            # As in SD: scale latents to unit variance for the diffusion model.
            self.state["scaling_factor"] = float(1.0 / mean.std())
        self.state["seconds"]["data"] += time.perf_counter() - started
        return mean, std, drawn

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            captions, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids)[0]

    def train_unet(self) -> None:
        args = self.args
        latent_mean, latent_std, drawn = self.cache_latents()
        scaling = self.state["scaling_factor"]
        budget = args.minutes * 60 * (1 - args.vae_share)
        self.unet.train()
        self.text_encoder.train()
        parameters = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        bar = tqdm(total=args.unet_steps, initial=self.state["unet_step"], desc="unet", unit="step")
        while (progress := self.progress("unet", args.unet_steps, budget)) < 1:
            step_started = time.perf_counter()
            for group in self.unet_optimizer.param_groups:
                group["lr"] = learning_rate(args.lr, self.state["unet_step"], progress)
            index = torch.randint(len(drawn), (args.batch_size,), generator=self.generator)
            noise_for_latents = torch.randn(latent_mean[index].shape, generator=self.generator)
            latents = (latent_mean[index] + latent_std[index] * noise_for_latents) * scaling
            captions = [
                "" if self.caption_rng.random() < CAPTION_DROPOUT else scenes.caption(drawn[i], self.caption_rng)
                for i in index.tolist()
            ]
            noise = torch.randn(latents.shape, generator=self.generator)
            timesteps = torch.randint(
                self.noise_scheduler.config.num_train_timesteps, (args.batch_size,), generator=self.generator
            )
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
            prediction = self.unet(noisy, timesteps, self.encode_captions(captions)).sample
            # Min-SNR weighting in its v-prediction form: easy low-noise steps
            # count less; the noisiest steps, which fix the layout, count fully.
            weights = (SNR_GAMMA / (compute_snr(self.noise_scheduler, timesteps) + 1)).clamp(max=1.0)
            loss = (weights * F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            self.unet_optimizer.step()
            self.unet_optimizer.zero_grad(set_to_none=True)
            self.state["unet_step"] += 1
            self.state["seconds"]["unet"] += time.perf_counter() - step_started
            self.state["losses"]["unet"] = loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", done=f"{progress:.0%}")
            self.maybe_checkpoint()
        bar.close()
        self.state["phase"] = "done"
        self.save_checkpoint()

    # ------------------------------------------------------------ output

    def pipeline(self) -> StableDiffusionPipeline:
        self.vae.register_to_config(scaling_factor=self.state["scaling_factor"])
        pipe = StableDiffusionPipeline(
            vae=self.vae.eval(),
            text_encoder=self.text_encoder.eval(),
            tokenizer=self.tokenizer,
            unet=self.unet.eval(),
            scheduler=sampling_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def export(self) -> None:
        args = self.args
        pipe = self.pipeline()
        pipe.save_pretrained(self.out)
        seconds = dict(self.state["seconds"])
        seconds["total"] = sum(seconds.values())
        training = {
            "seed": args.seed,
            "config": self.config.to_dict(),
            "parameters": parameter_counts(pipe),
            "vocab_size": len(self.tokenizer),
            "vae_steps": self.state["vae_step"],
            "vae_batch_size": args.vae_batch_size,
            "vae_final": self.state["losses"]["vae"],
            "unet_steps": self.state["unet_step"],
            "unet_final_loss": self.state["losses"]["unet"],
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "snr_gamma": SNR_GAMMA,
            "caption_dropout": CAPTION_DROPOUT,
            "unet_scenes": self.data.unet_scenes,
            "scaling_factor": self.state["scaling_factor"],
            "seconds": {name: round(value, 1) for name, value in seconds.items()},
            "machine": {**machine_facts(), "load_average_end": [round(v, 2) for v in os.getloadavg()]},
            "command": f"python -m generation.ml.train_base --out DIR --vae-steps {self.state['vae_step']} "
                       f"--unet-steps {self.state['unet_step']} --seed {args.seed}" + (" --tiny" if args.tiny else ""),
        }
        (self.out / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        if args.eval_n:
            result = evaluate(pipe, args.eval_n)
            (self.out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
            print(json.dumps(result))
        grid_scenes = held_out_scenes(16, seed=7)
        captions = [scenes.plain_caption(scene) for scene in grid_scenes]
        sample_grid(generate(pipe, captions, seed=0), captions).save(self.out / "samples.png")
        write_model_card(self.out)
        # The shipped folder holds the model only, not the optimiser state.
        (self.out / CHECKPOINT).unlink(missing_ok=True)

    def run(self) -> None:
        if self.args.resume:
            self.load_checkpoint()
        if self.state["phase"] == "vae":
            self.train_vae()
        if self.state["phase"] == "unet":
            self.train_unet()
        self.export()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # Denormal floats (tiny Adam moments and activations) made CPU steps up
    # to ten times slower here; flushing them to zero changes nothing else.
    torch.set_flush_denormal(True)
    Trainer(args).run()
    print(f"model written to {args.out}")


if __name__ == "__main__":
    main()

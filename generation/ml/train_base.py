"""Trains the built-in base model from scratch on procedurally drawn scenes.

    python -m generation.ml.train_base --out DIR [--minutes M] [--resume]

Three phases, in the manner of diffusers' training examples:

1. the autoencoder, on plain scenes, the demo artists' styles and thin line
   drawings, as a deterministic autoencoder (reconstruction of the latent
   mean) with a loss on image gradients as well as pixels, so 1-px lines,
   hatching and pixel edges survive; its variance head is then fixed to a
   tiny constant, so `latent_dist.sample()` is the mean for every later user;
2. the text encoder alone, for a few hundred fast steps, taught to read a
   caption's colour, object, background, position and count (small linear
   heads on its pooled output, used in training only). Jointly trained from
   scratch, the text encoder never separated the object's colour and place
   from the rest, and the UNet could not learn layout at all;
3. the UNet and text encoder together on cached latents of plain scenes,
   with 10% empty captions for classifier-free guidance, timesteps weighted
   towards the high-noise end (where the caption alone decides the layout)
   and the middle (where outlines form), and the caption heads' loss kept
   on; the exported weights are an exponential moving average (EMA).

`--minutes` is the whole run's wall-clock budget: the autoencoder gets
`--vae-share` of it, the UNet what is left after data, autoencoder and text
encoder; each phase's learning rate decays with its share of the time.
`--vae-steps/--unet-steps` give a fixed number of steps instead
(reproducible step for step). A checkpoint is written every few minutes;
`--resume` continues from it. At the end DIR holds a diffusers
StableDiffusionPipeline folder, training.json, evaluation.json, samples.png
and the model card README.md.
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
from diffusers.training_utils import EMAModel, compute_snr
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
# Autoencoder: the image-gradient term weighs edges and textures, which are
# few pixels but the whole of a style; with pixels alone 1-px hatching came
# back as flat colour (21 dB) after as many steps, with it 28 dB.
GRADIENT_LOSS_WEIGHT = 3.0
MEAN_PENALTY = 1e-6  # the KL term's pull on the latent mean, keeps its scale bounded
POSTERIOR_STD_FRACTION = 0.01  # the fixed posterior std, as a share of the latents' spread
# Text encoder: steps alone before the UNet, and the caption heads' weight after.
TEXT_STEPS = 400
TEXT_BATCH_SIZE = 128
TEXT_LR = 1e-3
CAPTION_LOSS_WEIGHT = 0.1
CAPTION_FACTS = {
    "colour": tuple(scenes.COLOURS),
    "object": scenes.OBJECTS,
    "background": tuple(scenes.COLOURS),
    "position": tuple(scenes.POSITIONS),
    "count": scenes.COUNTS,
}
# UNet timesteps, a mix of three ranges. From 850 up (SNR below 0.01) the
# model must draw the layout from the caption alone: drawn uniformly, position
# stayed at chance after 1000 steps; with half the batch there, 97%. Between
# 200 and 850 the outline takes form: 500 more steps there alone took the
# previous base's shape accuracy from 15% to 24% (colour 86% -> 94%), against
# 20% (85%) for 500 more steps of its half-high-noise mix. The rest is uniform.
TIMESTEP_MIX = {"high_noise": (0.3, 850, 1000), "middle": (0.4, 200, 850), "uniform": (0.3, 0, 1000)}
EMA_DECAY = 0.999
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
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-clock budget of the whole run (default 55)")
    parser.add_argument("--vae-share", type=float, default=0.2, help="share of the budget for the autoencoder")
    parser.add_argument("--vae-steps", type=int, help="fixed autoencoder steps instead of its time budget")
    parser.add_argument("--unet-steps", type=int, help="fixed UNet steps instead of its time budget")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-steps", type=int, default=TEXT_STEPS, help="text-encoder steps before the UNet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vae-batch-size", type=int, default=8)
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


def image_gradient_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return sum(F.mse_loss(reconstruction.diff(dim=d), images.diff(dim=d)) for d in (-1, -2))


class CaptionHeads(torch.nn.Module):
    """Linear read-outs of a caption's facts from the text encoder's pooled
    output; they teach the text encoder, and are not part of the model."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(width, len(values)) for name, values in CAPTION_FACTS.items()})

    def loss(self, pooled: torch.Tensor, described: list[scenes.Scene | None]) -> torch.Tensor:
        """Mean cross-entropy over the facts, for the captions that describe a scene (not the empty ones)."""
        rows = [i for i, scene in enumerate(described) if scene is not None]
        if not rows:
            return pooled.sum() * 0.0
        pooled = pooled[rows]
        losses = []
        for name, values in CAPTION_FACTS.items():
            target = torch.tensor([values.index(getattr(described[i], name)) for i in rows])
            losses.append(F.cross_entropy(self.heads[name](pooled), target))
        return torch.stack(losses).mean()


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
        self.caption_heads = CaptionHeads(self.config.text_width)
        self.vae_optimizer = torch.optim.AdamW(self.vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        self.text_optimizer = torch.optim.AdamW(
            list(self.text_encoder.parameters()) + list(self.caption_heads.parameters()), lr=TEXT_LR, weight_decay=1e-2
        )
        self.unet_optimizer = torch.optim.AdamW(self.denoiser_parameters(), lr=args.lr, weight_decay=1e-2)
        self.ema = EMAModel(self.exported_parameters(), decay=EMA_DECAY, use_ema_warmup=True, power=2 / 3)
        self.state = {"phase": "vae", "vae_step": 0, "text_step": 0, "unet_step": 0, "scaling_factor": None,
                      "seconds": {"data": 0.0, "vae": 0.0, "text": 0.0, "unet": 0.0},
                      "losses": {"vae": None, "text": None, "unet": None}}
        self.last_checkpoint = time.monotonic()

    def exported_parameters(self) -> list[torch.nn.Parameter]:
        """The UNet's and text encoder's: what the EMA averages and the model ships."""
        return [*self.unet.parameters(), *self.text_encoder.parameters()]

    def denoiser_parameters(self) -> list[torch.nn.Parameter]:
        """What the UNet phase trains: the exported parameters and the caption heads."""
        return [*self.exported_parameters(), *self.caption_heads.parameters()]

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "state": self.state,
            "config": self.config.to_dict(),
            "vae": self.vae.state_dict(),
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "caption_heads": self.caption_heads.state_dict(),
            "ema": self.ema.state_dict(),
            "vae_optimizer": self.vae_optimizer.state_dict(),
            "text_optimizer": self.text_optimizer.state_dict(),
            "unet_optimizer": self.unet_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "caption_rng": self.caption_rng.getstate(),
        }
        partial = self.out / (CHECKPOINT + ".partial")
        torch.save(checkpoint, partial)
        os.replace(partial, self.out / CHECKPOINT)  # never leave a half-written checkpoint
        self.last_checkpoint = time.monotonic()

    def load_checkpoint(self) -> None:
        try:  # tensors and plain data only: unpickling anything else could run code planted in --out
            checkpoint = torch.load(self.out / CHECKPOINT, weights_only=True)
        except Exception as exc:
            raise SystemExit(f"--resume: cannot read the checkpoint {self.out / CHECKPOINT} ({exc.__class__.__name__})") from None
        if checkpoint["config"] != self.config.to_dict():
            raise SystemExit("the checkpoint was made with another model shape (--tiny differs)")
        self.state = checkpoint["state"]
        self.vae.load_state_dict(checkpoint["vae"])
        self.unet.load_state_dict(checkpoint["unet"])
        self.text_encoder.load_state_dict(checkpoint["text_encoder"])
        self.caption_heads.load_state_dict(checkpoint["caption_heads"])
        self.ema.load_state_dict(checkpoint["ema"])
        self.vae_optimizer.load_state_dict(checkpoint["vae_optimizer"])
        self.text_optimizer.load_state_dict(checkpoint["text_optimizer"])
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
        return self.state["seconds"][phase] / max(budget_seconds, 1e-9)

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
            latents = self.vae.encode(images).latent_dist.mean
            reconstruction = self.vae.decode(latents).sample
            mse = F.mse_loss(reconstruction, images)
            loss = (mse + GRADIENT_LOSS_WEIGHT * image_gradient_loss(reconstruction, images)
                    + MEAN_PENALTY * latents.pow(2).mean())
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
        self.fix_posterior_variance(pool)
        self.state["phase"] = "text"
        self.save_checkpoint()

    @torch.no_grad()
    def fix_posterior_variance(self, pool: torch.Tensor) -> None:
        """Sets the encoder's log-variance output to a constant: a std of
        POSTERIOR_STD_FRACTION of the latents' spread. Trained on the mean,
        the head never learned a variance; left as it is, `sample()` (which
        diffusers' scripts and the LoRA loop call) would drown the latents."""
        self.vae.eval()
        spread = self.vae.encode(to_model_range(pool[:256])).latent_dist.mean.std()
        channels = self.config.latent_channels
        head = self.vae.quant_conv
        head.weight[channels:] = 0.0
        head.bias[channels:] = 2 * math.log(POSTERIOR_STD_FRACTION * float(spread))

    def train_text(self, drawn: list[scenes.Scene]) -> None:
        """The text encoder alone, reading captions' facts (fixed steps: it takes about a minute)."""
        self.text_encoder.train()
        bar = tqdm(total=self.args.text_steps, initial=self.state["text_step"], desc="text encoder", unit="step")
        while self.state["text_step"] < self.args.text_steps:
            step_started = time.perf_counter()
            index = torch.randint(len(drawn), (TEXT_BATCH_SIZE,), generator=self.generator)
            described = [drawn[i] for i in index.tolist()]
            captions = [scenes.caption(scene, self.caption_rng) for scene in described]
            loss = self.caption_heads.loss(self.encode_captions(captions).pooler_output, described)
            loss.backward()
            self.text_optimizer.step()
            self.text_optimizer.zero_grad(set_to_none=True)
            self.state["text_step"] += 1
            self.state["seconds"]["text"] += time.perf_counter() - step_started
            self.state["losses"]["text"] = loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
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

    def encode_captions(self, captions: list[str]):
        """The text encoder's output: per-token states for the UNet, the pooled one for the caption heads."""
        ids = self.tokenizer(
            captions, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids)

    def unet_budget(self) -> float:
        """Seconds for the UNet: what the whole budget leaves after the other phases."""
        spent = sum(seconds for phase, seconds in self.state["seconds"].items() if phase != "unet")
        return self.args.minutes * 60 - spent

    def sample_timesteps(self, count: int) -> torch.Tensor:
        """Timesteps drawn from TIMESTEP_MIX: each item picks a range by its share."""
        shares = torch.tensor([share for share, _, _ in TIMESTEP_MIX.values()])
        ranges = torch.multinomial(shares, count, replacement=True, generator=self.generator)
        low = torch.tensor([start for _, start, _ in TIMESTEP_MIX.values()])[ranges]
        high = torch.tensor([end for _, _, end in TIMESTEP_MIX.values()])[ranges]
        return low + (torch.rand(count, generator=self.generator) * (high - low)).long()

    def train_unet(self, latent_mean: torch.Tensor, latent_std: torch.Tensor, drawn: list[scenes.Scene]) -> None:
        args = self.args
        scaling = self.state["scaling_factor"]
        budget = self.unet_budget()
        self.unet.train()
        self.text_encoder.train()
        parameters = self.denoiser_parameters()
        bar = tqdm(total=args.unet_steps, initial=self.state["unet_step"], desc="unet", unit="step")
        while (progress := self.progress("unet", args.unet_steps, budget)) < 1:
            step_started = time.perf_counter()
            for group in self.unet_optimizer.param_groups:
                group["lr"] = learning_rate(args.lr, self.state["unet_step"], progress)
            index = torch.randint(len(drawn), (args.batch_size,), generator=self.generator)
            noise_for_latents = torch.randn(latent_mean[index].shape, generator=self.generator)
            latents = (latent_mean[index] + latent_std[index] * noise_for_latents) * scaling
            described = [None if self.caption_rng.random() < CAPTION_DROPOUT else drawn[i] for i in index.tolist()]
            captions = ["" if scene is None else scenes.caption(scene, self.caption_rng) for scene in described]
            noise = torch.randn(latents.shape, generator=self.generator)
            timesteps = self.sample_timesteps(args.batch_size)
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
            text = self.encode_captions(captions)
            prediction = self.unet(noisy, timesteps, text.last_hidden_state).sample
            # Min-SNR weighting in its v-prediction form: easy low-noise steps
            # count less; the noisiest steps, which fix the layout, count fully.
            weights = (SNR_GAMMA / (compute_snr(self.noise_scheduler, timesteps) + 1)).clamp(max=1.0)
            loss = (weights * F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))).mean()
            loss = loss + CAPTION_LOSS_WEIGHT * self.caption_heads.loss(text.pooler_output, described)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            self.unet_optimizer.step()
            self.unet_optimizer.zero_grad(set_to_none=True)
            self.ema.step(self.exported_parameters())
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
        """The pipeline with the EMA weights (the last step's are not kept)."""
        self.ema.copy_to(self.exported_parameters())
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
            "vae_gradient_loss_weight": GRADIENT_LOSS_WEIGHT,
            "text_steps": self.state["text_step"],
            "text_final_loss": self.state["losses"]["text"],
            "caption_loss_weight": CAPTION_LOSS_WEIGHT,
            "timestep_mix": {name: {"share": share, "from": start, "to": end} for name, (share, start, end) in TIMESTEP_MIX.items()},
            "ema_decay": EMA_DECAY,
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
                       f"--text-steps {self.state['text_step']} --unet-steps {self.state['unet_step']} "
                       f"--batch-size {args.batch_size} --vae-batch-size {args.vae_batch_size} --seed {args.seed}"
                       + (" --tiny" if args.tiny else ""),
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
        if self.state["phase"] in ("text", "unet"):
            latent_mean, latent_std, drawn = self.cache_latents()
            if self.state["phase"] == "text":
                self.train_text(drawn)
            self.train_unet(latent_mean, latent_std, drawn)
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

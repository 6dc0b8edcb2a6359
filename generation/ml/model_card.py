"""The model card (README.md) and sample grid of a trained base model.

    python -m generation.ml.model_card DIR

rewrites DIR/README.md from DIR/training.json and DIR/evaluation.json, which
`train_base` and `evaluate_base --save` write.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from . import scenes

GRID_COLUMNS = 4
CELL_SCALE = 6  # 32 px samples are shown 6x larger, nearest-neighbour
CAPTION_HEIGHT = 40
TARGETS = {"colour": 0.85, "position": 0.75, "shape": 0.60}


def sample_grid(images: list[Image.Image], captions: list[str]) -> Image.Image:
    """Images upscaled (nearest) with their captions underneath, 4 per row."""
    cell = images[0].width * CELL_SCALE
    rows = -(-len(images) // GRID_COLUMNS)
    grid = Image.new("RGB", (GRID_COLUMNS * cell, rows * (cell + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=12)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x, y = (i % GRID_COLUMNS) * cell, (i // GRID_COLUMNS) * (cell + CAPTION_HEIGHT)
        grid.paste(image.resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        draw.multiline_text((x + 4, y + cell + 2), "\n".join(textwrap.wrap(caption, 30)), fill="black", font=font, spacing=1)
    return grid


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def render_model_card(training: dict, evaluation: dict | None) -> str:
    params = training["parameters"]
    config = training["config"]
    machine = training["machine"]
    seconds = training["seconds"]
    mix = training["timestep_mix"]
    if evaluation:
        acc, chance = evaluation["accuracy"], evaluation["chance"]
        evaluation_text = (
            f"On {evaluation['n']} held-out captions (plain form, combinations of colour, object, background and "
            f"position never drawn in training), {evaluation['steps']} sampling steps, guidance {evaluation['guidance']}, "
            "read back by the pixel classifier in `generation/ml/classify.py` (100% right on clean drawings):\n\n"
            "| attribute | accuracy | chance |\n| --- | --- | --- |\n"
            + "".join(f"| {name} | {acc[name]:.1%} | {chance[name]:.1%} |\n" for name in acc)
            + f"\nSampling took {evaluation['seconds_per_image']:.3f} s per image (batches of 25, CPU, fp32).\n\n"
            + "Targets of the issue: "
            + ", ".join(
                f"{name} >= {target:.0%} {'met' if acc[name] >= target else 'NOT met'}" for name, target in TARGETS.items()
            )
            + "."
        )
    else:
        evaluation_text = "Not evaluated (trained with `--eval-n 0`)."
    return f"""# Built-in base model

A small text-to-image diffusion model in the Stable Diffusion architecture,
trained from scratch by `python -m generation.ml.train_base` on illustrations
that the project draws itself (`generation/ml/scenes.py`): no third-party
images, no downloaded weights. It loads with
`StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)`.

## Output
{config['image_size']}x{config['image_size']} px RGB. The CLI and the grid show samples
upscaled with nearest-neighbour. 32 px rather than 64 px: with the
autoencoder downsampling only 2x (so thin outlines survive), 64 px means
32x32 latents and four times the cost of every UNet step; within the
one-hour budget on 2 CPU cores that would leave a quarter of the steps.

Prompts follow the training grammar, plainest form:
`a {{colour}} {{object}} on a {{colour}} background, {{position}}`, e.g.
"a red star on a blue background, top left".

## Data
Procedural scenes drawn with Pillow: {len(scenes.OBJECTS)} objects ({', '.join(scenes.OBJECTS)}),
{len(scenes.COLOURS)} colours ({', '.join(scenes.COLOURS)}) for object and background,
{len(scenes.POSITIONS)} positions ({', '.join(scenes.POSITIONS)}), sizes small/large,
one or two objects. Captions come from a small grammar (half plain form, half
variants); {training['caption_dropout']:.0%} are empty for classifier-free guidance.
About 10% of the (colour, object, background, position) combinations are held
out of training for evaluation. The autoencoder also saw the demo artists'
styles ({', '.join(scenes.DEMO_STYLES)}) and thin line drawings, so that
outlines, hatching and pixel edges survive encoding and a LoRA can learn them.

## Architecture
| part | class | parameters |
| --- | --- | --- |
| UNet (channels {config['unet_channels']}, cross-attention at 8x8 and 4x4) | UNet2DConditionModel | {_count(params['unet'])} |
| autoencoder (channels {config['vae_channels']}, 2x downsampling, {config['latent_channels']} latent channels) | AutoencoderKL | {_count(params['vae'])} |
| text encoder ({config['text_layers']} layers, width {config['text_width']}) | CLIPTextModel | {_count(params['text_encoder'])} |
| tokenizer (word level, {training['vocab_size']} tokens, unknown words -> `<|unk|>`) | PreTrainedTokenizerFast | - |
| scheduler | DPMSolverMultistepScheduler | - |
| total | | {_count(params['total'])} |

Noise schedule: SD's scaled-linear betas (0.00085-0.012, 1000 steps),
rescaled to zero terminal SNR, v-prediction, "trailing" timesteps.

## Training
Seed {training['seed']}, three phases.

1. Autoencoder: {training['vae_steps']} steps, batch {training['vae_batch_size']}, trained on the
   latent mean with pixel MSE plus {training['vae_gradient_loss_weight']} x MSE of the image gradients (edges
   and textures), then its variance head fixed to 1% of the latents' spread;
   latent scaling factor {training['scaling_factor']:.4f}.
2. Text encoder alone: {training['text_steps']} steps, taught to read each caption's colour,
   object, background, position and count (linear heads on its pooled output,
   used in training only; final loss {training['text_final_loss']:.4f}).
3. UNet and text encoder jointly: {training['unet_steps']} steps, batch {training['batch_size']}, AdamW lr
   {training['learning_rate']} with warm-up and cosine decay, min-SNR weighting (gamma
   {training['snr_gamma']}) on cached latents of {training['unet_scenes']} scenes,
   timesteps drawn {mix['high_noise']['share']:.0%} from {mix['high_noise']['from']}-{mix['high_noise']['to']} (where the caption
   alone decides the layout), {mix['middle']['share']:.0%} from {mix['middle']['from']}-{mix['middle']['to']} (where outlines
   form) and {mix['uniform']['share']:.0%} from all, the caption heads' loss kept on (weight
   {training['caption_loss_weight']}); exported weights: EMA (decay {training['ema_decay']}).

Wall time: {seconds['total'] / 60:.1f} min in all ({seconds['total']:.0f} s: data {seconds['data']:.0f} s,
autoencoder {seconds['vae']:.0f} s, text encoder {seconds['text']:.0f} s, UNet {seconds['unet']:.0f} s), not counting evaluation.
Machine: {machine['cpu']}, {machine['threads']} PyTorch threads on {machine['cores']} cores, {machine['device']},
torch {machine['torch']}, diffusers {machine['diffusers']}, {machine['platform']}.
Load average when training ended: {machine['load_average_end']}.
{training.get('notes', '')}

## Evaluation
{evaluation_text}

## Samples
![16 samples](samples.png)

Held-out captions, seed 0, {training.get('grid_steps', 20)} steps.
"""


def write_model_card(folder: Path) -> Path:
    folder = Path(folder)
    training = json.loads((folder / "training.json").read_text())
    evaluation_file = folder / "evaluation.json"
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else None
    card = folder / "README.md"
    card.write_text(render_model_card(training, evaluation))
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m generation.ml.model_card", description="Rewrite a base model's README.md")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if not (args.folder / "training.json").is_file():
        parser.error(f"{args.folder}: no training.json (not trained by generation.ml.train_base)")
    print(write_model_card(args.folder))


if __name__ == "__main__":
    main()

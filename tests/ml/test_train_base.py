"""The base model's training script, a few steps on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from generation.ml import train_base
from generation.ml.pipeline import generate, load_pipeline

TINY = ["--tiny", "--vae-steps", "2", "--text-steps", "2", "--unet-steps", "3", "--batch-size", "4", "--vae-batch-size", "4",
        "--eval-n", "2", "--threads", "2"]


def weights(folder) -> dict[str, torch.Tensor]:
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    return {f"{part}.{k}": v for part in ("unet", "text_encoder", "vae") for k, v in getattr(pipe, part).state_dict().items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train_base.main(["--out", str(out), *TINY])
    return out


def test_training_writes_a_loadable_model_with_card_and_figures(trained):
    pipe = load_pipeline(trained)
    assert generate(pipe, "a red star on a blue background, top left", steps=2)[0].size == (32, 32)
    facts = json.loads((trained / "training.json").read_text())
    assert (facts["vae_steps"], facts["text_steps"], facts["unet_steps"]) == (2, 2, 3)
    assert facts["parameters"]["total"] == sum(facts["parameters"][p] for p in ("unet", "vae", "text_encoder"))
    assert facts["scaling_factor"] > 0 and pipe.vae.config.scaling_factor == pytest.approx(facts["scaling_factor"])
    evaluation = json.loads((trained / "evaluation.json").read_text())
    assert evaluation["n"] == 2 and set(evaluation["accuracy"]) == {"colour", "background", "position", "shape"}
    card = (trained / "README.md").read_text()
    assert "Wall time:" in card and "| UNet" in card and "held-out captions" in card
    assert (trained / "samples.png").is_file()
    assert not (trained / train_base.CHECKPOINT).exists()  # the shipped folder holds no optimiser state


def test_training_is_reproducible_and_resume_continues_where_it_stopped(trained, tmp_path):
    # Stop after the autoencoder phase (its checkpoint), then resume: the
    # result equals the uninterrupted run's, weight for weight.
    args = train_base.parse_args(["--out", str(tmp_path), *TINY])
    torch.set_flush_denormal(True)
    interrupted = train_base.Trainer(args)
    interrupted.train_vae()
    checkpoint = torch.load(tmp_path / train_base.CHECKPOINT, weights_only=False)
    assert checkpoint["state"]["phase"] == "text" and checkpoint["state"]["vae_step"] == 2
    train_base.main(["--out", str(tmp_path), *TINY, "--resume"])
    resumed, uninterrupted = weights(tmp_path), weights(trained)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert json.loads((tmp_path / "training.json").read_text())["unet_steps"] == 3


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_base.main(["--out", str(tmp_path), *TINY, "--resume"])
    assert "no checkpoint" in capsys.readouterr().err


class RunsCode:
    def __reduce__(self):
        import os

        return (os.mkdir, ("ran",))


def test_resume_reads_a_checkpoint_as_data_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state": RunsCode()}, tmp_path / train_base.CHECKPOINT)
    with pytest.raises(SystemExit) as exit_info:
        train_base.main(["--out", str(tmp_path), *TINY, "--resume"])
    assert "--resume: cannot read the checkpoint" in str(exit_info.value) and "UnpicklingError" in str(exit_info.value)
    assert not (tmp_path / "ran").exists()


def test_the_autoencoder_samples_its_mean(trained):
    # Trained on the latent mean, its variance head is fixed to a tiny
    # constant, so sample() (diffusers' scripts, the LoRA loop) keeps the image.
    pipe = load_pipeline(trained)
    images = train_base.to_model_range(train_base.render_pool(8, 0, {"plain": 1.0}, held_out=None)[0])
    with torch.no_grad():
        posterior = pipe.vae.encode(images).latent_dist
    assert float(posterior.std.max()) <= 0.02 * float(posterior.mean.std())


def test_caption_heads_teach_the_text_encoder_a_captions_facts(tmp_path):
    args = train_base.parse_args(["--out", str(tmp_path), *TINY, "--text-steps", "60"])
    trainer = train_base.Trainer(args)
    _, drawn = train_base.render_pool(256, 3, {"plain": 1.0}, held_out=False)
    captions = [train_base.scenes.plain_caption(scene) for scene in drawn[:64]]
    with torch.no_grad():
        before = trainer.caption_heads.loss(trainer.encode_captions(captions).pooler_output, drawn[:64]).item()
    trainer.train_text(drawn)
    with torch.no_grad():
        after = trainer.caption_heads.loss(trainer.encode_captions(captions).pooler_output, drawn[:64]).item()
    assert after < 0.5 * before
    assert trainer.state["phase"] == "unet" and trainer.state["text_step"] == 60


def test_unet_timesteps_follow_the_mix_of_ranges(tmp_path):
    trainer = train_base.Trainer(train_base.parse_args(["--out", str(tmp_path), *TINY]))
    timesteps = trainer.sample_timesteps(20000)
    assert timesteps.dtype == torch.long and 0 <= int(timesteps.min()) and int(timesteps.max()) < 1000

    def expected_share(low: int, high: int) -> float:  # each range's overlap with [low, high), by its share
        return sum(share * max(0, min(end, high) - max(start, low)) / (end - start)
                   for share, start, end in train_base.TIMESTEP_MIX.values())

    for low, high in [(850, 1000), (200, 850), (0, 200)]:
        observed = float(((timesteps >= low) & (timesteps < high)).float().mean())
        assert abs(observed - expected_share(low, high)) < 0.02, (low, high, observed)

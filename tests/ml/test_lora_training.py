"""The style LoRA training loop, its adapters and its CLI, on a tiny randomly
initialised model of the built-in base's shape (a step takes milliseconds)."""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from generation.ml import lora_training as lt
from generation.ml import scenes
from generation.ml import training_config as tc
from generation.ml.architecture import TINY_CONFIG, build_pipeline
from generation.ml.lora_training import (
    LoraTrainingConfig,
    TrainingCallbacks,
    TrainingCancelled,
    TrainingExample,
    apply_adapters,
    disable_adapters,
    load_base_pipeline,
    train_lora,
)
from generation.ml.train_lora import DataFolderError, read_data_folder
from generation.ml.train_lora import main as cli_main

# One thread: these models are tiny, and on a 2-core machine shared with other
# work two OpenMP threads can run ten times slower than one.
torch.set_num_threads(1)

PROMPTS = ["a red star on a blue background, top left", "a yellow house on a green background, centre"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base")
    build_pipeline(TINY_CONFIG).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def works(tmp_path_factory) -> list[TrainingExample]:
    """Twelve pastel-outline works; some larger than the base's 32 px and not square."""
    folder = tmp_path_factory.mktemp("works")
    examples = []
    for i in range(12):
        drawing = scenes.illustration(500 + i, "pastel-outline")
        image = drawing.image
        if i % 3 == 0:
            image = image.resize((96, 64), 0)
        path = folder / f"work{i:02d}.png"
        image.save(path)
        (folder / f"work{i:02d}.txt").write_text(drawing.caption)
        examples.append(TrainingExample(str(path), drawing.caption))
    return examples


def config(**kw) -> LoraTrainingConfig:
    base = dict(rank=4, alpha=4, learning_rate=5e-3, steps=12, batch_size=4, checkpoint_every=5,
                preview_every=0, seed=0)
    base.update(kw)
    return LoraTrainingConfig(**base)


def images_of(pipe, prompts=PROMPTS, seed=0) -> np.ndarray:
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(prompt=prompts, generator=generators, num_inference_steps=4, guidance_scale=3.0,
               output_type="np").images
    return np.asarray(out)


def probe_loss(pipe, work_dir: Path, seed: int = 123) -> float:
    """The noise-prediction loss on fixed latents, noise and timesteps: the
    training loss without its sampling noise."""
    from diffusers import DDPMScheduler

    cache = torch.load(work_dir / "cache.pt", weights_only=True)
    g = torch.Generator().manual_seed(seed)
    latents = cache["mean"] * pipe.vae.config.scaling_factor
    latents = latents.repeat(4, 1, 1, 1)
    embeds = cache["embeds"].repeat(4, 1, 1)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, 1000, (latents.shape[0],), generator=g)
    target = scheduler.get_velocity(latents, noise, t)
    with torch.no_grad():
        pred = pipe.unet(scheduler.add_noise(latents, noise, t), t, embeds).sample
    return float(torch.nn.functional.mse_loss(pred, target))


def test_training_lowers_the_loss_and_the_adapter_changes_the_output(tiny_base, works, tmp_path):
    progress, logs = [], []

    class Recorder(TrainingCallbacks):
        def on_progress(self, step, total, loss, eta):
            progress.append((step, total, loss, eta))

        def on_log(self, line):
            logs.append(line)

    torch.set_num_threads(2)
    result = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", threads=1,
                        config=config(steps=40, learning_rate=1e-2), work_dir=tmp_path / "work", callbacks=Recorder())
    assert torch.get_num_threads() == 1 and any("1 CPU thread(s)" in line for line in logs)
    assert result.steps == 40 and len(result.losses) == 40 and result.resumed_from_step == 0
    assert [p[0] for p in progress] == list(range(1, 41)) and all(p[1] == 40 for p in progress)
    assert progress[-1][3] == 0 and all(p[3] is not None and p[3] >= 0 for p in progress[1:])
    assert any("encoded 12 works" in line for line in logs)
    weights = Path(result.weights_path)
    assert weights == (tmp_path / "adapter" / lt.WEIGHTS_NAME).resolve() and weights.is_file()
    assert result.sha256 == lt.sha256_file(weights)

    pipe = load_base_pipeline(tiny_base)
    before_loss = probe_loss(pipe, tmp_path / "work")
    before = images_of(pipe)
    apply_adapters(pipe, [("style", result.weights_path, 1.0)])
    after_loss = probe_loss(pipe, tmp_path / "work")
    after = images_of(pipe)
    assert after_loss < 0.95 * before_loss, (before_loss, after_loss)
    assert np.abs(after - before).mean() > 1e-3
    # Scale 0 and disabling both give the base's output back exactly.
    disable_adapters(pipe)
    assert np.array_equal(images_of(pipe), before)
    apply_adapters(pipe, [("style", result.weights_path, 1.0)])
    assert np.array_equal(images_of(pipe), after)


def test_an_adapter_of_another_base_is_refused_and_leaves_the_pipeline_as_it_was(tiny_base, works, tmp_path):
    wider = tmp_path / "wider-base"
    build_pipeline(dataclasses.replace(TINY_CONFIG, unet_channels=(16, 16, 48))).save_pretrained(wider)
    foreign = train_lora(base_path=wider, examples=works[:4], out_dir=tmp_path / "foreign",
                         config=config(steps=1), work_dir=tmp_path / "w1")
    own = train_lora(base_path=tiny_base, examples=works[:4], out_dir=tmp_path / "own",
                     config=config(steps=2), work_dir=tmp_path / "w2")
    pipe = load_base_pipeline(tiny_base)
    apply_adapters(pipe, [("own", own.weights_path, 1.0)])
    with_own = images_of(pipe)
    mismatch = r"does not fit this base model: size mismatch for .*torch.Size\(\[4, 48\]\) from checkpoint"
    with pytest.raises(lt.AdapterError, match=mismatch):
        apply_adapters(pipe, [("style", foreign.weights_path, 1.0)])
    # diffusers removes a half-injected adapter itself; the pipeline keeps drawing as before
    assert pipe.get_list_adapters()["unet"] == ["own"]
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(Path(own.weights_path).read_bytes()[:500])
    with pytest.raises(lt.AdapterError, match="cannot load adapter .*truncated.safetensors"):
        apply_adapters(pipe, [("broken", truncated, 1.0)])
    apply_adapters(pipe, [("own", own.weights_path, 1.0)])
    assert np.array_equal(images_of(pipe), with_own)


def watch_vae_encode(pipe) -> list[tuple[int, torch.dtype, torch.dtype]]:
    """Records each VAE encode call: batch size, the pixels' dtype, the VAE weights' dtype."""
    seen, encode = [], pipe.vae.encode

    def recording_encode(pixels, *args, **kwargs):
        seen.append((pixels.shape[0], pixels.dtype, next(pipe.vae.parameters()).dtype))
        return encode(pixels, *args, **kwargs)

    pipe.vae.encode = recording_encode
    return seen


@pytest.mark.parametrize("side, budget, batches", [(32, lt.ENCODE_PIXELS, [16, 4]), (64, 64 * 64, [1, 1, 1])])
def test_works_are_encoded_in_batches_that_fit_a_pixel_budget(tiny_base, monkeypatch, side, budget, batches):
    """16 small works at once, but one Stable Diffusion-sized work at a time
    (its encoder's activations would outgrow the training step's). The second case shrinks the budget to one
    64 px work: a 512 px work through the tiny VAE's full-resolution attention took a minute on a 2-core CPU."""
    from PIL import Image

    assert lt.ENCODE_PIXELS // (512 * 512) == 1  # an SD-sized work fills the real budget alone
    monkeypatch.setattr(lt, "ENCODE_PIXELS", budget)
    pipe = load_base_pipeline(tiny_base)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(sum(batches))]
    seen = watch_vae_encode(pipe)
    mean, std = lt.encode_images(pipe, images, "cpu")
    assert [batch for batch, _, _ in seen] == batches
    assert mean.shape[0] == std.shape[0] == len(images)
    alone, _ = lt.encode_images(pipe, images[-1:], "cpu")
    assert torch.allclose(mean[-1:], alone, atol=1e-5)


@pytest.mark.parametrize("force_upcast, encoded_in", [(True, torch.float32), (False, torch.float16)])
def test_an_fp16_vae_marked_force_upcast_encodes_in_fp32(tmp_path, force_upcast, encoded_in):
    """SDXL's VAE overflows in fp16 (NaN latents); like diffusers' SDXL
    pipelines, the cache encodes through it in fp32 and leaves it in fp16."""
    from PIL import Image

    from tests.ml.test_pipeline import tiny_sdxl

    tiny_sdxl(tmp_path / "sdxl")
    pipe = load_base_pipeline(tmp_path / "sdxl", "cpu", torch.float16)
    pipe.vae.register_to_config(force_upcast=force_upcast)
    seen = watch_vae_encode(pipe)
    mean, _ = lt.encode_images(pipe, [Image.new("RGB", (32, 32), "red")], "cpu")
    assert [(pixels, weights) for _, pixels, weights in seen] == [(encoded_in, encoded_in)]
    assert pipe.vae.dtype == torch.float16 and mean.dtype == torch.float32 and torch.isfinite(mean).all()


def test_threads_below_one_are_refused_before_anything_loads(works, tmp_path):
    with pytest.raises(ValueError, match="threads must be at least 1"):
        train_lora(base_path=tmp_path / "no-base", examples=works, out_dir=tmp_path / "adapter", threads=0,
                   config=config(), work_dir=tmp_path / "work")
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("caption, mirrored", [
    ("a red star on a blue background, top left", "a red star on a blue background, top right"),
    ("Left: two moons; RIGHT: a tree", "Right: two moons; LEFT: a tree"),
    ("the leftmost house, right-hand side, drifting rightwards", "the rightmost house, left-hand side, drifting leftwards"),
    ("an upright figure, copyright and rights reserved", "an upright figure, copyright and rights reserved"),
    ("a yellow house on a green background, centre", "a yellow house on a green background, centre"),
    ("左上に赤い星、右下に青い月", "右上に赤い星、左下に青い月"),
])
def test_mirror_caption_swaps_left_and_right_and_nothing_else(caption, mirrored):
    assert lt.mirror_caption(caption) == mirrored


def watch_unet_inputs(monkeypatch, hook) -> None:
    """Registers `hook(module, args, kwargs)` as a forward pre-hook on the UNet of every pipeline the loop loads."""
    real_load = lt.load_base_pipeline

    def load_and_watch(*args, **kwargs):
        pipe = real_load(*args, **kwargs)
        pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return pipe

    monkeypatch.setattr(lt, "load_base_pipeline", load_and_watch)


def test_mirrored_works_are_trained_with_left_and_right_swapped(tiny_base, works, tmp_path, monkeypatch):
    seen = []
    watch_unet_inputs(monkeypatch, lambda module, a, kw: seen.extend(a[2].detach().clone()))
    example = TrainingExample(works[0].image_path, "a red star on a blue background, top left")
    train_lora(base_path=tiny_base, examples=[example], out_dir=tmp_path / "adapter", work_dir=tmp_path / "work",
               config=config(steps=6, flip=True, caption_dropout=0.0))
    cache = torch.load(tmp_path / "work" / "cache.pt", weights_only=True)
    as_written, swapped = cache["embeds"][0], cache["embeds_flip"][0]
    assert not torch.equal(as_written, swapped)
    assert len(seen) == 6 * 4
    assert all(torch.equal(row, as_written) or torch.equal(row, swapped) for row in seen)
    assert 0 < sum(torch.equal(row, swapped) for row in seen) < len(seen)

    # Nothing to swap, or no mirroring: no second set of embeddings.
    centred = TrainingExample(works[0].image_path, "a yellow house on a green background, centre")
    for name, case, flip in (("centred", centred, True), ("unflipped", example, False)):
        train_lora(base_path=tiny_base, examples=[case], out_dir=tmp_path / name, work_dir=tmp_path / f"{name}-work",
                   config=config(steps=2, flip=flip))
        assert "embeds_flip" not in torch.load(tmp_path / f"{name}-work" / "cache.pt", weights_only=True)


def test_sdxl_shaped_base_trains_with_swapped_captions_and_the_adapter_loads(works, tmp_path, monkeypatch):
    from tests.ml.test_pipeline import tiny_sdxl

    tiny_sdxl(tmp_path / "sdxl")
    seen = []
    watch_unet_inputs(monkeypatch, lambda module, a, kw: seen.extend(
        zip(a[2].detach().clone(), kw["added_cond_kwargs"]["text_embeds"].detach().clone())))
    example = TrainingExample(works[0].image_path, "a red star on a blue background, top left")
    result = train_lora(base_path=tmp_path / "sdxl", examples=[example], out_dir=tmp_path / "adapter",
                        work_dir=tmp_path / "work", config=config(steps=4, flip=True, caption_dropout=0.0))
    assert result.steps == 4 and all(np.isfinite(result.losses))
    cache = torch.load(tmp_path / "work" / "cache.pt", weights_only=True)
    as_written = (cache["embeds"][0], cache["pooled"][0])
    swapped = (cache["embeds_flip"][0], cache["pooled_flip"][0])
    assert not torch.equal(as_written[0], swapped[0]) and not torch.equal(as_written[1], swapped[1])

    def same(pair, expected):
        return torch.equal(pair[0], expected[0]) and torch.equal(pair[1], expected[1])

    # Each mirrored sample gets both of the swapped caption's conditionings, never one of each.
    assert all(same(pair, as_written) or same(pair, swapped) for pair in seen)
    assert 0 < sum(same(pair, swapped) for pair in seen) < len(seen) == 4 * 4

    monkeypatch.undo()
    pipe = load_base_pipeline(tmp_path / "sdxl")
    before = images_of(pipe, prompts=PROMPTS[:1])
    apply_adapters(pipe, [("style", result.weights_path, 1.0)])
    assert np.abs(images_of(pipe, prompts=PROMPTS[:1]) - before).mean() > 0


def test_same_seed_same_adapter_and_images_other_seed_differs(tiny_base, works, tmp_path):
    runs = [train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / f"a{i}", config=config(seed=seed),
                       work_dir=tmp_path / f"w{i}") for i, seed in enumerate((7, 7, 8))]
    assert runs[0].sha256 == runs[1].sha256 != runs[2].sha256
    assert Path(runs[0].weights_path).read_bytes() == Path(runs[1].weights_path).read_bytes()
    assert runs[0].losses == runs[1].losses
    outputs = []
    for run in runs[:2]:
        pipe = load_base_pipeline(tiny_base)
        apply_adapters(pipe, [("s", run.weights_path, 1.0)])
        outputs.append(images_of(pipe))
    assert np.array_equal(outputs[0], outputs[1])


def test_a_compiled_unet_trains_the_same_adapter_as_the_eager_one(works, tmp_path):
    from safetensors.torch import load_file

    # Two UNet levels instead of the tiny base's three: inductor compiles (and gcc builds) a third fewer
    # kernels, about 160 s instead of 245 s with a cold cache on a slow 2-core CPU.
    torch.manual_seed(0)
    two_level_base = tmp_path / "two-level-base"
    build_pipeline(dataclasses.replace(TINY_CONFIG, unet_channels=(16, 32))).save_pretrained(two_level_base)
    eager, compiled = (
        train_lora(base_path=two_level_base, examples=works, out_dir=tmp_path / f"a-{name}",
                   config=config(steps=6, compile_unet=flag), work_dir=tmp_path / f"w-{name}")
        for name, flag in (("eager", False), ("compiled", True))
    )
    # Compiled kernels may round differently, nothing more: the same steps,
    # the same losses to float tolerance, the same weights. Weights are compared against each tensor's scale,
    # not element by element: Adam divides each element's gradient by that element's own running size, so a
    # rounding difference in a near-zero gradient becomes a whole step (on a Xeon with AMX, one element of 128
    # in a lora_B ended 0.4% apart, 9e-5 at a value of 0.020).
    assert np.allclose(compiled.losses, eager.losses, rtol=1e-3, atol=1e-5)
    eager_weights, compiled_weights = load_file(eager.weights_path), load_file(compiled.weights_path)
    assert eager_weights.keys() == compiled_weights.keys()
    for key, weight in eager_weights.items():
        scale = float(weight.abs().max())
        assert torch.allclose(compiled_weights[key], weight, rtol=0, atol=1e-5 + 1e-2 * scale), key
    base_pipe = load_base_pipeline(two_level_base)
    before = images_of(base_pipe)
    apply_adapters(base_pipe, [("compiled", compiled.weights_path, 1.0)])
    assert not np.array_equal(images_of(base_pipe), before)  # a trained adapter, not its zero start


@pytest.mark.parametrize("targets", sorted(tc.UNET_TARGET_SETS))
def test_alpha_different_from_rank_survives_save_and_load(tiny_base, works, tmp_path, targets):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    cfg = config(rank=4, alpha=16, unet_targets=targets)
    result = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=cfg,
                        work_dir=tmp_path / "work")
    with safe_open(result.weights_path, "pt") as handle:
        metadata = handle.metadata()
        saved_layers = {key.split(".lora_")[0] for key in handle.keys()}
    stored = json.loads(metadata["lora_adapter_metadata"])
    assert stored["unet.lora_alpha"] == 16 and stored["unet.r"] == 4

    # The trained weights in memory (from the final checkpoint), on a fresh base.
    checkpoint = torch.load(tmp_path / "work" / lt.CHECKPOINT_NAME, weights_only=True)
    in_memory = load_base_pipeline(tiny_base)
    in_memory.unet.add_adapter(LoraConfig(r=4, lora_alpha=16, init_lora_weights="gaussian",
                                          target_modules=list(tc.UNET_TARGET_SETS[targets])))
    set_peft_model_state_dict(in_memory.unet, checkpoint["lora"]["unet"])
    assert saved_layers == {"unet." + key.split(".lora_")[0] for key in checkpoint["lora"]["unet"]}
    assert any(layer.endswith("conv1") for layer in saved_layers) == (targets == "full")
    expected = images_of(in_memory)

    reloaded = load_base_pipeline(tiny_base)
    apply_adapters(reloaded, [("s", result.weights_path, 1.0)])
    assert np.array_equal(images_of(reloaded), expected)

    # The same weights saved without the metadata load with alpha = rank: the
    # output differs, so the comparison above could have failed.
    bare = tmp_path / "bare"
    StableDiffusionPipeline.save_lora_weights(
        str(bare), unet_lora_layers=get_peft_model_state_dict(in_memory.unet))
    lossy = load_base_pipeline(tiny_base)
    apply_adapters(lossy, [("s", bare / lt.WEIGHTS_NAME, 1.0)])
    assert not np.allclose(images_of(lossy), expected, atol=1e-4)


class CancelAt(TrainingCallbacks):
    """Asks to stop once step `step` is done (None: never); records the checkpoints and where the run resumed."""

    def __init__(self, step=None):
        self.stop_at, self.seen, self.checkpoints, self.resumed, self.lines = step, 0, [], [], []

    def on_log(self, line):
        self.lines.append(line)

    def on_resume(self, step):
        self.resumed.append(step)

    def on_progress(self, step, total, loss, eta):
        self.seen = step

    def on_checkpoint(self, step):
        self.checkpoints.append(step)

    def should_cancel(self):
        return self.stop_at is not None and self.seen >= self.stop_at


def test_cancel_leaves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny_base, works, tmp_path):
    cfg = config(steps=12, checkpoint_every=5)
    callbacks = CancelAt(7)
    with pytest.raises(TrainingCancelled):
        train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=cfg,
                   work_dir=tmp_path / "work", callbacks=callbacks)
    assert callbacks.checkpoints == [5, 7] and callbacks.resumed == [0]
    # "stopped", not "cancelled": on the platform a retirement stops a run too, and the artist cancelled nothing.
    assert callbacks.lines[-1] == f"stopped at step 7; checkpoint kept in {tmp_path / 'work'}"
    assert not (tmp_path / "adapter").exists()
    checkpoint = torch.load(tmp_path / "work" / lt.CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["step"] == 7 and len(checkpoint["losses"]) == 7

    resuming = CancelAt()
    resumed = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=cfg,
                         work_dir=tmp_path / "work", callbacks=resuming)
    assert resumed.resumed_from_step == 7 and resumed.steps == 12 and len(resumed.losses) == 12
    assert resuming.resumed == [7]

    straight = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "straight", config=cfg,
                          work_dir=tmp_path / "work2")
    assert resumed.losses == straight.losses
    assert resumed.sha256 == straight.sha256

    # A checkpoint of another config is not resumed from, and the callbacks hear so.
    restarting = CancelAt()
    other = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "other", config=config(steps=12, seed=3),
                       work_dir=tmp_path / "work", callbacks=restarting)
    assert other.resumed_from_step == 0 and other.sha256 != straight.sha256
    assert restarting.resumed == [0]


class Payload:
    """Pickles as a call of os.mkdir: what a planted checkpoint could run while it is read."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __reduce__(self):
        return os.mkdir, (self.folder,)


def test_a_checkpoint_that_would_run_code_is_ignored_not_run(tiny_base, works, tmp_path):
    cfg = config(steps=2)
    ran = tmp_path / "the-payload-ran"
    work = tmp_path / "work"
    work.mkdir()
    run_key = lt.planned_run_key(tiny_base, works, cfg, torch.float32)
    torch.save({"run_key": run_key, "step": 1, "payload": Payload(ran)}, work / lt.CHECKPOINT_NAME)
    assert lt.checkpoint_run_key(work) is None and not ran.exists()

    class Recorder(CancelAt):
        def __init__(self):
            super().__init__()
            self.lines = []

        def on_log(self, line):
            self.lines.append(line)

    callbacks = Recorder()
    result = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=cfg, work_dir=work,
                        callbacks=callbacks)
    assert not ran.exists()
    assert result.resumed_from_step == 0 and callbacks.resumed == [0] and result.steps == 2
    assert "ignoring an unreadable checkpoint (UnpicklingError)" in callbacks.lines


class CancelWhileDrawingPreviews(CancelAt):
    """Asks to stop once the preview at `step` has begun, counting the sampling steps it saw."""

    def __init__(self, step):
        super().__init__(step)
        self.checks_after_the_step, self.previews = 0, []

    def on_preview(self, step, images):
        self.previews.append(step)

    def should_cancel(self):
        if self.seen < self.stop_at:
            return False
        self.checks_after_the_step += 1
        return True


def test_a_cancel_is_heard_during_the_previews_and_the_encoding(tiny_base, works, tmp_path):
    from PIL import Image

    cfg = config(steps=12, checkpoint_every=5, preview_every=4)
    callbacks = CancelWhileDrawingPreviews(4)
    with pytest.raises(TrainingCancelled, match="cancelled while drawing previews"):
        train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=cfg,
                   work_dir=tmp_path / "work", callbacks=callbacks)
    assert callbacks.previews == [] and callbacks.checks_after_the_step == 1  # the first sampling step stopped it
    assert torch.load(tmp_path / "work" / lt.CHECKPOINT_NAME, weights_only=True)["step"] == 4

    # Between the encoding's batches: one Stable Diffusion-sized work a batch.
    pipe = load_base_pipeline(tiny_base)
    encoded = watch_vae_encode(pipe)
    with pytest.raises(TrainingCancelled, match="cancelled while encoding the works"):
        lt.encode_images(pipe, [Image.new("RGB", (512, 512))] * 3, "cpu", should_cancel=lambda: len(encoded) == 1)
    assert len(encoded) == 1


# The stages of a run's set-up, in order: none can be interrupted half-way.
SET_UP_STAGES = ["load_base_pipeline", "base_fingerprint", "_data_fingerprint", "load_training_images",
                 "encode_images", "encode_text"]


@pytest.mark.parametrize("cancelled_during", SET_UP_STAGES)
def test_a_cancel_during_the_set_up_is_heard_when_the_stage_ends(cancelled_during, tiny_base, works, tmp_path,
                                                                   monkeypatch):
    """Loading an SD-sized base, fingerprinting it and reading and encoding the works take minutes on a CPU:
    a cancel asked in one stage stops the run before the next, with nothing half-written."""
    stages_begun, asked = [], []
    for name in SET_UP_STAGES:
        def watched(*args, _name=name, _stage=getattr(lt, name), **kwargs):
            stages_begun.append(_name)
            result = _stage(*args, **kwargs)
            if _name == cancelled_during:
                asked.append(True)
            return result
        monkeypatch.setattr(lt, name, watched)

    class CancelWhenAsked(CancelAt):
        def should_cancel(self):
            return bool(asked)

    callbacks = CancelWhenAsked()
    with pytest.raises(TrainingCancelled) as cancelled:
        train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=config(steps=3),
                   work_dir=tmp_path / "work", callbacks=callbacks)
    assert stages_begun[-1] == cancelled_during  # the next stage never began
    assert cancelled.value.checkpoint_step is None and callbacks.seen == 0 and callbacks.checkpoints == []
    assert not (tmp_path / "adapter").exists()
    if cancelled_during == "encode_text":  # the works' cache was complete: kept for the next run, nothing else
        assert [p.name for p in (tmp_path / "work").iterdir()] == ["cache.pt"]
    else:
        assert not (tmp_path / "work").exists()


def test_a_cancel_asked_during_the_compile_is_heard_right_after_the_first_step(tiny_base, works, tmp_path,
                                                                               monkeypatch):
    """The first step of a compiled UNet holds the whole compile (minutes): the cancel waits for it, no longer."""
    callbacks = CancelAt()

    def compile_asking_to_cancel(module):
        def compiled(*args, **kwargs):
            callbacks.stop_at = 0  # asked while the first step compiles
            return module(*args, **kwargs)
        return compiled

    monkeypatch.setattr(torch, "compile", compile_asking_to_cancel)
    with pytest.raises(TrainingCancelled) as cancelled:
        train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter",
                   config=config(steps=4, compile_unet=True), work_dir=tmp_path / "work", callbacks=callbacks)
    assert cancelled.value.checkpoint_step == 1 and callbacks.seen == 1 and callbacks.checkpoints == [1]


def test_the_eta_is_not_thrown_by_slow_first_steps():
    assert lt.remaining_seconds([0.5], 10) is None  # one step says nothing about the rest
    assert lt.remaining_seconds([9.0, 4.0] + [0.15] * 8, 30) == pytest.approx(30 * 0.15)
    assert lt.remaining_seconds([1.0] * 60 + [0.2] * 50, 5) == pytest.approx(5 * 0.2)  # only the last 50 count
    # Preview grids count once one has been timed: on the CPU they are a good part of a run.
    assert lt.remaining_seconds([0.1] * 10, 300, grids_left=3, grid_seconds=5.0) == pytest.approx(30 + 15)
    assert lt.remaining_seconds([0.1] * 10, 300, grids_left=3) == pytest.approx(30)


@pytest.mark.parametrize("steps, every, after_step, grids", [
    (400, 100, 1, 4), (400, 100, 100, 4), (400, 100, 101, 3), (400, 100, 400, 1),
    (6, 4, 4, 2), (6, 4, 5, 1), (6, 4, 6, 1), (6, 0, 1, 0),
])
def test_the_eta_counts_the_preview_grids_still_to_draw(steps, every, after_step, grids):
    cfg = config(steps=steps, preview_every=every)
    assert lt.preview_grids_from(after_step, cfg) == grids
    drawn_from_here = [s for s in range(after_step, steps + 1) if every and (s % every == 0 or s == steps)]
    assert len(drawn_from_here) == grids  # the loop's own rule


def test_the_preview_grid_is_decoded_one_image_at_a_time(tiny_base):
    """Decoding the whole grid at once made the previews a run's memory peak."""
    pipe = lt.load_base_pipeline(tiny_base)
    decoded, decode = [], pipe.vae._decode
    pipe.vae._decode = lambda z, *args, **kwargs: decoded.append(z.shape[0]) or decode(z, *args, **kwargs)
    cfg = config(preview_inference_steps=2)
    images = lt._previews(pipe, cfg, torch.device("cpu"), 32)
    assert len(images) == len(cfg.preview_prompts) * len(cfg.preview_seeds) == len(decoded)
    assert set(decoded) == {1}
    assert pipe.vae.use_slicing is False  # the pipeline's own setting is left as it was


def test_an_fp16_base_trains_with_loss_scaling_and_resumes_exactly(tiny_base, works, tmp_path):
    """fp16 gradients underflow without loss scaling; the scaler's state is
    part of the checkpoint, so a resumed fp16 run ends with the same adapter."""
    cfg = config(steps=8, checkpoint_every=4)
    fp16 = dict(base_path=tiny_base, examples=works, config=cfg, device="cpu", dtype=torch.float16)
    with pytest.raises(TrainingCancelled):
        train_lora(out_dir=tmp_path / "adapter", work_dir=tmp_path / "work", callbacks=CancelAt(5), **fp16)
    checkpoint = torch.load(tmp_path / "work" / lt.CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["step"] == 5 and checkpoint["scaler"]["scale"] > 1
    resumed = train_lora(out_dir=tmp_path / "adapter", work_dir=tmp_path / "work", **fp16)
    straight = train_lora(out_dir=tmp_path / "straight", work_dir=tmp_path / "work2", **fp16)
    assert resumed.resumed_from_step == 5 and resumed.sha256 == straight.sha256
    assert all(np.isfinite(resumed.losses))
    final_states = [torch.load(tmp_path / work / lt.CHECKPOINT_NAME, weights_only=True)["scaler"]
                    for work in ("work", "work2")]
    assert final_states[0] == final_states[1]  # its scale and its count of steps since the last overflow
    with safe_open(resumed.weights_path, "pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float32}
    # fp32 (and bf16) keep fp32's range: no scaling, nothing to keep.
    train_lora(base_path=tiny_base, examples=works, config=cfg, out_dir=tmp_path / "fp32", work_dir=tmp_path / "work3")
    assert torch.load(tmp_path / "work3" / lt.CHECKPOINT_NAME, weights_only=True)["scaler"] == {}


def test_every_kind_of_checkpoint_resumes_to_the_same_adapter(tiny_base, works, tmp_path):
    """A text-encoder LoRA, the fp16 grad scaler, mirrored works and caption dropout all in one checkpoint, read
    back with weights_only (tensors and plain data only)."""
    cfg = config(steps=6, checkpoint_every=3, train_text_encoder=True, flip=True, caption_dropout=0.3)
    run = dict(base_path=tiny_base, examples=works, config=cfg, device="cpu", dtype=torch.float16)
    with pytest.raises(TrainingCancelled):
        train_lora(out_dir=tmp_path / "adapter", work_dir=tmp_path / "work", callbacks=CancelAt(4), **run)
    checkpoint = torch.load(tmp_path / "work" / lt.CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["scaler"] and set(checkpoint["lora"]) == {"unet", "text_encoder"}
    resuming = CancelAt()
    resumed = train_lora(out_dir=tmp_path / "adapter", work_dir=tmp_path / "work", callbacks=resuming, **run)
    straight = train_lora(out_dir=tmp_path / "straight", work_dir=tmp_path / "work2", **run)
    assert resuming.resumed == [4] and resumed.resumed_from_step == 4
    assert resumed.losses == straight.losses and resumed.sha256 == straight.sha256


def test_a_failed_save_leaves_no_partial_adapter(tiny_base, works, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    tmp_path = tmp_path / "own"  # a folder this test alone writes in

    out = tmp_path / "adapter"
    good = train_lora(base_path=tiny_base, examples=works, out_dir=out, config=config(steps=3), work_dir=tmp_path / "w")
    good_bytes = Path(good.weights_path).read_bytes()

    def broken_save(save_directory, **kwargs):
        Path(save_directory, lt.WEIGHTS_NAME).write_bytes(b"half an adapter")
        raise OSError("disk full")

    monkeypatch.setattr(StableDiffusionPipeline, "save_lora_weights", staticmethod(broken_save))
    with pytest.raises(OSError, match="disk full"):
        train_lora(base_path=tiny_base, examples=works, out_dir=out, config=config(steps=4), work_dir=tmp_path / "w2")
    assert Path(good.weights_path).read_bytes() == good_bytes  # the previous adapter is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "w", "w2"]  # no temporary folder left
    with pytest.raises(OSError):
        train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "fresh", config=config(steps=4),
                   work_dir=tmp_path / "w3")
    assert not (tmp_path / "fresh").exists()


KILLED_WHILE_SAVING = """
import os, sys
from generation.ml import lora_training as lt

pipe = lt.load_base_pipeline(sys.argv[1])
cfg = lt.LoraTrainingConfig(rank=4, alpha=4, learning_rate=1e-3, steps=1, batch_size=1)
lt.add_lora(pipe, cfg)
lt.save_adapter(pipe, cfg, sys.argv[2])
check = lt.check_adapter_folder
# Killed once the new adapter is written and the earlier one moved aside, before the new one takes its place.
lt.check_adapter_folder = lambda folder, named=None: os._exit(9) if named is not None else check(folder)
lt.save_adapter(pipe, cfg, sys.argv[2])
"""


def test_a_save_cleans_what_a_save_killed_half_way_left_beside_the_adapter(tiny_base, tmp_path):
    parent = tmp_path / "adapters"
    out = parent / "v3"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(tiny_base), str(out)],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    left = sorted(p.name for p in parent.iterdir())
    assert len(left) == 2 and left[0].startswith(".v3.") and left[0].endswith(".tmp") and ".v3.old-" in left[1], left
    # Kept: the same leftover of a process still running (a save going on now), one holding something else than
    # an adapter, and names the loop does not make.
    running = parent / left[1].replace(f"-{killed_pid(left[1])}-", f"-{os.getpid()}-")
    shutil.copytree(parent / left[1], running)
    holding_notes = parent / (left[1] + "7")
    shutil.copytree(parent / left[1], holding_notes)
    (holding_notes / "notes.txt").write_text("mine")
    for other in (".v3.notes.tmp", ".v3.old-notes", ".v4.old-1-2"):
        (parent / other).mkdir()

    pipe = load_base_pipeline(tiny_base)
    cfg = config()
    lt.add_lora(pipe, cfg)
    lt.save_adapter(pipe, cfg, out)
    assert sorted(p.name for p in parent.iterdir()) == sorted(
        ["v3", running.name, holding_notes.name, ".v3.notes.tmp", ".v3.old-notes", ".v4.old-1-2"])
    assert [p.name for p in out.iterdir()] == [lt.WEIGHTS_NAME]


def killed_pid(name: str) -> int:
    """The process id in the name of a folder that save_adapter moved aside: the last number but one."""
    return int(re.findall(r"\d+", name)[-2])


def test_a_long_preview_prompt_is_said_once_not_logged_with_every_preview_grid(tiny_base, works, tmp_path, capfd):
    logs = []

    class Recorder(TrainingCallbacks):
        def on_log(self, line):
            logs.append(line)

    long_prompt = "a red circle" + " and a blue star" * 300
    train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", work_dir=tmp_path / "work",
               config=config(steps=2, preview_every=1, preview_inference_steps=1, preview_prompts=(long_prompt,)),
               callbacks=Recorder())
    err = capfd.readouterr().err  # diffusers' log handler holds the stderr of its import: read the descriptor
    assert "truncated" not in err and "blue star" not in err
    notes = [line for line in logs if line.startswith("preview prompts: ")]
    assert len(notes) == 1 and "1 of 1 captions are longer than the text encoder's" in notes[0]


def test_loading_an_adapter_without_a_text_encoder_lora_warns_of_nothing(tiny_base, works, tmp_path):
    """diffusers warned at every load that the text encoder had no LoRA keys: none was trained, as asked."""
    result = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "adapter", config=config(steps=2),
                        work_dir=tmp_path / "work")
    pipe = load_base_pipeline(tiny_base)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    try:
        apply_adapters(pipe, [("style", result.weights_path, 1.0)])
    finally:
        diffusers_logger.removeHandler(handler)
    assert list(lt.loaded_adapters(pipe)) == ["style"]
    assert [record.getMessage()[:60] for record in records if record.levelno >= logging.WARNING] == []


def test_mixing_adapters_and_reloading_by_name(tiny_base, works, tmp_path):
    a = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "a", config=config(seed=1, steps=8),
                   work_dir=tmp_path / "wa")
    b = train_lora(base_path=tiny_base, examples=works[:6], out_dir=tmp_path / "b", config=config(seed=2, steps=8),
                   work_dir=tmp_path / "wb")
    pipe = load_base_pipeline(tiny_base)
    apply_adapters(pipe, [("a", a.weights_path, 1.0)])
    only_a = images_of(pipe)
    apply_adapters(pipe, [("a", a.weights_path, 0.5), ("b", b.weights_path, 0.5)])
    mixed = images_of(pipe)
    assert sorted(lt.loaded_adapters(pipe)) == ["a", "b"]
    assert not np.array_equal(mixed, only_a)
    apply_adapters(pipe, [("a", a.weights_path, 1.0)])
    assert np.array_equal(images_of(pipe), only_a)
    lt.remove_adapter(pipe, "a")
    assert sorted(lt.loaded_adapters(pipe)) == ["b"]


def test_config_round_trip_presets_and_validation(tiny_base):
    cfg = tc.preset_config("standard", "builtin", steps=10, seed=4)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert LoraTrainingConfig.from_dict(data) == cfg and cfg.steps == 10 and cfg.seed == 4
    for kind in ("builtin", "sd"):
        assert set(tc.PRESETS[kind]) == {"quick", "standard", "thorough"}
    assert tc.PRESETS["builtin"]["quick"].steps < tc.PRESETS["builtin"]["standard"].steps < tc.PRESETS["builtin"]["thorough"].steps
    assert lt.base_kind_of(tiny_base) == "builtin"
    with pytest.raises(ValueError, match="unknown preset"):
        tc.preset_config("huge")
    with pytest.raises(ValueError, match="rank must be at least 1"):
        LoraTrainingConfig(rank=0, alpha=1, learning_rate=1e-3, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="unknown training setting"):
        LoraTrainingConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unet_targets must be one of attention, full"):
        LoraTrainingConfig.from_dict({**cfg.to_dict(), "unet_targets": "everything"})
    for resolution in (4, 30, 500):  # pipelines draw at multiples of 8 only: refused before training, not after
        with pytest.raises(ValueError, match=rf"resolution must be a multiple of 8 px, at least 8 \(got {resolution}\)"):
            tc.preset_config("quick", resolution=resolution)
    assert tc.preset_config("quick", resolution=40).resolution == 40


@pytest.mark.parametrize("overrides,message", [
    ({"steps": 1.5}, "steps must be a whole number (got 1.5)"),
    ({"flip": 1}, "flip must be true or false (got 1)"),
    ({"learning_rate": "3e-4"}, "learning_rate must be a number (got '3e-4')"),
    ({"snr_gamma": "5"}, "snr_gamma must be a number or null (got '5')"),
    ({"preview_seeds": [0, "1"]}, "preview_seeds must be a list of whole numbers (got [0, '1'])"),
    ({"lr_scheduler": 3}, "lr_scheduler must be text (got 3)"),
])
def test_settings_of_the_wrong_type_are_refused_in_one_sentence(overrides, message):
    # JSON gives these (TRAINING_PRESET_OVERRIDES, a stored version's hyperparameters); a "600" that
    # compared as text, or a 1 taken for true, would train something else than asked.
    with pytest.raises(ValueError) as raised:
        tc.preset_config("standard", **overrides)
    assert str(raised.value) == message


@pytest.mark.parametrize("overrides,message", [
    ({"lr_scheduler": "cosin"}, "lr_scheduler must be one of constant, constant_with_warmup, linear, cosine"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number (got nan)"),
    ({"learning_rate": float("inf")}, "learning_rate must be a finite number (got inf)"),
    ({"max_grad_norm": -1}, "max_grad_norm must be 0 or more"),
    ({"lr_warmup_steps": -5}, "lr_warmup_steps must be 0 or more"),
    ({"snr_gamma": 0}, "snr_gamma must be positive, or null for the plain loss"),
    ({"preview_inference_steps": 0}, "preview_inference_steps must be at least 1"),
    ({"preview_prompts": []}, "preview_prompts and preview_seeds must not be empty while preview_every is not 0"),
    ({"preview_seeds": [0, 2**64]}, "preview_seeds must be from -2**63 to 2**64 - 1 (got 18446744073709551616)"),
    ({"preview_seeds": [-2**63 - 1, 1]}, "preview_seeds must be from -2**63 to 2**64 - 1 (got -9223372036854775809)"),
])
def test_settings_out_of_range_are_refused_before_training(overrides, message):
    # Each of these passed the config once and failed (or trained wrongly) only inside the loop.
    with pytest.raises(ValueError, match=re.escape(message)):
        tc.preset_config("standard", **overrides)


def test_every_allowed_lr_schedule_is_one_diffusers_builds():
    from diffusers.optimization import get_scheduler

    for name in tc.LR_SCHEDULERS:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        get_scheduler(name, optimizer=optimizer, num_warmup_steps=2, num_training_steps=10).step()


def test_a_null_in_the_preset_overrides_sets_the_setting_to_none():
    assert tc.PRESETS["sd"]["standard"].snr_gamma == 5.0
    assert tc.configured_preset("standard", "sd", {"standard": {"snr_gamma": None}}).snr_gamma is None
    assert tc.configured_preset("standard", "sd", {"quick": {"snr_gamma": None}}).snr_gamma == 5.0


def test_preset_overrides_are_checked_over_every_kind_of_base():
    assert tc.check_preset_overrides({"standard": {"steps": 600}}) == {"standard": {"steps": 600}}
    for overrides, message in [
        ({"standard": {"batch_size": 0}}, "'standard': batch_size must be at least 1"),
        ({"thorough": {"lr_warmup_steps": 1.0}}, "'thorough': lr_warmup_steps must be a whole number (got 1.0)"),
        ({"quick": 600}, "the settings of 'quick' must be a JSON object"),
        ({"standard": {"preview_seeds": [2**64]}}, "'standard': preview_seeds must be from -2**63 to 2**64 - 1"),
        ({"thorough": {"steps": 10**20}}, "'thorough': steps must be at most 1000000 (got 100000000000000000000)"),
        ({"huge": {}}, "unknown preset 'huge'; choose from quick, standard, thorough"),
        ("600", "must be a JSON object of presets and their settings"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            tc.check_preset_overrides(overrides)


def test_the_training_settings_load_without_torch():
    # Every process checks TRAINING_PRESET_OVERRIDES with them as its settings load, the web's included.
    code = "import sys, generation.ml.training_config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0


def test_importing_the_pipeline_code_prints_nothing():
    """transformers printed two lines about torchvision at diffusers' import, ahead of every command's own output."""
    done = subprocess.run([sys.executable, "-c", "import generation.ml.pipeline"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0 and done.stderr == ""


# ---------------------------------------------------------------- CLI


def test_cli_trains_and_prints_json(tiny_base, works, tmp_path, capsys):
    data = Path(works[0].image_path).parent
    summary = cli_main(["--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "adapter"),
                        "--preset", "quick", "--steps", "6", "--rank", "4", "--seed", "3", "--threads", "1",
                        "--targets", "full", "--flip"])
    out, err = capsys.readouterr()
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(summary))
    assert printed["steps"] == 6 and printed["config"]["rank"] == 4 and printed["config"]["seed"] == 3
    assert printed["config"]["unet_targets"] == "full" and printed["config"]["flip"] is True
    assert "(and their mirror images)" in err
    with safe_open(printed["weights_path"], "pt") as handle:
        assert any(".conv1.lora_A" in key for key in handle.keys())
    assert printed["sha256"] == lt.sha256_file(printed["weights_path"])
    assert "step 6/6" in err and "1 CPU thread(s)" in err
    assert printed["device"] == "cpu" and printed["dtype"] == "float32" and printed["peak_memory_mb"] > 0
    assert 0 < printed["median_step_seconds"] <= printed["train_seconds"] / 3  # the middle of six steps


def test_cli_holds_its_work_folder_and_clears_what_a_killed_run_half_wrote(tiny_base, works, tmp_path, capsys):
    from generation.ml.train_lora import work_folder_held

    data, work = Path(works[0].image_path).parent, tmp_path / "work"
    command = ["--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "adapter"), "--work", str(work),
               "--steps", "1", "--rank", "4", "--threads", "1"]
    with work_folder_held(work):  # another run on the same folder
        with pytest.raises(SystemExit) as exit_info:
            cli_main(command)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: work folder {work} is in use by another train_lora run (process {os.getpid()}); wait for it, or "
        "give another --work")
    assert not work.exists()  # the folder held only the lock: gone with it
    (work / "notes").mkdir(parents=True)
    leftovers = [work / ".checkpoint.pt.k9x2.tmp", work / ".cache.pt.a1b2.tmp"]
    for leftover in leftovers:  # what kill -9 during a save leaves
        leftover.write_bytes(b"half a checkpoint")
    others = [work / ".editor-swap.tmp", work / "notes" / ".checkpoint.pt.k9x2.tmp"]  # not this run's to remove
    for other in others:
        other.write_bytes(b"someone else's")
    assert cli_main(command)["steps"] == 1
    assert not any(leftover.exists() for leftover in leftovers) and all(other.exists() for other in others)
    with work_folder_held(work):  # released when the run ended
        pass


def test_cli_trains_unlocked_where_the_work_folder_cannot_be_locked(tiny_base, works, tmp_path, capsys, monkeypatch):
    import fcntl

    def unsupported(handle, operation):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(fcntl, "flock", unsupported)  # a file system without flock
    work = tmp_path / "work"
    summary = cli_main(["--base", str(tiny_base), "--data", str(Path(works[0].image_path).parent), "--out",
                        str(tmp_path / "adapter"), "--work", str(work), "--steps", "1", "--rank", "4", "--threads", "1"])
    assert summary["steps"] == 1
    assert (f"note: cannot lock the work folder {work} (Operation not supported); going on without: another run on "
            "it would overwrite this one's checkpoint") in capsys.readouterr().err


def test_a_lock_file_removed_while_being_taken_is_taken_again(tmp_path, monkeypatch):
    """The run before removes its lock file as it leaves; a run that opened that file meanwhile locks a new one."""
    import fcntl

    from generation.ml import train_lora as cli

    work = tmp_path / "work"
    calls = []
    real_flock = fcntl.flock

    def flock_after_the_file_went(handle, operation):
        if not calls:  # as if the run before unlinked it between our open and our flock
            (work / ".lock").unlink()
        calls.append(handle.fileno())
        return real_flock(handle, operation)

    monkeypatch.setattr(cli.fcntl, "flock", flock_after_the_file_went)
    with cli.work_folder_held(work):
        assert len(calls) == 2 and (work / ".lock").read_text() == f"{os.getpid()}\n"


def test_cli_names_the_subfolders_it_does_not_read(tiny_base, works, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(Path(works[0].image_path).parent, data)
    (data / "older").mkdir()
    scenes.illustration(1).image.save(data / "older" / "a.png")
    summary = cli_main(["--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "adapter"),
                        "--steps", "1", "--rank", "4", "--threads", "1"])
    assert summary["steps"] == 1
    assert (f"note: training on the {len(works)} works directly in --data; works in subfolders are not read (older)"
            in capsys.readouterr().err)


def test_cli_trains_in_the_precision_asked_for(tiny_base, works, tmp_path, capsys):
    data = Path(works[0].image_path).parent
    summary = cli_main(["--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "adapter"),
                        "--preset", "quick", "--steps", "2", "--rank", "4", "--threads", "1", "--dtype", "bf16"])
    assert summary["dtype"] == "bfloat16" and summary["steps"] == 2
    assert "(bfloat16, 1 CPU thread(s))" in capsys.readouterr().err
    with safe_open(summary["weights_path"], "pt") as handle:  # the LoRA trains and saves in fp32 over a bf16 base
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float32}


@pytest.mark.parametrize("case, message", [
    ("missing", "data folder not found"),
    ("empty", "no images in"),
    ("only-subfolders", "(expected .png, .jpg or other image files with .txt captions); works in subfolders are not "
                        "read (set-1, set-2)"),
    ("uncaptioned", "1 image(s) without a .txt caption: b.png"),
    ("latin-1-caption", "caption b.txt is not UTF-8 text (byte 0xe9 at offset 3)"),
    ("bad-base", "not a diffusers model folder"),
    ("bad-dtype", "invalid choice: 'fp8'"),
    ("bad-device", "--device: Invalid device string: 'cuda:x'"),
    ("work-is-a-file", "(--work, default <out>.work) exists and is not a folder"),
    ("work-inside-out", "is inside the output folder"),
])
def test_cli_errors_are_one_line(case, message, tiny_base, tmp_path, capsys):
    data = tmp_path / "data"
    base = tiny_base
    if case != "missing":
        data.mkdir()
    if case == "only-subfolders":
        for name in ("set-1", "set-2"):
            (data / name).mkdir()
            scenes.illustration(1).image.save(data / name / "a.png")
            (data / name / "a.txt").write_text("a red star")
    if case in ("uncaptioned", "latin-1-caption", "bad-base", "bad-device", "work-is-a-file", "work-inside-out"):
        scenes.illustration(1).image.save(data / "a.png")
        (data / "a.txt").write_text("a red star")
        scenes.illustration(2).image.save(data / "b.png")
        if case in ("bad-base", "bad-device", "work-is-a-file", "work-inside-out"):
            (data / "b.txt").write_text("a blue moon")
        if case == "latin-1-caption":
            (data / "b.txt").write_bytes("caf\xe9 moon".encode("latin-1"))
        if case == "bad-base":
            base = tmp_path / "not-a-model"
            base.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--base", str(base), "--data", str(data), "--out", str(tmp_path / "adapter")]
                 + {"bad-dtype": ["--dtype", "fp8"], "bad-device": ["--device", "cuda:x"],
                    "work-is-a-file": ["--work", str(data / "a.txt")],
                    "work-inside-out": ["--work", str(tmp_path / "adapter" / "work")]}.get(case, []))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("existing", ["file", "folder-with-other-files", "current-folder", "empty-current-folder"])
def test_cli_never_replaces_a_folder_or_file_that_is_not_an_adapter(existing, tiny_base, works, tmp_path, capsys,
                                                                    monkeypatch):
    data = Path(works[0].image_path).parent
    out = tmp_path / "out"
    if existing == "file":
        out.write_text("notes")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("notes")
    if existing.endswith("current-folder"):
        monkeypatch.chdir(out)
        if existing == "empty-current-folder":  # saving would still move the folder the shell stands in
            (out / "notes.txt").unlink()
        out = Path(".")
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--base", str(tiny_base), "--data", str(data), "--out", str(out), "--steps", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m generation.ml.train_lora: error: --out: ")
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()) == before


def test_a_file_that_arrives_in_the_output_folder_during_training_is_kept(tiny_base, works, tmp_path):
    out = tmp_path / "adapter"

    class DropsAFile(TrainingCallbacks):
        def on_progress(self, step, total, loss, eta_seconds):
            if step == 2:
                out.mkdir()
                (out / "readme.md").write_text("mine")

    named = re.escape(f"{out.resolve()} holds files that are not an adapter (readme.md)")
    with pytest.raises(lt.AdapterFolderError, match=named):
        train_lora(base_path=tiny_base, examples=works[:4], out_dir=out, config=config(steps=3),
                   work_dir=tmp_path / "work", callbacks=DropsAFile())
    assert [p.name for p in out.iterdir()] == ["readme.md"] and (out / "readme.md").read_text() == "mine"
    # A training that failed while saving resumes at its last step and only saves.
    (out / "readme.md").unlink()
    resumed = train_lora(base_path=tiny_base, examples=works[:4], out_dir=out, config=config(steps=3),
                         work_dir=tmp_path / "work")
    assert resumed.resumed_from_step == 3 and resumed.steps == 3


@pytest.mark.parametrize("dtype, advice", [
    (torch.float32, "lower the learning rate (it was 1000)"),
    (torch.float16, "lower the learning rate (it was 1000), or train in bf16 or fp32 (--dtype)"),
])
def test_a_loss_that_is_not_finite_stops_the_run_and_saves_nothing(dtype, advice, tiny_base, works, tmp_path):
    with pytest.raises(lt.TrainingDiverged, match=r"training diverged: the loss became (nan|inf) at step \d+; ") as info:
        train_lora(base_path=tiny_base, examples=works[:4], out_dir=tmp_path / "adapter", device="cpu", dtype=dtype,
                   config=config(steps=10, learning_rate=1000.0), work_dir=tmp_path / "work")
    assert str(info.value).endswith(advice)
    assert not (tmp_path / "adapter").exists()


def test_weights_that_are_not_finite_are_never_saved(tiny_base, tmp_path):
    pipe = load_base_pipeline(tiny_base)
    cfg = config()
    params = lt.add_lora(pipe, cfg)
    with torch.no_grad():
        params[-1].fill_(float("inf"))  # as a last step that blew up would leave it
    with pytest.raises(lt.TrainingDiverged, match=r"training diverged: 1 LoRA tensor\(s\) not finite, the first .*lora_B\.weight; lower the"):
        lt.save_adapter(pipe, cfg, tmp_path / "out" / "adapter")
    assert list((tmp_path / "out").iterdir()) == []  # neither the adapter nor its temporary folder


def test_an_adapter_folder_may_hold_what_a_desktop_leaves_in_it(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / lt.WEIGHTS_NAME).write_bytes(b"earlier adapter")
    (folder / ".DS_Store").write_bytes(b"finder")
    lt.check_adapter_folder(folder)  # accepted
    (folder / ".git").mkdir()
    with pytest.raises(lt.AdapterFolderError, match=r"not an adapter \(\.git\)"):
        lt.check_adapter_folder(folder)


def test_captions_are_read_as_utf8_with_or_without_a_byte_order_mark(tmp_path):
    scenes.illustration(1).image.save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("\ufeffa red star, caf\u00e9\n".encode("utf-8"))
    scenes.illustration(2).image.save(tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("a  blue\n moon", encoding="utf-8")
    assert [example.caption for example in read_data_folder(tmp_path)] == ["a red star, caf\u00e9", "a blue moon"]
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfab\xe9")  # the offset counts the byte-order mark
    with pytest.raises(DataFolderError, match=r"caption b.txt is not UTF-8 text \(byte 0xe9 at offset 5\)"):
        read_data_folder(tmp_path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_captions_in_utf16_with_a_byte_order_mark_are_read(tmp_path, encoding):
    scenes.illustration(1).image.save(tmp_path / "a.png")
    mark = {"utf-16": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}[encoding]
    (tmp_path / "a.txt").write_bytes(mark + "a red star, caf\u00e9 \U0001f338\r\n".encode(encoding))  # Notepad's "Unicode"
    assert [example.caption for example in read_data_folder(tmp_path)] == ["a red star, caf\u00e9 \U0001f338"]


@pytest.mark.parametrize(("data", "problem"), [
    ("a red star".encode("utf-16-le"), r"is not UTF-8 text \(byte 0x00 at offset 1; a NUL"),  # no byte-order mark
    (b"\xef\xbb\xbfa\x00b", r"is not UTF-8 text \(byte 0x00 at offset 4; a NUL"),
    (codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"c", r"is not UTF-16 text \(byte 0x63 at offset 6\)"),
    (codecs.BOM_UTF16_LE + b"\x00\xd8a\x00", r"is not UTF-16 text \(byte 0x00 at offset 2\)"),  # half a pair
    (codecs.BOM_UTF32_LE + "ab".encode("utf-32-le"), r"is not UTF-16 text \(byte 0x00 at offset 2; a NUL"),
])
def test_captions_that_are_not_text_are_refused_with_the_byte(tmp_path, data, problem):
    scenes.illustration(1).image.save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes(data)
    with pytest.raises(DataFolderError, match=r"caption a.txt " + problem):
        read_data_folder(tmp_path)


def test_text_encoder_lora_is_saved_and_used(tiny_base, works, tmp_path):
    plain = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "unet-only", config=config(),
                       work_dir=tmp_path / "w1")
    both = train_lora(base_path=tiny_base, examples=works, out_dir=tmp_path / "both",
                      config=config(train_text_encoder=True), work_dir=tmp_path / "w2")
    with safe_open(both.weights_path, "pt") as handle:
        keys = list(handle.keys())
        stored = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    assert stored["text_encoder.lora_alpha"] == 4
    outputs, reports, logged = [], [], logging.Handler()
    logged.emit = lambda record: reports.append(record.getMessage())
    logging.getLogger("transformers").addHandler(logged)
    try:
        for run in (plain, both):
            pipe = load_base_pipeline(tiny_base)
            apply_adapters(pipe, [("s", run.weights_path, 1.0)])
            outputs.append(images_of(pipe))
    finally:
        logging.getLogger("transformers").removeHandler(logged)
    assert not np.array_equal(outputs[0], outputs[1])
    # transformers would report each of the text encoder's base weights as missing, which none is
    assert not [report for report in reports if "LOAD REPORT" in report]


# ---------------------------------------------------------------- bad input: one line, nothing lost


def deny(monkeypatch, *paths, reading: bool = True) -> None:
    """What `chmod` takes away from a user who is not root (the tests may run as root, whom permissions do not
    stop): with `reading`, opening or listing these paths fails with EACCES; either way `os.access` says no."""
    import builtins
    import errno
    import io
    import os

    denied = {os.path.abspath(p) for p in paths}

    def is_denied(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)) in denied

    def guarded(real):
        def call(path=".", *args, **kwargs):
            if is_denied(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real(path, *args, **kwargs)
        return call

    if reading:
        for module, name in ((builtins, "open"), (io, "open"), (os, "listdir"), (os, "scandir")):
            monkeypatch.setattr(module, name, guarded(getattr(module, name)))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if is_denied(path) else real_access(path, mode, **kw))


def refuse_loading(monkeypatch) -> None:
    """A bad argument must be refused before the base model loads (minutes for an SD-sized one)."""
    def load(*args, **kwargs):
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr(lt, "load_base_pipeline", load)


def cli_error(capsys, arguments) -> str:
    """The last stderr line of a CLI run that must exit with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(arguments)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def data_folder(works, tmp_path) -> Path:
    """Three of the works with their captions, in a folder this test may damage."""
    import shutil

    folder = tmp_path / "data"
    folder.mkdir()
    for example in works[:3]:
        shutil.copy(example.image_path, folder)
        shutil.copy(Path(example.image_path).with_suffix(".txt"), folder)
    return folder


@pytest.mark.parametrize("kind", ["I;16", "F"])
def test_deep_grey_and_float_images_load_as_grey_not_white_or_black(kind, tmp_path):
    """Pillow's own RGB conversion clips 16-bit values to white and 0-1 floats to black."""
    from PIL import Image

    from generation.ml.images import to_rgb
    from licensing import validation

    assert validation.to_rgb is to_rgb  # the upload gate and the loaders share one conversion
    if kind == "I;16":
        pixels = np.full((64, 64), 32768, dtype=np.uint16)
        pixels[16:48, 16:48] = 8000
        path = tmp_path / "deep.png"
    else:
        pixels = np.full((64, 64), 0.5, dtype=np.float32)
        pixels[16:48, 16:48] = 0.125
        path = tmp_path / "float.tif"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode == kind
    loaded = np.asarray(lt.load_training_image(path, 32), dtype=int)
    assert loaded.shape == (32, 32, 3) and (loaded[..., 0] == loaded[..., 2]).all()  # grey
    assert abs(loaded[1, 1, 0] - 128) <= 2 and abs(loaded[16, 16, 0] - 32) <= 2  # the darker square is there


def test_a_saved_adapter_is_readable_by_other_users(tiny_base, tmp_path):
    """The web server may run as another user: the folder is 0755 and the weights 0644 (safetensors writes 0600)."""
    import os
    import stat

    pipe = load_base_pipeline(tiny_base)
    cfg = config()
    lt.add_lora(pipe, cfg)
    weights, _ = lt.save_adapter(pipe, cfg, tmp_path / "adapter")
    assert stat.S_IMODE(os.stat(weights).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "adapter").st_mode) == 0o755


def test_a_caption_without_its_image_is_an_error_naming_it(tmp_path):
    import os

    scenes.illustration(1).image.save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red star")
    (tmp_path / "b.txt").write_text("a blue moon")  # its image was never copied
    (tmp_path / "notes.md").write_text("not a caption")  # other files are no business of the data folder
    with pytest.raises(DataFolderError, match=r"^1 caption\(s\) without an image: b.txt$"):
        read_data_folder(tmp_path)
    (tmp_path / "b.txt").unlink()
    os.symlink(tmp_path / "gone.png", tmp_path / "c.png")
    (tmp_path / "c.txt").write_text("a green tree")
    with pytest.raises(DataFolderError, match=r"without an image: c.txt \(c.png is a broken link or not a file\)"):
        read_data_folder(tmp_path)


def test_a_caption_whose_image_is_not_read_or_named_image_png_txt_says_why(tmp_path):
    scenes.illustration(1).image.save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red star")
    (tmp_path / "b.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "b.txt").write_text("a blue moon")
    with pytest.raises(DataFolderError, match=r"^1 caption\(s\) without an image: b.txt \(b.svg is not an image type "
                                              r"this tool reads; export it as PNG or JPEG\)$"):
        read_data_folder(tmp_path)
    (tmp_path / "b.svg").unlink()
    (tmp_path / "b.txt").unlink()
    (tmp_path / "b").mkdir()  # a folder of that name is no image the artist meant: no hint
    (tmp_path / "b.txt").write_text("a blue moon")
    with pytest.raises(DataFolderError, match=r"^1 caption\(s\) without an image: b.txt$"):
        read_data_folder(tmp_path)
    (tmp_path / "b.txt").unlink()
    (tmp_path / "a.txt").rename(tmp_path / "a.png.txt")
    with pytest.raises(DataFolderError, match=r"^1 image\(s\) without a .txt caption: a.png \(found a.png.txt: name it "
                                              r"a.txt\)$"):
        read_data_folder(tmp_path)
    (tmp_path / "a.png.txt").rename(tmp_path / "A.txt")  # a file system that keeps case tells these apart
    with pytest.raises(DataFolderError, match=r"^1 image\(s\) without a .txt caption: a.png \(found A.txt: the names "
                                              r"differ in case; name it a.txt\)$"):
        read_data_folder(tmp_path)
    (tmp_path / "A.txt").rename(tmp_path / "a.png.txt")
    (tmp_path / "a.txt").write_text("a red star")  # both: which one is meant cannot be told
    with pytest.raises(DataFolderError, match=r"^1 caption\(s\) without an image: a.png.txt \(a.png already has a.txt; "
                                              r"keep one\)$"):
        read_data_folder(tmp_path)


def test_two_images_of_one_name_are_refused_not_trained_twice_under_one_caption(tmp_path):
    scenes.illustration(1).image.save(tmp_path / "a.png")
    scenes.illustration(1).image.save(tmp_path / "a.jpg")  # the same work, exported twice
    (tmp_path / "a.txt").write_text("a red star")
    with pytest.raises(DataFolderError, match=r"^1 name\(s\) used by more than one image, which would share one "
                                              r"caption: a.jpg and a.png; keep one of each$"):
        read_data_folder(tmp_path)


@pytest.mark.parametrize("case, message", [
    ("data-is-a-file", "--data: data folder {tmp}/afile is not a folder"),
    ("orphan-caption", "--data: 1 caption(s) without an image: z.txt"),
    ("unreadable-data", "--data: cannot read {data}: Permission denied"),
    ("unreadable-caption", "--data: cannot read caption {caption}: Permission denied"),
    ("unreadable-image", "--data: cannot read image {image}: Permission denied"),
    ("unreadable-out", "--out: cannot read {out}: Permission denied"),
    ("out-parent-not-writable", "--out: {tmp}/locked is not writable"),
    ("out-parent-is-a-file", "--out: {tmp}/afile is not a folder"),
    ("work-not-writable", "--work: {tmp}/locked is not writable"),
    ("work-inside-data", "--work {data}/run is inside --data {data}: its cache and checkpoints would sit among the works"),
    ("out-inside-data", "the work folder {data}/adapter.work (default <out>.work) is inside --data {data}: "),
    ("seed-too-large", "--seed: 18446744073709551616 is not a seed from -2**63 to 2**64 - 1"),
    ("seed-not-a-number", "--seed: 'one' is not a whole number"),
    ("cuda-missing", "--device cuda: CUDA is not available"),
    ("cuda-index", "--device cuda:7: there is no CUDA device 7 (1 found)"),
])
def test_cli_refuses_bad_input_in_one_line_before_loading(case, message, tiny_base, data_folder, tmp_path, capsys,
                                                          monkeypatch):
    data, out, extra, denied = data_folder, tmp_path / "adapter", [], []
    image = sorted(data.glob("*.png"))[0]
    (tmp_path / "afile").write_text("notes")
    if case == "data-is-a-file":
        data = tmp_path / "afile"
    elif case == "orphan-caption":
        (data / "z.txt").write_text("a lost caption")
    elif case == "unreadable-data":
        denied = [data]
    elif case == "unreadable-caption":
        denied = [image.with_suffix(".txt")]
    elif case == "unreadable-image":
        denied = [image]
    elif case == "unreadable-out":
        out.mkdir()
        denied = [out]
    elif case in ("out-parent-not-writable", "work-not-writable"):
        (tmp_path / "locked").mkdir()
        if case == "out-parent-not-writable":
            out = tmp_path / "locked" / "adapter"
        else:
            extra = ["--work", str(tmp_path / "locked" / "work")]
    elif case == "out-parent-is-a-file":
        out = tmp_path / "afile" / "adapter"
    elif case == "work-inside-data":
        extra = ["--work", str(data / "run")]
    elif case == "out-inside-data":
        out = data / "adapter"
    elif case.startswith("seed"):
        extra = ["--seed", "18446744073709551616" if case == "seed-too-large" else "one"]
    elif case.startswith("cuda"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: case == "cuda-index")
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        extra = ["--device", "cuda" if case == "cuda-missing" else "cuda:7"]
    before = sorted((str(p), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
    refuse_loading(monkeypatch)
    if denied:
        deny(monkeypatch, *denied)
    elif case.endswith("not-writable"):
        deny(monkeypatch, tmp_path / "locked", reading=False)
    last = cli_error(capsys, ["--base", str(tiny_base), "--data", str(data), "--out", str(out), "--steps", "1", *extra])
    expected = message.format(data=data_folder, tmp=tmp_path, out=out, image=image.name,
                              caption=image.with_suffix(".txt").name)
    assert last.startswith("python -m generation.ml.train_lora: error: ") and expected in last, last
    monkeypatch.undo()
    assert sorted((str(p), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")) == before


def test_seeds_keep_their_64_bit_range_and_negative_seeds_still_work():
    from generation.ml.train_lora import seed_argument

    assert seed_argument("-1") == -1 and seed_argument(str(-2**63)) == -2**63
    assert seed_argument(str(2**64 - 1)) == 2**64 - 1
    for bad in (str(2**64), str(-2**63 - 1), "1.5"):
        with pytest.raises(Exception, match="is not a"):
            seed_argument(bad)
    with pytest.raises(ValueError, match="seed must be"):
        config(seed=2**64)


def test_cli_turns_an_os_error_during_the_run_into_one_line(tiny_base, data_folder, tmp_path, capsys, monkeypatch):
    def denied(**kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "adapter.work" / "cache.pt"))

    monkeypatch.setattr(lt, "train_lora", denied)
    last = cli_error(capsys, ["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter")])
    assert last == f"error: {tmp_path / 'adapter.work' / 'cache.pt'}: Permission denied"


def test_a_base_without_a_sample_size_needs_a_resolution(tiny_base, data_folder, tmp_path, capsys, monkeypatch):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    unet_config = json.loads((base / "unet" / "config.json").read_text())
    (base / "unet" / "config.json").write_text(json.dumps({**unet_config, "sample_size": None}))
    arguments = ["--base", str(base), "--data", str(data_folder), "--preset", "quick", "--steps", "1", "--rank", "4",
                 "--threads", "1", "--out"]
    with monkeypatch.context() as patched:
        refuse_loading(patched)
        last = cli_error(capsys, [*arguments, str(tmp_path / "adapter")])
    assert last.endswith(f"--base: {base}: its unet/config.json gives no sample_size, so the base's own resolution "
                         "is unknown; give --resolution")
    summary = cli_main([*arguments, str(tmp_path / "adapter"), "--resolution", "32"])
    assert summary["steps"] == 1 and summary["config"]["resolution"] == 32


def test_cli_replaces_an_adapter_of_another_run_only_with_overwrite(tiny_base, data_folder, tmp_path, capsys,
                                                                    monkeypatch):
    out = tmp_path / "adapter"
    arguments = ["--base", str(tiny_base), "--data", str(data_folder), "--out", str(out), "--preset", "quick",
                 "--rank", "4", "--threads", "1"]
    first = cli_main([*arguments, "--steps", "2"])
    # The same run again (a finished run's rerun) only saves; a killed run's resume carries on. Neither is refused.
    again = cli_main([*arguments, "--steps", "2"])
    assert again["resumed_from_step"] == 2 and again["sha256"] == first["sha256"]
    cfg = tc.preset_config("quick", "builtin", steps=3, rank=4, alpha=4, seed=5)
    with pytest.raises(TrainingCancelled):
        train_lora(base_path=tiny_base, examples=read_data_folder(data_folder), out_dir=out, config=cfg,
                   work_dir=tmp_path / "adapter.work", callbacks=CancelAt(1), threads=1)
    resumed = cli_main([*arguments, "--steps", "3", "--seed", "5"])
    assert resumed["resumed_from_step"] == 1 and resumed["steps"] == 3
    kept = (out / lt.WEIGHTS_NAME).read_bytes()
    capsys.readouterr()

    with monkeypatch.context() as patched:  # another run: refused before the base loads, the adapter kept
        refuse_loading(patched)
        last = cli_error(capsys, [*arguments, "--steps", "3", "--seed", "6"])
    assert last.endswith(f"--out: {out} holds an adapter that another run made (other works, base or settings, or "
                         f"its checkpoint is gone from {tmp_path / 'adapter.work'}); give --overwrite to replace it")
    assert (out / lt.WEIGHTS_NAME).read_bytes() == kept and sorted(p.name for p in out.iterdir()) == [lt.WEIGHTS_NAME]
    replaced = cli_main([*arguments, "--steps", "3", "--seed", "6", "--overwrite"])
    assert replaced["resumed_from_step"] == 0 and replaced["sha256"] != resumed["sha256"]


# ---------------------------------------------------------------- unusual devices, sizes, folders and adapters


@pytest.mark.parametrize("device", ["meta", "lazy", "xla", "mkldnn", "gpu0"])
def test_cli_refuses_a_device_type_it_does_not_train_on_in_one_line(device, tiny_base, data_folder, tmp_path, capsys,
                                                                   monkeypatch):
    # torch knows these names; the loop trains on cpu, cuda and mps only. meta ended in a traceback, lazy in 40
    # lines, and xla and mkldnn blamed the base model once it had started loading.
    refuse_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter"),
                  "--device", device])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"python -m generation.ml.train_lora: error: --device {device}: not a device this trains on "
                       "(give cpu, cuda, cuda:N or mps)")
    assert not any("Warning" in line for line in err)  # torch warns about "mkldnn" as it parses the name
    assert lt.device_problem("cpu") is None


@pytest.mark.parametrize("setting, value, bound", [("rank", 100_000_000, 1024), ("batch_size", 100_000_000, 1024),
                                                   ("resolution", 8192, 4096),
                                                   # 10**23 trained nothing: its gradients overflowed, so clipping
                                                   # scaled them all to 0 and an adapter of zeros was saved
                                                   ("alpha", 10**23, 4096),
                                                   ("steps", 99999999999999999999, 1_000_000)])  # ran for ever
def test_sizes_that_cannot_fit_in_memory_are_refused_before_training(setting, value, bound, tiny_base, data_folder,
                                                                     tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match=re.escape(f"{setting} must be at most {bound} (got {value})")):
        tc.preset_config("standard", **{setting: value})
    for kind in tc.PRESETS:  # every preset, on either kind of base, stays within the bounds
        for preset in tc.PRESETS[kind].values():
            assert preset.rank <= 1024 and preset.batch_size <= 1024 and preset.steps <= 1_000_000
            assert preset.alpha <= 4096
    tc.preset_config("standard", **{setting: bound})  # the bound itself is allowed
    refuse_loading(monkeypatch)
    flag = "--" + setting.replace("_", "-")
    last = cli_error(capsys, ["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter"),
                              flag, str(value)])
    assert last == f"python -m generation.ml.train_lora: error: {flag} must be at most {bound} (got {value})"


def test_cli_refuses_fp16_on_the_cpu_before_loading(tiny_base, data_folder, tmp_path, capsys, monkeypatch):
    # It ran, 143 s against 14-25 s in fp32, diffusers warning that fp16 pipelines cannot run on the CPU.
    refuse_loading(monkeypatch)
    last = cli_error(capsys, ["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter"),
                              "--device", "cpu", "--dtype", "fp16"])
    assert last == ("python -m generation.ml.train_lora: error: --dtype fp16: the CPU does not compute in fp16; give "
                    "fp32 (its default) or bf16")


@pytest.mark.parametrize("error, line", [
    (MemoryError(), "error: out of memory; lower --batch-size, --rank or --resolution"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 400000000000 bytes. Error code 12 (Cannot allocate memory)"),
     "error: out of memory (tried to allocate 400000000000 bytes); lower --batch-size, --rank or --resolution"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
                                 "139.72 GiB of which 1.2 GiB is free.\nOf the allocated memory ..."),
     "error: out of memory (tried to allocate 20.00 GiB); lower --batch-size, --rank or --resolution"),
])
def test_cli_turns_running_out_of_memory_into_one_line(error, line, tiny_base, data_folder, tmp_path, capsys,
                                                       monkeypatch):
    def out_of_memory(**kwargs):
        raise error

    monkeypatch.setattr(lt, "train_lora", out_of_memory)
    assert cli_error(capsys, ["--base", str(tiny_base), "--data", str(data_folder), "--out",
                              str(tmp_path / "adapter")]) == line


def test_other_runtime_errors_are_not_taken_for_running_out_of_memory(tiny_base, data_folder, tmp_path, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(lt, "train_lora", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # a bug keeps its traceback
        cli_main(["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter")])


def _not_handled(signum, frame):  # in place of SIGTERM's default, which would end pytest
    raise AssertionError("SIGTERM reached the handler the run started with")


# Ctrl-C as an interactive shell leaves it to Python (a test run in the background starts with it ignored);
# SIGTERM is what `kill`, systemd and docker stop send: it ended the run with status 143, no word, the steps since
# the last checkpoint lost.
@pytest.mark.parametrize("signal_name, handler_before, status, name", [
    ("SIGINT", "default_int_handler", 130, "Ctrl-C"), ("SIGTERM", "not_handled", 143, "SIGTERM"),
])
def test_ctrl_c_or_sigterm_stops_like_a_cancel_and_the_same_command_resumes(
        signal_name, handler_before, status, name, tiny_base, data_folder, tmp_path, capfd, monkeypatch):
    import os
    import signal

    from generation.ml import train_lora as cli

    number = getattr(signal, signal_name)
    before = signal.default_int_handler if handler_before == "default_int_handler" else _not_handled
    arguments = ["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter"),
                 "--preset", "quick", "--steps", "4", "--rank", "4", "--threads", "1"]
    progress = cli.PrintingCallbacks.on_progress

    def signal_at_step_2(self, step, total, loss, eta_seconds):
        progress(self, step, total, loss, eta_seconds)
        if step == 2:
            os.kill(os.getpid(), number)

    original = signal.signal(number, before)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(cli.PrintingCallbacks, "on_progress", signal_at_step_2)
            with pytest.raises(SystemExit) as exit_info:
                cli_main(arguments)
        assert signal.getsignal(number) is before  # the run's handler is gone again
    finally:
        signal.signal(number, original)
    assert exit_info.value.code == status
    err = capfd.readouterr().err  # the handler writes to the file descriptor itself
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"stopping at the next step, keeping a checkpoint ({name} again stops at once)" in err
    work = (tmp_path / "adapter.work").resolve()
    assert err.strip().splitlines()[-1] == (f"interrupted at step 2 of 4: run the same command again to resume from "
                                            f"the checkpoint in {work}")
    assert not (tmp_path / "adapter").exists()
    resumed = cli_main(arguments)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4


@pytest.mark.parametrize("step, said, stops", [
    (2, "stopping at the next step, keeping a checkpoint (Ctrl-C again stops at once)", True),
    (3, "all steps are done: finishing and saving the adapter (Ctrl-C again stops at once)", False),
])
def test_ctrl_c_says_what_the_run_will_do(step, said, stops, capfd):
    """After the last step the run finishes (its last previews, the save), and says so; before, it stops."""
    import os
    import signal

    from generation.ml.train_lora import PrintingCallbacks

    callbacks = PrintingCallbacks()
    with callbacks.cancel_on_ctrl_c():
        callbacks.on_progress(step, 3, 0.5, 1.0)
        os.kill(os.getpid(), signal.SIGINT)
    assert callbacks.should_cancel() is stops
    assert capfd.readouterr().err.strip().splitlines()[-1] == said


def test_a_run_started_with_ctrl_c_ignored_keeps_it_ignored():
    import signal

    from generation.ml.train_lora import PrintingCallbacks

    original = signal.signal(signal.SIGINT, signal.SIG_IGN)  # started in the background, or under nohup
    try:
        with PrintingCallbacks().cancel_on_ctrl_c():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, original)


def test_a_failed_run_leaves_no_empty_work_folder_and_keeps_an_earlier_one(tiny_base, works, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    examples = [*works[:2], TrainingExample(str(empty), "a red star")]
    with pytest.raises(lt.TrainingDataError, match="cannot read training image"):
        train_lora(base_path=tiny_base, examples=examples, out_dir=folder / "adapter", config=config(steps=1),
                   work_dir=folder / "adapter.work")
    assert sorted(p.name for p in folder.iterdir()) == ["empty.png"]
    train_lora(base_path=tiny_base, examples=works[:2], out_dir=folder / "earlier", config=config(steps=1),
               work_dir=folder / "work")
    kept = sorted(p.name for p in (folder / "work").iterdir())
    with pytest.raises(lt.TrainingDataError):
        train_lora(base_path=tiny_base, examples=examples, out_dir=folder / "adapter", config=config(steps=1),
                   work_dir=folder / "work")
    assert sorted(p.name for p in (folder / "work").iterdir()) == kept == ["cache.pt", lt.CHECKPOINT_NAME]


def test_hidden_files_and_macos_appledouble_files_are_not_works(data_folder):
    names = sorted(p.name for p in data_folder.glob("*.png"))
    for hidden in (".hidden.png", "._" + names[0]):  # a Mac copying to a foreign disk writes "._" + each name
        (data_folder / hidden).write_bytes(b"\0\5\26\7 not an image")
    (data_folder / ("._" + names[0])).with_suffix(".txt").write_bytes(b"\0\5\26\7")
    assert [Path(e.image_path).name for e in read_data_folder(data_folder)] == names


def test_a_caption_suffix_in_capitals_is_a_caption(data_folder):
    first = sorted(data_folder.glob("*.png"))[0]
    caption = first.with_suffix(".txt")
    caption.rename(first.with_suffix(".TXT"))
    examples = read_data_folder(data_folder)
    assert [e.caption for e in examples][0] == first.with_suffix(".TXT").read_text().strip()
    first.with_suffix(".txt").write_text("another caption")
    with pytest.raises(DataFolderError, match=rf"^captions {first.stem}.TXT and {first.stem}.txt differ only in "
                                              r"the case of their suffix: keep one$"):
        read_data_folder(data_folder)


@pytest.mark.parametrize("suffix", [".ppm", ".avif", ".TGA"])
def test_every_image_type_pillow_opens_is_a_work(suffix, tiny_base, data_folder):
    from PIL import features

    if suffix == ".avif" and not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF")
    scenes.illustration(7).image.save(data_folder / f"extra{suffix}")
    (data_folder / "extra.txt").write_text("a green tree")
    examples = read_data_folder(data_folder)
    assert f"extra{suffix}" in [Path(e.image_path).name for e in examples]
    assert lt.load_training_images([data_folder / f"extra{suffix}"], 32)[0].size == (32, 32)


def test_a_broken_link_named_as_an_image_is_an_error_with_or_without_a_caption(data_folder):
    import os

    os.symlink(data_folder / "gone.png", data_folder / "lost.png")
    with pytest.raises(DataFolderError, match=r"^1 image\(s\) that are broken links or not files: lost.png$"):
        read_data_folder(data_folder)


@pytest.mark.parametrize("damage, message", [
    ("empty", "cannot read image {name}: empty, damaged or not an image"),
    ("truncated", "cannot read image {name}: "),
    ("unreadable", "cannot read image {name}: Permission denied"),
])
def test_cli_reads_every_image_before_loading_the_base(damage, message, tiny_base, data_folder, tmp_path, capsys,
                                                       monkeypatch):
    image = sorted(data_folder.glob("*.png"))[0]
    if damage == "empty":
        image.write_bytes(b"")
    elif damage == "truncated":
        image.write_bytes(image.read_bytes()[:-40])
    refuse_loading(monkeypatch)
    if damage == "unreadable":
        deny(monkeypatch, image)
    last = cli_error(capsys, ["--base", str(tiny_base), "--data", str(data_folder), "--out", str(tmp_path / "adapter")])
    expected = "python -m generation.ml.train_lora: error: --data: " + message.format(name=image.name)
    assert last.startswith(expected), last
    assert not (tmp_path / "adapter.work").exists() and not (tmp_path / "adapter").exists()


@pytest.fixture(scope="module")
def own_adapter(tiny_base, works, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own-adapter")
    return Path(train_lora(base_path=tiny_base, examples=works[:4], out_dir=folder / "adapter",
                           config=config(steps=2), work_dir=folder / "work").weights_path)


def adapter_with(path: Path, source: Path, change) -> Path:
    """A copy of the adapter at `source` (its metadata kept) whose first tensor `change` alters."""
    from safetensors.torch import load_file, save_file

    with safe_open(source, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(source)
    first = sorted(tensors)[0]
    tensors[first] = change(tensors[first].clone())
    save_file(tensors, path, metadata=metadata)
    return path


@pytest.mark.parametrize("contents", ["bogus-lora-key", "no-module-prefix"])
def test_a_file_whose_lora_keys_fit_no_layer_is_refused_in_one_line(contents, tiny_base, own_adapter, tmp_path):
    from safetensors.torch import save_file

    key = {"bogus-lora-key": "unet.lora_bogus.weight", "no-module-prefix": "lora_only"}[contents]
    save_file({key: torch.zeros(2, 2)}, tmp_path / "odd.safetensors")
    pipe = load_base_pipeline(tiny_base)
    apply_adapters(pipe, [("own", own_adapter, 1.0)])
    before = images_of(pipe)
    with pytest.raises(lt.AdapterError, match=r"odd.safetensors is not a LoRA for this base model"):
        apply_adapters(pipe, [("odd", tmp_path / "odd.safetensors", 1.0)])
    apply_adapters(pipe, [("own", own_adapter, 1.0)])
    assert np.array_equal(images_of(pipe), before) and lt.loaded_adapters(pipe) == {"own": str(own_adapter)}


def test_an_adapter_of_another_base_is_refused_without_diffusers_logging_each_mismatch(tiny_base, works, tmp_path):
    import logging

    wider = tmp_path / "wider-base"
    build_pipeline(dataclasses.replace(TINY_CONFIG, unet_channels=(16, 16, 48))).save_pretrained(wider)
    foreign = train_lora(base_path=wider, examples=works[:4], out_dir=tmp_path / "foreign",
                         config=config(steps=1), work_dir=tmp_path / "w1")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    pipe = load_base_pipeline(tiny_base)
    peft_logger = logging.getLogger("diffusers.loaders.peft")
    filters = list(peft_logger.filters)
    try:
        with pytest.raises(lt.AdapterError, match="does not fit this base model: size mismatch"):
            apply_adapters(pipe, [("style", foreign.weights_path, 1.0)])
    finally:
        diffusers_logger.removeHandler(handler)
    assert [r.getMessage()[:60] for r in records if r.levelno >= logging.ERROR] == []
    assert peft_logger.filters == filters  # muted while loading only


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_adapter_whose_weights_are_not_finite_is_refused(value, tiny_base, own_adapter, tmp_path):
    broken = adapter_with(tmp_path / "broken.safetensors", own_adapter, lambda t: t.fill_(value))
    with pytest.raises(lt.AdapterError, match=r"broken.safetensors holds weights that are not finite numbers \(the "
                                              r"first: unet\..*\)$"):
        lt.check_adapter_file(broken)
    pipe = load_base_pipeline(tiny_base)
    with pytest.raises(lt.AdapterError, match="not finite"):
        apply_adapters(pipe, [("broken", broken, 1.0)])
    assert lt.loaded_adapters(pipe) == {}


def test_an_unreadable_adapter_is_reported_as_such(tiny_base, own_adapter, monkeypatch):
    pipe = load_base_pipeline(tiny_base)
    deny(monkeypatch, own_adapter)
    unreadable = rf"^cannot read adapter {re.escape(str(own_adapter))}: Permission denied$"
    with pytest.raises(lt.AdapterError, match=unreadable):
        apply_adapters(pipe, [("own", own_adapter, 1.0)])


def test_a_full_disk_while_saving_the_adapter_is_one_line_and_writes_nothing(tiny_base, works, tmp_path, capsys,
                                                                              monkeypatch):
    """safetensors reports a failed write as its own error, not an OSError: the CLI still says it in one line."""
    from diffusers import StableDiffusionPipeline
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(StableDiffusionPipeline, "save_lora_weights", disk_full)
    out = tmp_path / "adapter"
    last = cli_error(capsys, ["--base", str(tiny_base), "--data", str(Path(works[0].image_path).parent), "--out",
                              str(out), "--preset", "quick", "--steps", "2", "--rank", "4", "--threads", "1"])
    assert last == f"error: {out}: No space left on device"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".adapter.")]

    def other_error(*args, **kwargs):  # not a failed write: a bug keeps its traceback
        raise SafetensorError("tensor invalid")

    monkeypatch.setattr(StableDiffusionPipeline, "save_lora_weights", other_error)
    with pytest.raises(SafetensorError, match="tensor invalid"):
        cli_main(["--base", str(tiny_base), "--data", str(Path(works[0].image_path).parent), "--out", str(out),
                  "--preset", "quick", "--steps", "2", "--rank", "4", "--threads", "1"])


def test_images_far_larger_or_wider_than_training_uses_get_a_one_line_note(tmp_path, capsys, monkeypatch, recwarn):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 40), "red").save(data / "large.png")
    Image.new("RGB", (60, 6), "blue").save(data / "banner.png")
    Image.new("RGB", (30, 24), "green").save(data / "plain.png")
    Image.new("RGB", (2, 500), "green").save(data / "thread.png")
    for name in ("large", "banner", "plain", "thread"):
        (data / f"{name}.txt").write_text(f"a {name} picture")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # 40x40 is past it, as 10000x10000 is past Pillow's own
    examples = read_data_folder(data)
    notes = capsys.readouterr().err.strip().splitlines()
    assert notes == [
        "note: banner.png is 60x6 px: only its centre square is used, 10% of it",
        "note: large.png is 40x40 px, far more than is used: it is read whole and scaled down; a copy of a few "
        "megapixels works the same, faster",
        "note: thread.png is 2x500 px: only its centre square is used, 0.4% of it",
    ]
    images = lt.load_training_images([example.image_path for example in examples], 32)
    assert [image.size for image in images] == [(32, 32)] * 4
    assert not [str(w.message) for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]  # said once, above

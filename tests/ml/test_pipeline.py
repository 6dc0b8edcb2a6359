"""Loading, saving and sampling through `load_pipeline` and the sampling CLI,
offline, on tiny randomly initialised models of the real shapes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from generation.ml import BUILTIN_BASE_MODEL, sample, scenes
from generation.ml.architecture import NOISE_SCHEDULE, TINY_CONFIG, build_pipeline
from generation.ml.lora_training import LoraTrainingConfig, TrainingExample, choose_device_and_dtype, train_lora
from generation.ml.pipeline import generate, load_pipeline, pick_device, pick_dtype
from generation.ml.tokenizer import build_tokenizer

PROMPT = "a red star on a blue background, top left"

# ------------------------------------------------------------ network guard

_guard = {"on": False, "attempts": []}


def _refuse_sockets(event, args):
    if _guard["on"] and event in ("socket.connect", "socket.getaddrinfo"):
        _guard["attempts"].append((event, args[1] if len(args) > 1 else args))
        raise ConnectionRefusedError(f"network access during an offline test: {event} {args[1:]}")


sys.addaudithook(_refuse_sockets)  # audit hooks cannot be removed; the flag turns it off


@contextmanager
def no_network():
    """Fails any socket connect or name lookup inside the block, including
    ones made from C code, and records the attempt even if it was swallowed."""
    _guard["on"], _guard["attempts"] = True, []
    try:
        yield _guard["attempts"]
    finally:
        _guard["on"] = False


# ------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-sd")
    build_pipeline(TINY_CONFIG).save_pretrained(folder)
    return folder


def tiny_sdxl(folder: Path) -> None:
    """A randomly initialised SDXL-shaped pipeline: two text encoders (the
    second with a projection), text-time added conditioning."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    # eos_token_id: the pooled output is read at the caption's end token, as in SDXL's CLIP encoders.
    text_config = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                       vocab_size=len(tokenizer), max_position_embeddings=24, projection_dim=32,
                       eos_token_id=tokenizer.eos_token_id)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=32,
    )
    StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_config)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                         timestep_spacing="leading", steps_offset=1),
    ).save_pretrained(folder)


# ------------------------------------------------------------ tests


def test_network_guard_really_refuses_connections():
    with no_network() as attempts, pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    assert attempts


def test_load_and_sample_never_touch_the_network(tiny_folder):
    with no_network() as attempts:
        pipe = load_pipeline(tiny_folder)
        image = generate(pipe, PROMPT, seed=1, steps=3)[0]
    assert attempts == []
    assert isinstance(pipe, StableDiffusionPipeline)
    assert image.size == (32, 32)


def test_saved_pipeline_loads_with_identical_weights(tmp_path):
    torch.manual_seed(1)
    original = build_pipeline(TINY_CONFIG)
    original.save_pretrained(tmp_path)
    loaded = load_pipeline(tmp_path, device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        expected, actual = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}.{key}"
    assert loaded.tokenizer(PROMPT).input_ids == original.tokenizer(PROMPT).input_ids
    assert type(loaded.scheduler) is type(original.scheduler)
    assert {k: loaded.scheduler.config[k] for k in NOISE_SCHEDULE} == NOISE_SCHEDULE
    assert loaded.unet.dtype == torch.float32 and loaded.device.type == "cpu"


def test_plain_diffusers_loads_the_folder_offline(tiny_folder):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder, local_files_only=True)
    assert pipe.safety_checker is None and pipe.tokenizer.model_max_length == 24


def test_dtype_is_fp32_on_cpu_and_half_on_cuda():
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), torch.bfloat16) == torch.bfloat16
    if torch.cuda.is_available():
        assert pick_dtype(torch.device("cuda")) in (torch.float16, torch.bfloat16)


@pytest.fixture
def gpus(monkeypatch) -> dict[int, tuple[int, int]]:
    """Simulated CUDA GPUs: fill in {index: compute capability}. torch's own bf16 check says yes on every one,
    as `is_bf16_supported()` does where bf16 is only emulated (a T4, a V100)."""
    capabilities: dict[int, tuple[int, int]] = {}

    def capability(device=None):
        index = device if isinstance(device, int) else torch.device(device or "cuda").index
        return capabilities[0 if index is None else index]  # no index: the current GPU, 0 here

    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(capabilities))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return capabilities


@pytest.mark.parametrize("capabilities, device, expected", [
    ({0: (7, 5)}, None, torch.float16),  # T4: bf16 only emulated, fp16 with loss scaling is the fast one
    ({0: (7, 0)}, "cuda", torch.float16),  # V100
    ({0: (8, 0)}, None, torch.bfloat16),  # A100
    ({0: (9, 0)}, "cuda:0", torch.bfloat16),  # H100, H200
    ({0: (8, 0), 1: (7, 5)}, "cuda:1", torch.float16),  # judged by the GPU asked for, not the current one
    ({0: (7, 5), 1: (8, 6)}, "cuda:1", torch.bfloat16),
])
def test_bf16_only_on_a_gpu_that_has_it_natively_and_on_the_gpu_asked_for(gpus, capabilities, device, expected):
    gpus.update(capabilities)
    assert choose_device_and_dtype(device) == (torch.device(device or "cuda"), expected)  # training
    assert pick_dtype(pick_device(device)) == expected  # sampling


def test_training_and_sampling_pick_the_same_device_and_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for mps, expected in ((True, (torch.device("mps"), torch.float16)), (False, (torch.device("cpu"), torch.float32))):
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        assert choose_device_and_dtype() == expected
        assert (pick_device(), pick_dtype(pick_device())) == expected
    assert choose_device_and_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16


def test_sdxl_shaped_folder_samples_through_the_same_loader(tmp_path):
    tiny_sdxl(tmp_path)
    with no_network() as attempts:
        pipe = load_pipeline(tmp_path)
        images = generate(pipe, [PROMPT, "a green moon"], seed=0, steps=2)
    assert attempts == []
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert [image.size for image in images] == [(32, 32), (32, 32)]
    assert np.asarray(images[0]).std() > 0


def test_unknown_folders_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="unsupported pipeline 'FluxPipeline'"):
        load_pipeline(tmp_path)


def test_sampling_cli_writes_byte_identical_pngs_for_the_same_seed(tiny_folder, tmp_path, capsys):
    common = ["--model", str(tiny_folder), "--prompt", PROMPT, "--steps", "3", "--count", "2"]
    with no_network() as attempts:
        first = sample.main([*common, "--seed", "5", "--out", str(tmp_path / "a.png")])
        second = sample.main([*common, "--seed", "5", "--out", str(tmp_path / "b.png")])
        other = sample.main([*common, "--seed", "6", "--count", "1", "--out", str(tmp_path / "c.png")])
    assert attempts == []
    assert [r["path"] for r in first] == [str(tmp_path / "a-5.png"), str(tmp_path / "a-6.png")]
    for a, b in zip(first, second):
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    assert Path(first[0]["path"]).read_bytes() != Path(first[1]["path"]).read_bytes()
    # Image i of a batch is image 0 of a run started at its seed.
    assert Path(first[1]["path"]).read_bytes() == Path(other[0]["path"]).read_bytes()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 5 and lines[0]["seed"] == 5 and lines[0]["steps"] == 3 and lines[0]["seconds"] > 0


def test_sampling_cli_upscales_on_request_and_says_so(tiny_folder, tmp_path):
    record = sample.main(["--model", str(tiny_folder), "--prompt", PROMPT, "--steps", "2", "--upscale", "4",
                          "--out", str(tmp_path / "big.png")])[0]
    assert record["native_size"] == [32, 32] and record["size"] == [128, 128]
    assert record["upscaled"] == "nearest x4"


def refuse_loading(monkeypatch) -> None:
    """Bad input must be refused before the model loads (minutes for an SD-sized one)."""
    monkeypatch.setattr(sample, "load_base_pipeline", lambda *args, **kwargs: pytest.fail("the model was loaded"))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "/nonexistent/model"], "no model_index.json"),
        (["--steps", "0"], "at least 1"),
        (["--lora", "/nonexistent/lora"], "--lora: no such folder or file /nonexistent/lora"),
        (["--width", "30"], "--width must be a multiple of 8, at least 8 (got 30)"),
        (["--guidance", "-1"], "--guidance must be a number of at least 0"),
        (["--guidance", "nan"], "--guidance must be a number of at least 0"),
        (["--lora-scale", "inf"], "--lora-scale a finite number"),
        # These grew until the OOM killer came, failed to allocate with a traceback, or ran out of memory.
        (["--upscale", "100000"], "--upscale 100000: the PNG would be 3200000x3200000 px, more than the 89478485 px "
                                  "Pillow opens"),
        (["--width", "80000", "--height", "80000"], "--width must be at most 4096 (got 80000)"),
        (["--height", "4104"], "--height must be at most 4096 (got 4104)"),
        (["--steps", "100000000000"], "--steps must be at most 1000 (got 100000000000)"),
        # A traceback; and one after the first PNG was written.
        (["--seed", str(2**64)], "--seed: 18446744073709551616 is not a seed from -2**63 to 2**64 - 1"),
        (["--seed", str(2**64 - 1), "--count", "2"], "--seed 18446744073709551615: the 2 images take seeds up to "
                                                     "18446744073709551616, past 2**64 - 1"),
    ],
)
def test_sampling_cli_rejects_bad_arguments_in_one_line(tiny_folder, tmp_path, capsys, monkeypatch, arguments,
                                                        message):
    base = ["--model", str(tiny_folder), "--prompt", PROMPT, "--out", str(tmp_path / "x.png")]
    refuse_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(base + arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error
    assert list(tmp_path.glob("x*.png")) == []


def test_sampling_cli_takes_the_largest_sizes_it_allows(tiny_folder, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(sample, "generate", lambda pipe, prompt, **kwargs: drawn.append(kwargs) or [
        Image.new("RGB", (kwargs["width"] or 32, kwargs["height"] or 32))])
    record = sample.main(["--model", str(tiny_folder), "--prompt", PROMPT, "--width", "4096", "--height", "8",
                          "--seed", str(2**64 - 2), "--count", "2", "--steps", "1000", "--out",
                          str(tmp_path / "edge.png")])
    assert [r["seed"] for r in record] == [2**64 - 2, 2**64 - 1] and drawn[0]["steps"] == 1000
    assert record[0]["size"] == [4096, 8]


@pytest.mark.parametrize("case, message", [
    ("out-is-a-folder", "--out: {tmp}/isdir.png is a folder"),
    ("a-numbered-out-is-a-folder", "--out: {tmp}/x-1.png is a folder"),
    ("out-parent-is-a-file", "--out: {tmp}/outfile is not a folder"),
    ("out-not-writable", "--out: {tmp}/x.png is not writable"),
    ("model-index-not-json", "--model: {tmp}/model is not a diffusers model folder (JSONDecodeError: "),
    ("model-without-a-sample-size", "--model: {tmp}/model: its unet/config.json gives no sample_size, so the base's "
                                    "own resolution is unknown; give --width and --height"),
])
def test_sampling_cli_refuses_an_unusable_out_or_model_before_loading(case, message, tiny_folder, tmp_path, capsys,
                                                                      monkeypatch):
    # Each was a traceback; --out a folder only after the image was drawn.
    from tests.ml.test_lora_training import deny

    model, out, extra = tiny_folder, tmp_path / "x.png", []
    (tmp_path / "outfile").write_text("notes")
    if case == "out-is-a-folder":
        out = tmp_path / "isdir.png"
        out.mkdir()
    elif case == "a-numbered-out-is-a-folder":
        (tmp_path / "x-1.png").mkdir()
        extra = ["--count", "2"]
    elif case == "out-parent-is-a-file":
        out = tmp_path / "outfile" / "a.png"
    elif case == "out-not-writable":
        out.write_bytes(b"an earlier image")
        deny(monkeypatch, out, reading=False)
    else:
        model = tmp_path / "model"
        shutil.copytree(tiny_folder, model)
        if case == "model-index-not-json":
            (model / "model_index.json").write_text("{")
        else:
            unet_config = json.loads((model / "unet" / "config.json").read_text())
            (model / "unet" / "config.json").write_text(json.dumps({**unet_config, "sample_size": None}))
    before = sorted((str(p), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
    refuse_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(model), "--prompt", PROMPT, "--steps", "1", "--out", str(out), *extra])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("python -m generation.ml.sample: error: ") and message.format(tmp=tmp_path) in last, last
    assert sorted((str(p), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")) == before


def test_sampling_cli_draws_with_a_model_without_a_sample_size_given_both_sides(tiny_folder, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_folder, model)
    unet_config = json.loads((model / "unet" / "config.json").read_text())
    (model / "unet" / "config.json").write_text(json.dumps({**unet_config, "sample_size": None}))
    record = sample.main(["--model", str(model), "--prompt", PROMPT, "--steps", "1", "--width", "16", "--height", "24",
                          "--out", str(tmp_path / "x.png")])[0]
    assert record["size"] == [16, 24]


def test_sampling_cli_says_in_one_line_that_a_model_folder_cannot_be_loaded(tiny_folder, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_folder, model)
    shutil.rmtree(model / "text_encoder")  # a ValueError or OSError deep in diffusers, once loading has begun
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(model), "--prompt", PROMPT, "--steps", "1", "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot load the base model from {model}: ")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("error, line", [
    (MemoryError(), "error: out of memory; lower --width or --height"),
    (OSError(28, "No space left on device", "x.png"), "error: x.png: No space left on device"),
])
def test_sampling_cli_turns_what_fails_while_drawing_into_one_line(error, line, tiny_folder, tmp_path, capsys,
                                                                    monkeypatch):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(sample, "generate", failing)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(tiny_folder), "--prompt", PROMPT, "--steps", "1", "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == line


def test_sampling_cli_takes_an_adapter_folder_or_file_and_refuses_one_that_does_not_fit(tiny_folder, tmp_path, capsys):
    examples = []
    for i in range(2):
        drawing = scenes.illustration(i, "pixel-art")
        drawing.image.save(tmp_path / f"{i}.png")
        examples.append(TrainingExample(str(tmp_path / f"{i}.png"), drawing.caption))
    config = LoraTrainingConfig(rank=4, alpha=4, learning_rate=1e-2, steps=2, batch_size=2, preview_every=0)
    own = train_lora(base_path=tiny_folder, examples=examples, out_dir=tmp_path / "own", config=config,
                     work_dir=tmp_path / "w1")
    wider = tmp_path / "wider"
    build_pipeline(dataclasses.replace(TINY_CONFIG, unet_channels=(16, 16, 48))).save_pretrained(wider)
    train_lora(base_path=wider, examples=examples, out_dir=tmp_path / "foreign", config=config, work_dir=tmp_path / "w2")
    common = ["--model", str(tiny_folder), "--prompt", PROMPT, "--steps", "2"]
    sample.main([*common, "--out", str(tmp_path / "plain.png")])
    sample.main([*common, "--lora", str(tmp_path / "own"), "--out", str(tmp_path / "folder.png")])
    sample.main([*common, "--lora", own.weights_path, "--out", str(tmp_path / "file.png")])
    assert (tmp_path / "folder.png").read_bytes() == (tmp_path / "file.png").read_bytes()
    assert (tmp_path / "folder.png").read_bytes() != (tmp_path / "plain.png").read_bytes()
    capsys.readouterr()
    for lora, message in [(tmp_path / "foreign", "does not fit this base model: size mismatch"),
                          (tmp_path / "w1", "--lora: no pytorch_lora_weights.safetensors in")]:
        with pytest.raises(SystemExit) as exit_info:
            sample.main([*common, "--lora", str(lora), "--out", str(tmp_path / "x.png")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()
    # Pushed past what the numbers hold, the LoRA draws NaN, which saved as a black image.
    with pytest.raises(SystemExit) as exit_info:
        sample.main([*common, "--lora", str(tmp_path / "own"), "--lora-scale", "1e20", "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: samples came out as numbers that are not finite (NaN or infinite; the first with seed 0); likely "
        "cause: the LoRA at --lora-scale 1e+20 (lower it)")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("contents, message", [
    ({"unet.lora_bogus.weight": torch.zeros(2, 2)}, "is not a LoRA for this base model"),
    ({"unet.conv_in.lora_A.weight": torch.full((4, 4, 3, 3), float("nan"))}, "holds weights that are not finite"),
])
def test_sampling_cli_refuses_a_file_that_is_no_usable_lora_in_one_line(contents, message, tiny_folder, tmp_path,
                                                                         capsys):
    from safetensors.torch import save_file

    save_file(contents, tmp_path / "odd.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(tiny_folder), "--prompt", PROMPT, "--steps", "1", "--lora",
                     str(tmp_path / "odd.safetensors"), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not (tmp_path / "x.png").exists()


def test_sampling_cli_refuses_an_unusable_adapter_before_loading_the_base(tiny_folder, tmp_path, capsys, monkeypatch):
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    refuse_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(tiny_folder), "--prompt", PROMPT, "--lora", str(tmp_path / "broken.safetensors"),
                     "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "--lora: cannot load adapter" in capsys.readouterr().err.strip().splitlines()[-1]


def test_builtin_model_path_is_inside_the_package():
    assert BUILTIN_BASE_MODEL.name == "base_model" and BUILTIN_BASE_MODEL.parent.name == "ml"


def test_builtin_model_is_small_loads_offline_and_follows_its_captions():
    from generation.ml.evaluate_base import evaluate

    files = [p for p in BUILTIN_BASE_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30_000_000
    assert all(p.suffix != ".bin" for p in files)  # weights only as safetensors
    with no_network() as attempts:
        pipe = load_pipeline(BUILTIN_BASE_MODEL)
        # 25 held-out captions, read back from pixels; chance is 11-12.5% for
        # each attribute. Colour, position and shape at the targets;
        # the 200-caption figures (README) are 99.5 / 100 / 89%.
        accuracy = evaluate(pipe, n=25)["accuracy"]
    assert attempts == []
    assert accuracy["background"] >= 0.9
    assert accuracy["colour"] >= 0.85
    assert accuracy["position"] >= 0.75
    assert accuracy["shape"] >= 0.6


def test_a_prompt_longer_than_the_text_encoder_reads_is_cut_without_logging_the_rest(tiny_folder):
    """diffusers logs the cut part of every long prompt at every call: megabytes for a long caption, which callers
    report once themselves (lora_training.caption_report)."""
    import logging

    pipe = load_pipeline(tiny_folder)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    pipeline_logger = logging.getLogger(type(pipe).__module__)
    pipeline_logger.addHandler(handler)
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.WARNING)
    try:
        long_prompt = "a red star on a blue background" + " and a red star" * 200
        short = generate(pipe, "a red star on a blue background", seed=3, steps=2)[0]
        cut = generate(pipe, long_prompt, seed=3, steps=2)[0]
        pipeline_logger.warning("another warning of the pipeline")
    finally:
        pipeline_logger.removeHandler(handler)
        pipeline_logger.setLevel(level)
    assert [record.getMessage() for record in records] == ["another warning of the pipeline"]  # only that one is dropped
    assert np.asarray(cut).shape == np.asarray(short).shape

"""The benchmarks' own tools: the SD-shaped bases and the step FLOP count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from generation.ml.architecture import TINY_CONFIG, build_pipeline, parameter_counts
from generation.ml.lora_training import LoraTrainingConfig, add_lora, load_base_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import lora_training as lora_benchmark  # noqa: E402
import sd_shaped_base  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("kind, unet_millions, second_encoder", [("sd15", 859.5, False), ("sdxl", 2567.5, True)])
def test_sd_shaped_bases_have_the_published_sizes(kind, unet_millions, second_encoder):
    pipe = sd_shaped_base.build(kind, device="meta")  # shapes only: no memory, no time
    counts = parameter_counts(pipe)
    assert round(counts["unet"] / 1e6, 1) == unet_millions
    assert round(counts["vae"] / 1e6, 1) == 83.7
    # CLIP ViT-L's text tower less the embeddings of the 49408-token vocabulary it would bring.
    tokens = len(pipe.tokenizer)
    assert counts["text_encoder"] == 123_060_480 - (49408 - tokens) * 768
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert pipe.tokenizer.model_max_length == 77
    assert ("text_encoder_2" in counts) == second_encoder
    if second_encoder:
        assert pipe.text_encoder_2.config.hidden_size == 1280 and pipe.text_encoder_2.config.num_hidden_layers == 32


def test_sd_shaped_base_refuses_an_existing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sd_shaped_base.main(["--kind", "sd15", "--out", str(tmp_path)])
    assert "already exists" in capsys.readouterr().err


def test_step_flops_on_meta_equal_a_real_training_step(tmp_path):
    torch.manual_seed(0)
    build_pipeline(TINY_CONFIG).save_pretrained(tmp_path)
    counted = lora_benchmark.step_flops(tmp_path, batch=2, resolution=32, rank=4)

    pipe = load_base_pipeline(tmp_path)
    add_lora(pipe, LoraTrainingConfig(rank=4, alpha=4, learning_rate=1e-4, steps=1, batch_size=2))
    pixels = torch.randn(2, 3, 32, 32)
    ids = pipe.tokenizer(["a red star", "a blue moon"], padding="max_length", return_tensors="pt").input_ids
    cond = pipe.text_encoder(ids)[0].detach()
    # The math attention (matrix products), which the counter sees; it does not
    # count the CPU's fused attention kernel, and meta tensors take the math path.
    with FlopCounterMode(display=False) as unet_step, sdpa_kernel(SDPBackend.MATH):
        pred = pipe.unet(torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), cond, return_dict=False)[0]
        F.mse_loss(pred, torch.zeros_like(pred)).backward()
    with FlopCounterMode(display=False) as encoders, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        pipe.vae.encode(pixels).latent_dist.sample()
        pipe.text_encoder(ids)
    assert counted["ours"] == unet_step.get_total_flops()
    assert counted["reference"] == unet_step.get_total_flops() + encoders.get_total_flops()
    assert counted["reference"] > counted["ours"]


def test_the_gpu_report_names_what_it_cannot_do(capsys, monkeypatch):
    import gpu_report

    with pytest.raises(SystemExit):
        gpu_report.main(["--out", "unused", "--runs", "sd15-bf16,sd21-bf16"])
    assert "--runs: unknown sd21-bf16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_report.main(["--out", "unused", "--runs", "benchmark"])
    assert "the benchmark run needs diffusers' train_text_to_image_lora.py" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu_report.main(["--out", "unused", "--runs", "sd15-bf16"])
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--repeats", "0"], "--repeats and --threads must be at least 1"),  # crashed once the data was drawn
    (["--threads", "0"], "--repeats and --threads must be at least 1"),  # failed only inside the child run
    (["--warmup", "-3"], "--warmup must be 0 or more"),
    (["--resolution", "7"], "--resolution must be a multiple of 8, at least 8 (got 7)"),
    (["--resolution", "0"], "--resolution must be a multiple of 8, at least 8 (got 0)"),
])
def test_the_lora_benchmark_refuses_bad_arguments_before_drawing_or_loading(arguments, message, tmp_path, capsys,
                                                                            monkeypatch):
    (tmp_path / "train_text_to_image_lora.py").write_text("")
    for name in ("step_flops", "write_data", "run_child"):
        monkeypatch.setattr(lora_benchmark, name, lambda *args, **kwargs: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as exit_info:
        lora_benchmark.main(["--reference", str(tmp_path / "train_text_to_image_lora.py"), *arguments])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")

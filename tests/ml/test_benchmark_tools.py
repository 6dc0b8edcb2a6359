"""The benchmarks' own tools: the SD-shaped bases and the step FLOP count."""

from __future__ import annotations

import argparse
import json
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


@pytest.mark.parametrize("arguments, message", [
    # Refused inside this loop's child, after loading, with a traceback tail, before the bounds were checked here.
    (["--rank", "2000"], "--rank must be at most 1024 (got 2000)"),
    (["--batch", "1025"], "--batch must be at most 1024 (got 1025)"),
    (["--steps", "1000001"], "--steps must be at most 1000000 (got 1000001)"),
    (["--resolution", "4104"], "--resolution must be at most 4096 (got 4104)"),
])
def test_the_lora_benchmark_refuses_what_training_would_refuse_before_starting(arguments, message, tmp_path, capsys,
                                                                              monkeypatch):
    test_the_lora_benchmark_refuses_bad_arguments_before_drawing_or_loading(arguments, message, tmp_path, capsys,
                                                                            monkeypatch)


def _refusal(tmp_path, capsys, monkeypatch, *arguments, script="") -> str:
    """The benchmark's last stderr line for these arguments, having checked it exits 2 before starting anything."""
    reference = tmp_path / "train_text_to_image_lora.py"
    reference.write_text(script)
    for name in ("step_flops", "write_data", "run_child"):
        monkeypatch.setattr(lora_benchmark, name, lambda *args, **kwargs: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as exit_info:
        lora_benchmark.main(["--reference", str(reference), *arguments])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_the_lora_benchmark_refuses_a_reference_site_that_is_not_a_folder(tmp_path, capsys, monkeypatch):
    # It failed only after this loop's whole run, when the reference's child could not import datasets.
    missing = tmp_path / "no-such-site"
    assert _refusal(tmp_path, capsys, monkeypatch, "--reference-site", str(missing)).endswith(
        f"error: --reference-site {missing}: not a folder")


def test_the_lora_benchmark_refuses_a_reference_without_datasets(tmp_path, capsys, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed in this environment")
    site = tmp_path / "site"
    site.mkdir()
    assert _refusal(tmp_path, capsys, monkeypatch, "--reference-site", str(site)).endswith(
        f"error: the reference needs `datasets`, which is not installed here or in --reference-site {site}")
    assert "install it apart (pip install --target DIR datasets) and give --reference-site DIR" in _refusal(
        tmp_path, capsys, monkeypatch)
    # Found, but it does not import (a missing dependency): said before anything runs, with the cause.
    (site / "datasets").mkdir()
    (site / "datasets" / "__init__.py").write_text("raise ImportError('pyarrow is missing')\n")
    assert _refusal(tmp_path, capsys, monkeypatch, "--reference-site", str(site)).endswith(
        f"error: the reference needs `datasets`, which does not import (with --reference-site {site} on the path): "
        "ImportError: pyarrow is missing")
    (site / "datasets" / "__init__.py").write_text("__version__ = '9.8.7'\n")
    assert lora_benchmark.reference_datasets_version(site) == "9.8.7"


def test_the_lora_benchmark_checks_the_reference_scripts_diffusers_version(tmp_path, capsys, monkeypatch):
    import importlib.metadata

    installed = importlib.metadata.version("diffusers")
    script = tmp_path / "train_text_to_image_lora.py"
    # Older than the script asks: its check_min_version would stop it only after this loop's whole run.
    assert _refusal(tmp_path, capsys, monkeypatch, script='check_min_version("99.0.0.dev0")\n').endswith(
        f"error: --reference {script} needs diffusers 99.0.0.dev0 or later (its check_min_version); "
        f"{installed} is installed")
    script.write_text('from diffusers.utils import check_min_version\n\ncheck_min_version("0.1.0.dev0")\n')
    versions, warning = lora_benchmark.reference_versions(script)
    assert versions == {"reference_min_diffusers": "0.1.0.dev0", "diffusers": installed}
    assert warning.startswith("warning: the reference script is from diffusers 0.1.0.dev0") and installed in warning
    major_minor = ".".join(installed.split(".")[:2])
    script.write_text(f'check_min_version("{major_minor}.0.dev0")\n')
    assert lora_benchmark.reference_versions(script) == (
        {"reference_min_diffusers": f"{major_minor}.0.dev0", "diffusers": installed}, None)


@pytest.mark.parametrize("works, batch, steps, entries", [
    (20, 8, 1, 24), (3, 8, 1, 8), (16, 8, 1, 16), (5, 1, 1, 5),
    (20, 8, 6, 48), (3, 8, 3, 24), (8, 8, 40, 320),  # an epoch as long as the run: on CUDA each starts its workers
    (3, 1, 10**6, 256),  # at most 256 batches
])
def test_the_references_dataset_gives_it_whole_batches(works, batch, steps, entries, tmp_path):
    # Its DataLoader keeps the short last batch: with 20 works at batch 8 it trained 8, 8, 4 (6.67 a step) while
    # this loop trains 8 every step.
    lora_benchmark.write_data(tmp_path, works, 32, batch=batch, steps=steps)
    rows = [json.loads(line) for line in (tmp_path / "imagefolder" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == entries == lora_benchmark.reference_dataset_length(works, batch, steps)
    assert len(rows) % batch == 0 and len(rows) >= batch
    captioned = sorted((tmp_path / "captioned").glob("*.png"))
    assert len(captioned) == works  # this loop's data is the works themselves
    assert len({row["file_name"] for row in rows}) == len(rows)
    uses = {}
    for row in rows:  # each entry is one of the works, with its caption
        data = (tmp_path / "imagefolder" / row["file_name"]).read_bytes()
        [work] = [path for path in captioned if path.read_bytes() == data]
        assert row["text"] == work.with_suffix(".txt").read_text()
        uses[work.name] = uses.get(work.name, 0) + 1
    assert len(uses) == works and max(uses.values()) - min(uses.values()) <= 1


def test_the_reference_gets_loader_workers_on_cuda_only():
    assert lora_benchmark.reference_loader_workers(cuda=False, cores=16) == 0
    assert lora_benchmark.reference_loader_workers(cuda=True, cores=16) == 4
    assert lora_benchmark.reference_loader_workers(cuda=True, cores=2) == 2
    args = argparse.Namespace(reference=Path("ref.py"), base=Path("base"), data="data", resolution=512, batch=8,
                              steps=40, rank=16, scratch="scratch", mixed_precision="bf16")
    argv = lora_benchmark.reference_argv(args, "all", 4)
    assert argv[argv.index("--dataloader_num_workers") + 1] == "4"


FAKE_REFERENCE = """
import json, os, sys
import huggingface_hub.constants
import torch

tiny = torch.tensor([1e-39], dtype=torch.float32)  # a denormal
info = {"argv": sys.argv[1:], "hub_offline": huggingface_hub.constants.HF_HUB_OFFLINE,
        "denormals_flushed": (tiny * 1.0).item() == 0.0, "torchvision_shim": "torchvision.transforms" in sys.modules}
with open(os.environ["FAKE_REFERENCE_REPORT"], "w") as report:
    json.dump(info, report)
weight = torch.nn.Parameter(torch.zeros(1))
optimizer = torch.optim.SGD([weight], lr=0.1)
for _ in range(4):
    weight.sum().backward()
    optimizer.step()
"""


def test_the_reference_child_runs_offline_and_flushes_denormals_as_this_loops_process(tmp_path, monkeypatch):
    import platform

    # HF_HUB_OFFLINE was set with setdefault after huggingface_hub had been imported: no effect. Denormals were
    # flushed only in this loop's process (generation/ml/pipeline.py, on the CPU).
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("FAKE_REFERENCE_REPORT", str(tmp_path / "report.json"))
    reference = tmp_path / "train_text_to_image_lora.py"
    reference.write_text(FAKE_REFERENCE)
    (tmp_path / "scratch").mkdir()
    args = argparse.Namespace(reference=reference, reference_site=None, base=tmp_path / "base", steps=4, batch=8,
                              rank=4, resolution=32, warmup=1, threads=1, mixed_precision="no", compile=False)
    result = lora_benchmark.run_child("reference", args, tmp_path / "scratch", tmp_path / "data")
    assert result["optimizer_steps"] == 4 and result["timed_steps"] == 2
    info = json.loads((tmp_path / "report.json").read_text())
    assert info["hub_offline"] is True
    if platform.machine().lower() in ("x86_64", "amd64"):  # where torch can flush denormals
        assert info["denormals_flushed"] is True
    assert info["torchvision_shim"] is True
    argv = info["argv"]
    assert argv[argv.index("--train_batch_size") + 1] == "8"
    if not torch.cuda.is_available():
        assert argv[argv.index("--dataloader_num_workers") + 1] == "0"


def test_the_benchmark_table_keeps_the_significant_digits_and_records_versions_and_notes(capsys, monkeypatch):
    # At SD sizes on the CPU the table read 0.12 and 0.09 beside a printed ratio of 1.35x.
    monkeypatch.setattr(lora_benchmark, "fp32_matmul_gflops", lambda threads: 90.0)
    args = argparse.Namespace(base=Path("base"), steps=5, warmup=1, batch=1, works=4, rank=16, resolution=512,
                              threads=1, compile=False, mixed_precision="no", repeats=2)
    run = dict(optimizer_steps=5, timed_steps=3, wall_seconds=100.0, threads=1, device="cpu")
    results = {"ours": [dict(run, steps_per_second=0.1234, peak_rss_mb=7400.0),
                        dict(run, steps_per_second=0.1200, peak_rss_mb=7420.0)],
               "reference": [dict(run, steps_per_second=0.09123, peak_rss_mb=7800.0),
                             dict(run, steps_per_second=0.0900, peak_rss_mb=7810.0)]}
    versions = {"reference_min_diffusers": "0.40.0.dev0", "diffusers": "0.42.1", "datasets": "5.2.0"}
    summary = lora_benchmark.summarise(args, {"ours": 1.725e12, "reference": 2.854e12}, results, versions)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["ours", "0.1234"] and lines[2].split()[:2] == ["reference", "0.09123"]
    assert "medians of 2 runs each: this loop 0.1217 steps/s, the reference 0.09062: 1.34x" in "\n".join(lines)
    assert any(line.startswith("note: gradient clipping differs") and "clips none" in line for line in lines)
    printed = json.loads(lines[-1])
    assert printed == json.loads(json.dumps(summary))
    assert printed["versions"] == versions
    assert printed["reference_dataset_length"] == 5 and printed["reference_loader_workers"] == 0
    assert printed["median"]["ours"]["steps_per_second"] == pytest.approx(0.1217)
    assert len(printed["notes"]) == 2


def test_sd_shaped_base_refuses_a_device_it_cannot_draw_on_before_writing(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "bases"
    folder.mkdir()
    out = folder / "base"
    # --device meta crashed after writing OUT/vae/config.json, and the leftover folder made reruns refuse.
    with pytest.raises(SystemExit) as exit_info:
        sd_shaped_base.main(["--kind", "sd15", "--out", str(out), "--device", "meta"])
    assert exit_info.value.code == 2
    assert "error: --device meta: not a device" in capsys.readouterr().err
    # --device cuda on a torch without CUDA raised an AssertionError traceback.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        sd_shaped_base.main(["--kind", "sd15", "--out", str(out), "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "error: --device cuda: CUDA is not available" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


class _FakePipe:
    def __init__(self, fail: bool):
        self.fail = fail

    def to(self, dtype=None):
        return self

    def save_pretrained(self, folder):
        (Path(folder) / "vae").mkdir(parents=True)
        (Path(folder) / "vae" / "config.json").write_text("{}")
        if self.fail:  # as a build killed, or failing, part-way
            raise RuntimeError("failed while saving")
        (Path(folder) / "model_index.json").write_text("{}")


def test_sd_shaped_base_writes_its_folder_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    import generation.ml.architecture

    monkeypatch.setattr(generation.ml.architecture, "parameter_counts", lambda pipe: {"unet": 1e6})
    folder = tmp_path / "bases"
    out = folder / "base"
    stale = folder / ".base.partial-4194305"  # above Linux's largest pid: a build no longer running
    (stale / "vae").mkdir(parents=True)
    monkeypatch.setattr(sd_shaped_base, "build", lambda kind, device: _FakePipe(fail=True))
    with pytest.raises(RuntimeError, match="failed while saving"):
        sd_shaped_base.main(["--kind", "sd15", "--out", str(out)])
    assert not out.exists()  # a rerun can build it
    assert list(folder.iterdir()) == []  # neither its own partial folder nor the stale one is left
    monkeypatch.setattr(sd_shaped_base, "build", lambda kind, device: _FakePipe(fail=False))
    sd_shaped_base.main(["--kind", "sd15", "--out", str(out)])
    assert (out / "model_index.json").is_file() and (out / "vae" / "config.json").is_file()
    assert [path.name for path in folder.iterdir()] == ["base"]

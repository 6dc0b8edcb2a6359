"""The style distance, evaluate_style and the demo styles build, on a tiny
randomly initialised model of the built-in base's shape."""

from __future__ import annotations

import dataclasses
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from generation.ml import demo_styles, scenes
from generation.ml import evaluate_style as evaluate_style_module
from generation.ml import style_metrics as sm
from generation.ml.architecture import TINY_CONFIG, build_pipeline
from generation.ml.classify import classify
from generation.ml.evaluate_base import held_out_scenes
from generation.ml.evaluate_style import adherence, evaluate_style, style_readings
from generation.ml.evaluate_style import main as evaluate_main
from generation.ml.lora_training import WEIGHTS_NAME, LoraTrainingConfig, sha256_file, train_lora
from generation.ml.train_lora import read_data_folder

torch.set_num_threads(1)  # tiny models; see test_lora_training.py

STYLES = ["plain", *scenes.DEMO_STYLES]


def drawn(style: str, first_seed: int, count: int = 16) -> list[Image.Image]:
    return [scenes.illustration(first_seed + i, style).image for i in range(count)]


def test_style_distance_ranks_a_styles_own_works_closest():
    sets_a = {style: sm.summarise(drawn(style, 100)) for style in STYLES}
    sets_b = {style: sm.summarise(drawn(style, 900)) for style in STYLES}
    for style in STYLES:
        own = sm.style_distance(sets_a[style], sets_b[style])
        for other in STYLES:
            if other != style:
                assert own < sm.style_distance(sets_a[style], sets_b[other]), (style, other)


def test_style_distance_ignores_size_and_is_symmetric():
    small = drawn("pixel-art", 5, 8)
    large = [im.resize((256, 256), Image.Resampling.NEAREST) for im in small]
    assert sm.style_distance(small, large) == pytest.approx(0.0, abs=1e-9)
    a, b = drawn("ink-hatching", 5, 8), drawn("pastel-outline", 5, 8)
    assert sm.style_distance(a, b) == pytest.approx(sm.style_distance(b, a))
    assert sm.style_distance(a, b) > 0.5


def test_style_aware_adherence_accepts_the_caption_and_the_styles_own_readings():
    targets = held_out_scenes(24)
    accepted = [style_readings(s, "pastel-outline", 32) for s in targets]
    assert accepted == [style_readings(s, "pastel-outline", 32) for s in targets]  # same layouts every run
    pastel = [scenes.render(s, "pastel-outline", 32) for s in targets]
    for image, readings in zip(pastel, accepted):
        assert all(classify(image)[name] in readings[name] for name in readings)
    # The plain classifier misreads the artist's own pastel drawings; the
    # style-aware score does not hold that against them...
    assert adherence(pastel, targets)["points"] < 80
    assert adherence(pastel, targets, accepted)["points"] == 100
    # ...nor a sample read exactly as its caption says...
    plain = [scenes.render(s, "plain", 32) for s in targets]
    assert adherence(plain, targets, accepted)["points"] == 100
    # ...but drawings of other captions still score low.
    shifted = pastel[1:] + pastel[:1]
    assert adherence(shifted, targets, accepted)["points"] < 60


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    torch.manual_seed(0)
    build_pipeline(TINY_CONFIG).save_pretrained(root / "base")
    works = root / "works"
    demo_styles.draw_evaluation_works("pastel-outline", works, 6)
    config = LoraTrainingConfig(rank=4, alpha=4, learning_rate=1e-2, steps=10, batch_size=4, preview_every=0)
    train_lora(base_path=root / "base", examples=read_data_folder(works), out_dir=root / "adapter",
               config=config, work_dir=root / "work")
    return root


def test_evaluate_style_reports_distances_bound_and_adherence(tiny_setup):
    root = tiny_setup
    result = evaluate_style(base=root / "base", lora=root / "adapter", works=root / "works", n=4, steps=3,
                            style="pastel-outline")
    distance = result["style_distance"]
    for key in ("base_to_works", "lora_to_works", "vae_bound", "works_half_to_half"):
        assert set(distance[key]) == {"palette", "texture", "total"}
        assert distance[key]["total"] == pytest.approx(distance[key]["palette"] + distance[key]["texture"], abs=2e-4)
    assert distance["fraction_closed"] == pytest.approx(
        1 - distance["lora_to_works"]["total"] / distance["base_to_works"]["total"], abs=1e-3)
    assert result["style_prompts"] == "works' captions" and result["n_style_samples"] == 6
    adherence = result["caption_adherence"]
    assert 0 <= adherence["base"]["points"] <= 100 and set(adherence["base"]["accuracy"]) == {
        "colour", "background", "position", "shape"}
    assert adherence["drop_points"] == pytest.approx(adherence["base"]["points"] - adherence["lora"]["points"], abs=0.02)
    # The classifier reads the style's own drawings of the captions well on position and shape.
    in_style = adherence["works_in_style_same_captions"]["accuracy"]
    assert in_style["position"] == 1.0 and "style_aware" in adherence

    # At strength 0 the LoRA's samples are the base's: nothing is closed.
    zero = evaluate_style(base=root / "base", lora=root / "adapter", works=root / "works", n=4, steps=3, scale=0.0)
    assert zero["style_distance"]["lora_to_works"] == zero["style_distance"]["base_to_works"]
    assert zero["style_distance"]["fraction_closed"] == 0.0


def test_evaluate_style_cli_errors(tiny_setup, tmp_path, capsys):
    root = tiny_setup
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(root / "base"), "--lora", str(tmp_path), "--works", str(root / "works")])
    assert exit_info.value.code == 2 and "no pytorch_lora_weights.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main(["--base", str(root / "base"), "--lora", str(root / "adapter"), "--works", str(tmp_path / "x")])
    assert "works folder not found" in capsys.readouterr().err
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((root / "adapter" / "pytorch_lora_weights.safetensors").read_bytes()[:1000])
    for lora, message in [(truncated, "not a readable safetensors file"),
                          (root / "base" / "unet" / "diffusion_pytorch_model.safetensors", "holds no LoRA weights")]:
        with pytest.raises(SystemExit):
            evaluate_main(["--base", str(root / "base"), "--lora", str(lora), "--works", str(root / "works")])
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(SystemExit):
        evaluate_main(["--base", str(root / "base"), "--lora", str(root / "adapter"), "--works", str(root / "works"),
                       "--n", "100000"])
    assert "--n: only" in capsys.readouterr().err.strip().splitlines()[-1]
    for bad in (["--guidance", "nan"], ["--guidance", "-1"], ["--scale", "inf"]):
        with pytest.raises(SystemExit):
            evaluate_main(["--base", str(root / "base"), "--lora", str(root / "adapter"), "--works", str(root / "works"),
                           *bad])
        assert "--guidance must be a number of at least 0" in capsys.readouterr().err.strip().splitlines()[-1]
    for grid in (tmp_path / "grid", tmp_path / "grid.jpg", tmp_path / "folder.png"):
        with pytest.raises(SystemExit):
            evaluate_main(["--base", str(root / "base"), "--lora", str(root / "adapter"), "--works", str(root / "works"),
                           "--grid", str(grid)])
        assert "give a .png file path" in capsys.readouterr().err.strip().splitlines()[-1]


def test_evaluate_style_refuses_an_adapter_of_another_base_before_sampling(tiny_setup, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    build_pipeline(dataclasses.replace(TINY_CONFIG, unet_channels=(16, 16, 48))).save_pretrained(tmp_path / "wider")
    config = LoraTrainingConfig(rank=4, alpha=4, learning_rate=1e-2, steps=1, batch_size=2, preview_every=0)
    train_lora(base_path=tmp_path / "wider", examples=read_data_folder(tiny_setup / "works"),
               out_dir=tmp_path / "foreign", config=config, work_dir=tmp_path / "work")
    sampled = []
    monkeypatch.setattr(evaluate_style_module, "sample", lambda *args, **kwargs: sampled.append(args) or [])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(tiny_setup / "base"), "--lora", str(tmp_path / "foreign"),
                       "--works", str(tiny_setup / "works")])
    assert exit_info.value.code == 2 and sampled == []
    assert "does not fit this base model: size mismatch" in capsys.readouterr().err.strip().splitlines()[-1]


def test_demo_works_are_deterministic_and_upload_sized(tmp_path):
    first = demo_styles.draw_works("ink-hatching", tmp_path / "a", 4)
    second = demo_styles.draw_works("ink-hatching", tmp_path / "b", 4)
    assert first == second
    other = demo_styles.draw_works("pixel-art", tmp_path / "c", 4)
    assert {w["sha256"] for w in first}.isdisjoint({w["sha256"] for w in other})
    for work in first:
        path = tmp_path / "a" / Path(work["file"]).name
        assert Image.open(path).size == (256, 256)
        assert path.with_suffix(".txt").read_text().strip() == work["caption"]
        assert sha256_file(path) == work["sha256"]


def test_demo_style_build_writes_a_verifiable_manifest(tiny_setup, tmp_path):
    root = tiny_setup
    manifest = demo_styles.build_style("pixel-art", base=root / "base", out=tmp_path / "demo", n_works=6,
                                       n_evaluation=4, evaluation_steps=2, steps=6, batch_size=4)
    folder = tmp_path / "demo" / "pixel-art"
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["artist"] == scenes.DEMO_STYLES["pixel-art"].artist and on_disk["bio"]
    assert len(on_disk["works"]) == 6
    for work in on_disk["works"]:
        assert sha256_file(folder / work["file"]) == work["sha256"]
    assert sha256_file(folder / on_disk["adapter"]["file"]) == on_disk["adapter"]["sha256"]
    assert on_disk["base_model"]["sha256"]["unet/diffusion_pytorch_model.safetensors"] == sha256_file(
        root / "base" / "unet" / "diffusion_pytorch_model.safetensors")
    assert on_disk["training"]["steps"] == 6 and on_disk["training"]["config"]["steps"] == 6
    assert "fraction_closed" in on_disk["evaluation"]["style_distance"]
    # Nothing half-built is left beside the finished folder.
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["pixel-art"]


def _add_to_index(args):
    folder, slug = args
    demo_styles.update_index(Path(folder), [slug], {"model_index.json": "abc"})


@pytest.mark.parametrize("arguments, message", [
    (["--works", "0"], "--threads and --works must be at least 1"),
    (["--out", "a-file"], "exists and is not a folder"),
])
def test_demo_styles_cli_errors_are_one_line(arguments, message, tmp_path, capsys):
    (tmp_path / "a-file").write_text("notes")
    arguments = [str(tmp_path / a) if a == "a-file" else a for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        demo_styles.main(["--out", str(tmp_path / "demo"), *arguments])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
    assert (tmp_path / "a-file").read_text() == "notes" and not (tmp_path / "demo").exists()


def test_demo_index_merges_styles_written_side_by_side(tmp_path):
    out = tmp_path / "demo"
    demo_styles.update_index(out, ["pixel-art"], {"model_index.json": "abc"})
    slugs = [f"style-{i}" for i in range(12)]
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_add_to_index, [(str(out), slug) for slug in slugs]))
    index = json.loads((out / "index.json").read_text())
    assert index["styles"] == sorted(["pixel-art", *slugs])
    assert index["base_model"] == {"sha256": {"model_index.json": "abc"}}
    assert index["command"] == f"python -m generation.ml.demo_styles --out {out.as_posix()}"
    assert [p.name for p in out.iterdir()] == ["index.json"]  # no staging file left


# ---------------------------------------------------------------- bad input: one line, before sampling, nothing lost


def refuse_loading(monkeypatch) -> None:
    def load(*args, **kwargs):
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr(evaluate_style_module, "load_base_pipeline", load)


@pytest.mark.parametrize("case, message", [
    ("grid-is-a-work", "--grid {grid}: it is inside the --works folder {works}, where it would replace or add a work; "
                       "give a path outside it"),
    ("grid-new-in-works", "--grid {grid}: it is inside the --works folder"),
    ("grid-in-a-subfolder-of-works", "--grid {grid}: it is inside the --works folder"),
    ("grid-through-a-link-to-works", "--grid {grid}: it is inside the --works folder"),
    ("grid-parent-is-a-file", "--grid {grid}: {tmp}/afile is not a folder"),
    ("grid-parent-not-writable", "--grid {grid}: {tmp}/locked is not writable"),
    ("grid-not-writable", "--grid {grid}: {grid} is not writable"),
    ("grid-is-a-folder", "--grid {grid}: is a folder; give a .png file path"),
    ("steps-too-many", "--steps must be at most 1000 (got 100000000000)"),  # ended as "out of memory"
    ("works-is-a-file", "--works: works folder {tmp}/afile is not a folder"),
    ("unreadable-works", "--works: cannot read {works}: Permission denied"),
    ("seed-too-large", "--seed: 18446744073709551616 is not a seed from -2**63 to 2**64 - 1"),
    ("seed-overflows-with-the-samples", "--seed 18446744073709551615: the 6 samples take seeds up to "
                                        "18446744073709551620, past 2**64 - 1"),
    ("base-without-a-sample-size", "--base: {tmp}/base: its unet/config.json gives no sample_size, so the base's own "
                                   "resolution is unknown"),
    # The works are read now, not after loading the base, the adapter and the VAE pass, and named as train_lora does.
    ("empty-work", "--works: cannot read image 000.png: empty, damaged or not an image"),
    ("truncated-work", "--works: cannot read image 000.png: "),
    ("unreadable-work", "--works: cannot read image 000.png: Permission denied"),
    ("broken-link-work", "--works: 1 image(s) that are broken links or not files: lost.png"),
    ("latin-1-caption", "--works: caption 000.txt is not UTF-8 text (byte 0xe2 at offset 1)"),  # was found after loading
    ("works-in-a-subfolder", "--works: need at least 2 images in {works}, found 0; works in subfolders are not read "
                             "(set-1)"),
    ("two-images-one-caption", "--works: 1 name(s) used by more than one image, which would share one caption: "
                               "000.jpg and 000.png; keep one of each"),
    ("lora-not-finite", "--lora: adapter {lora} holds weights that are not finite numbers (the first: "),
    ("unreadable-lora", "--lora: cannot read adapter {lora}: Permission denied"),
])
def test_evaluate_style_cli_refuses_bad_input_before_loading(case, message, tiny_setup, tmp_path, capsys, monkeypatch):
    from tests.ml.test_lora_training import adapter_with, deny

    works, base, grid, extra = tmp_path / "works", tiny_setup / "base", None, []
    lora = tiny_setup / "adapter"
    shutil.copytree(tiny_setup / "works", works)
    first = sorted(works.glob("*.png"))[0]
    (tmp_path / "afile").write_text("notes")
    if case == "empty-work":
        first.write_bytes(b"")
    elif case == "truncated-work":
        first.write_bytes(first.read_bytes()[:-40])
    elif case == "broken-link-work":
        (works / "lost.png").symlink_to(tmp_path / "gone.png")
    elif case == "latin-1-caption":
        (works / "000.txt").write_bytes("pâle".encode("latin-1"))
    elif case == "works-in-a-subfolder":
        (works / "set-1").mkdir()
        for path in sorted(works.iterdir()):
            if path.is_file():
                path.rename(works / "set-1" / path.name)
    elif case == "two-images-one-caption":
        Image.open(first).convert("RGB").save(works / "000.jpg")
    elif case == "lora-not-finite":
        lora = adapter_with(tmp_path / "nan.safetensors", lora / WEIGHTS_NAME, lambda t: t.fill_(float("nan")))
    elif case == "unreadable-lora":
        lora = lora / WEIGHTS_NAME
    if case == "grid-is-a-work":
        grid = first
    elif case == "grid-new-in-works":
        grid = works / "grid.png"
    elif case == "grid-in-a-subfolder-of-works":
        grid = works / "grids" / "grid.png"
    elif case == "grid-through-a-link-to-works":
        (tmp_path / "link").symlink_to(works)
        grid = tmp_path / "link" / ".." / "link" / first.name
    elif case == "grid-parent-is-a-file":
        grid = tmp_path / "afile" / "grid.png"
    elif case == "grid-parent-not-writable":
        (tmp_path / "locked").mkdir()
        grid = tmp_path / "locked" / "new" / "grid.png"
    elif case == "grid-not-writable":
        grid = tmp_path / "grid.png"
        grid.write_bytes(b"an earlier grid")
    elif case == "grid-is-a-folder":
        grid = tmp_path / "isdir.png"
        grid.mkdir()
    elif case == "steps-too-many":
        extra = ["--steps", "100000000000"]
    elif case == "works-is-a-file":
        works = tmp_path / "afile"
    elif case.startswith("seed"):
        extra = ["--seed", str(2**64) if case == "seed-too-large" else str(2**64 - 1), "--n", "2"]
    elif case == "base-without-a-sample-size":
        base = tmp_path / "base"
        shutil.copytree(tiny_setup / "base", base)
        unet_config = json.loads((base / "unet" / "config.json").read_text())
        (base / "unet" / "config.json").write_text(json.dumps({**unet_config, "sample_size": None}))
    before = sorted((str(p), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))
    refuse_loading(monkeypatch)
    if case == "unreadable-works":
        deny(monkeypatch, works)
    elif case in ("unreadable-work", "unreadable-lora"):
        deny(monkeypatch, first if case == "unreadable-work" else lora)
    elif case in ("grid-parent-not-writable", "grid-not-writable"):
        deny(monkeypatch, tmp_path / "locked" if case == "grid-parent-not-writable" else grid, reading=False)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(base), "--lora", str(lora), "--works", str(works),
                       *(["--grid", str(grid)] if grid else []), *extra])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    expected = message.format(grid=grid, works=works, tmp=tmp_path, lora=lora)
    assert last.startswith("python -m generation.ml.evaluate_style: error: ") and expected in last, last
    monkeypatch.undo()
    assert sorted((str(p), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")) == before


def test_evaluate_style_cli_turns_an_os_error_into_one_line(tiny_setup, tmp_path, capsys, monkeypatch):
    def denied(**kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "works" / "000.png"))

    monkeypatch.setattr(evaluate_style_module, "evaluate_style", denied)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(tiny_setup / "base"), "--lora", str(tiny_setup / "adapter"),
                       "--works", str(tiny_setup / "works")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {tmp_path / 'works' / '000.png'}: Permission denied"


def test_evaluate_style_reads_deep_grey_works_as_grey(tiny_setup, tmp_path, monkeypatch):
    """The works pass through the same conversion as uploads and training data: a 16-bit work is not white."""
    import numpy as np

    works = tmp_path / "works"
    works.mkdir()
    for i in range(2):
        pixels = np.full((64, 64), 32768, dtype=np.uint16)
        pixels[16:48, 16:48] = 8000
        Image.fromarray(pixels).save(works / f"{i}.png")
    seen, summarise = [], sm.summarise
    monkeypatch.setattr(sm, "summarise", lambda images, *args: seen.append(images) or summarise(images, *args))
    evaluate_style(base=tiny_setup / "base", lora=tiny_setup / "adapter", works=works, n=2, steps=1)
    loaded = np.asarray(seen[0][0], dtype=int)
    assert abs(loaded[1, 1, 0] - 128) <= 2 and abs(loaded[16, 16, 0] - 32) <= 2


def test_hidden_files_are_not_works_and_a_caption_in_capitals_is_a_caption(tiny_setup, tmp_path):
    works = tmp_path / "works"
    shutil.copytree(tiny_setup / "works", works)
    for caption in works.glob("*.txt"):
        caption.rename(caption.with_suffix(".TXT"))
    for hidden in (".hidden.png", "._000.png", "._000.txt"):  # what a Mac leaves on a foreign disk
        (works / hidden).write_bytes(b"\0\5\26\7 not an image")
    assert [p.name for p, _ in evaluate_style_module.work_images(works)] == sorted(
        p.name for p in (tiny_setup / "works").glob("*.png"))
    result = evaluate_style(base=tiny_setup / "base", lora=tiny_setup / "adapter", works=works, n=2, steps=1)
    assert result["n_works"] == 6 and result["style_prompts"] == "works' captions"


def test_evaluate_style_refuses_a_file_whose_lora_keys_fit_no_layer_in_one_line(tiny_setup, tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"unet.lora_bogus.weight": torch.zeros(2, 2)}, tmp_path / "odd.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(tiny_setup / "base"), "--lora", str(tmp_path / "odd.safetensors"),
                       "--works", str(tiny_setup / "works"), "--n", "2", "--steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: adapter {tmp_path / 'odd.safetensors'} is not a LoRA for this "
                                            "base model: none of its weights fit its layers")

"""The style distance, evaluate_style and the demo styles build, on a tiny
randomly initialised model of the built-in base's shape."""

from __future__ import annotations

import dataclasses
import json
import re
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


def test_the_interval_of_the_fraction_closed_shows_how_it_moves_with_the_scenes():
    def statistics(styles, first_seed, count):
        return sm.image_statistics([scenes.illustration(first_seed + i, styles[i % len(styles)]).image for i in range(count)])

    def measured(count, paired=True, seed=0):
        # The "LoRA" draws half its scenes in the style and half as the base does: about half of the distance closed.
        base, lora, works = (statistics(styles, 300, count) for styles in (["plain"], ["pixel-art", "plain"], ["pixel-art"]))
        closed = 1 - sm.distance_parts(lora.summary(), works.summary())["total"] / sm.distance_parts(base.summary(), works.summary())["total"]
        return closed, sm.fraction_closed_interval(base, lora, works, paired=paired, seed=seed)

    closed, (low, high) = measured(48)
    assert 0.2 < closed < 0.8 and low < closed < high and high - low > 0.05
    assert measured(48) == (closed, [low, high])  # seeded: the same interval every run
    assert measured(48, seed=1)[1] != [low, high]
    # Any seed the samples take, negative ones too (numpy's generators refuse them; torch's wrap them round 2**64).
    assert measured(48, seed=-1) == measured(48, seed=2**64 - 1)
    _, (low_192, high_192) = measured(192)
    assert high_192 - low_192 < 0.7 * (high - low)  # four times the scenes: about half as wide
    # A LoRA that draws each work exactly closes everything in every resample, when each sample is resampled with
    # the work it was drawn for; resampled apart, the two sets differ.
    base, works = statistics(["plain"], 300, 48), statistics(["pixel-art"], 300, 48)
    assert sm.fraction_closed_interval(base, works, works, paired=True) == [1.0, 1.0]
    assert sm.fraction_closed_interval(base, works, works, paired=False)[0] < 0.95
    same = sm.image_statistics(drawn("plain", 5, 8))
    assert sm.fraction_closed_interval(same, same, same, paired=True) is None  # nothing to close in any resample


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
    assert result["style_prompts_note"] is None  # the captions are read whole
    low, high = distance["fraction_closed_interval"]
    assert low <= high and low < 1 and high > -10
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


def test_a_long_caption_is_reported_once_not_logged_with_every_sample(tiny_setup, tmp_path, capfd):
    """diffusers logged the cut part of each long prompt at each sampling: 17.6 MB for one 3.2 MB caption."""
    root = tiny_setup
    works = tmp_path / "works"
    shutil.copytree(root / "works", works)
    first = sorted(works.glob("*.txt"))[0]
    first.write_text(first.read_text() + " and a red star" * 2000)
    result = evaluate_main(["--base", str(root / "base"), "--lora", str(root / "adapter"), "--works", str(works),
                            "--n", "2", "--steps", "2", "--threads", "1", "--seed", "-1"])
    err = capfd.readouterr().err  # diffusers' log handler holds the stderr of its import: read the descriptor
    assert result["style_prompts_note"].startswith("1 of 6 captions are longer than the text encoder's ")
    assert f"note: {result['style_prompts_note']}" in err and "truncated" not in err and len(err) < 5000
    assert result["seed"] == -1 and result["style_distance"]["fraction_closed_interval"] is not None


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
    for bad, said in ((["--guidance", "nan"], "--guidance must be a number of at least 0 (got nan)"),
                      (["--guidance", "-1"], "--guidance must be a number of at least 0 (got -1)"),
                      (["--scale", "inf"], "--scale must be a finite number (got inf)"),
                      (["--n", "1"], "--n must be at least 2 (got 1)"),
                      (["--steps", "0"], "--steps must be at least 1 (got 0)"),
                      (["--threads", "-2"], "--threads must be at least 1 (got -2)")):
        with pytest.raises(SystemExit):
            evaluate_main(["--base", str(root / "base"), "--lora", str(root / "adapter"), "--works", str(root / "works"),
                           *bad])
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(said)
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
    # Captions are all or nothing, as train_lora's --data has them: one missing or misnamed would silently swap the
    # works' captions for the held-out ones.
    ("work-without-a-caption", "--works: 1 image(s) without a .txt caption: 000.png"),
    ("misnamed-caption", "--works: 1 image(s) without a .txt caption: 000.png"),  # 0.txt beside 000.png
    ("caption-without-a-work", "--works: 1 caption(s) without an image: extra.txt"),
    ("only-a-caption-without-a-work", "--works: 6 image(s) without a .txt caption: 000.png, 001.png, "),
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
    elif case == "work-without-a-caption":
        (works / "000.txt").unlink()
    elif case == "misnamed-caption":
        (works / "000.txt").rename(works / "0.txt")
    elif case == "caption-without-a-work":
        (works / "extra.txt").write_text("a red star on a blue background")
    elif case == "only-a-caption-without-a-work":
        for caption in works.glob("*.txt"):
            caption.unlink()
        (works / "5.txt").write_text("a red star on a blue background")
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
    seen, image_statistics = [], sm.image_statistics
    monkeypatch.setattr(sm, "image_statistics", lambda images, *args: seen.append(images) or image_statistics(images, *args))
    evaluate_style(base=tiny_setup / "base", lora=tiny_setup / "adapter", works=works, n=2, steps=1)
    loaded = np.asarray(seen[0][0], dtype=int)  # the works, measured first
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


def test_works_without_any_caption_are_evaluated_on_the_held_out_captions(tiny_setup, tmp_path):
    works = tmp_path / "works"
    shutil.copytree(tiny_setup / "works", works)
    for caption in works.glob("*.txt"):
        caption.unlink()
    assert [caption for _, caption in evaluate_style_module.work_images(works)] == [None] * 6
    result = evaluate_style(base=tiny_setup / "base", lora=tiny_setup / "adapter", works=works, n=2, steps=1)
    assert result["style_prompts"] == "held-out captions" and result["n_style_samples"] == 2


def watch_vae(pipe) -> list[tuple[str, int, torch.dtype, torch.dtype]]:
    """Records each VAE encode and decode call: which, batch size, the input's dtype, the VAE weights' dtype."""
    seen = []
    for which in ("encode", "decode"):
        original = getattr(pipe.vae, which)

        def recording(tensor, *args, _which=which, _original=original, **kwargs):
            seen.append((_which, tensor.shape[0], tensor.dtype, next(pipe.vae.parameters()).dtype))
            return _original(tensor, *args, **kwargs)

        setattr(pipe.vae, which, recording)
    return seen


@pytest.mark.parametrize("side, budget, batches", [(32, None, [16, 4]), (64, 64 * 64, [1, 1, 1])])
def test_the_vae_bound_passes_the_works_in_the_training_caches_batches(tiny_setup, monkeypatch, side, budget, batches):
    """All the works at once took about 0.6 GB per 512 px work on an SD VAE; now as many as the cache encodes (the
    second case with the cache's budget shrunk to one 64 px work, as a 512 px one takes a minute here)."""
    import numpy as np

    from generation.ml import lora_training
    from generation.ml.lora_training import load_base_pipeline

    if budget:
        monkeypatch.setattr(lora_training, "ENCODE_PIXELS", budget)
    pipe = load_base_pipeline(tiny_setup / "base")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(sum(batches))]
    seen = watch_vae(pipe)
    out = evaluate_style_module.through_vae(pipe, images)
    assert [(which, batch) for which, batch, _, _ in seen] == [
        (which, batch) for batch in batches for which in ("encode", "decode")]
    assert len(out) == len(images) and out[-1].shape == (side, side, 3)
    assert np.allclose(out[-1], evaluate_style_module.through_vae(pipe, images[-1:])[0], atol=1e-4)


@pytest.mark.parametrize("force_upcast, passed_in", [(True, torch.float32), (False, torch.float16)])
def test_the_vae_bound_passes_an_fp16_vae_marked_force_upcast_in_fp32(tmp_path, force_upcast, passed_in):
    """SDXL's VAE overflows in fp16 (NaN); as the training cache does, the works pass through it in fp32, and it is
    left in fp16."""
    import numpy as np

    from generation.ml.lora_training import load_base_pipeline
    from tests.ml.test_pipeline import tiny_sdxl

    tiny_sdxl(tmp_path / "sdxl")
    pipe = load_base_pipeline(tmp_path / "sdxl", "cpu", torch.float16)
    pipe.vae.register_to_config(force_upcast=force_upcast)
    seen = watch_vae(pipe)
    out = evaluate_style_module.through_vae(pipe, [Image.new("RGB", (32, 32), "red")])
    assert [(which, given, weights) for which, _, given, weights in seen] == [
        ("encode", passed_in, passed_in), ("decode", passed_in, passed_in)]
    assert pipe.vae.dtype == torch.float16 and out[0].dtype == np.float32 and np.isfinite(out[0]).all()


def test_fractions_closed_are_null_where_undefined_not_zero(tiny_setup, monkeypatch):
    """0.0 reads as a LoRA that does nothing: where there is nothing to close the fraction is null."""
    from generation.ml.lora_training import load_training_images

    works = sorted((tiny_setup / "works").glob("*.png"))
    same_as_the_works = load_training_images(works, 32)

    def drawing(images):
        return lambda pipe, prompts, **kwargs: [images[i % len(images)] for i in range(len(prompts))]

    # The base already draws the works: no distance to close, and none above the bound.
    monkeypatch.setattr(evaluate_style_module, "sample", drawing(same_as_the_works))
    result = evaluate_style(base=tiny_setup / "base", lora=tiny_setup / "adapter", works=tiny_setup / "works", n=2,
                            steps=1)
    distance = result["style_distance"]
    assert distance["base_to_works"]["total"] == 0
    assert distance["fraction_closed"] is None and distance["fraction_of_closable_closed"] is None
    assert distance["fraction_closed_interval"] is None
    assert '"fraction_closed": null' in json.dumps(result) and result["targets"]["met"] is False
    # The base as far from the works as the bound: the LoRA closed nothing (0), of nothing closable (null).
    other = drawn("plain", 300, 6)
    monkeypatch.setattr(evaluate_style_module, "sample", drawing(other))
    monkeypatch.setattr(evaluate_style_module, "through_vae", lambda pipe, images: other)
    distance = evaluate_style(base=tiny_setup / "base", lora=tiny_setup / "adapter", works=tiny_setup / "works",
                              n=2, steps=1)["style_distance"]
    assert distance["base_to_works"]["total"] > 0 and distance["vae_bound"] == distance["base_to_works"]
    assert distance["fraction_closed"] == 0.0 and distance["fraction_of_closable_closed"] is None


def test_generate_draws_what_the_pipeline_draws_as_images(tiny_setup):
    """generate takes the samples as numbers (to check them) and makes the images itself: the same bytes as the
    pipeline's own images."""
    from generation.ml.lora_training import load_base_pipeline
    from generation.ml.pipeline import generate

    pipe = load_base_pipeline(tiny_setup / "base")
    prompts = [scenes.plain_caption(s) for s in held_out_scenes(3)]
    ours = generate(pipe, prompts, seed=7, steps=2, guidance=5.0)
    generators = [torch.Generator("cpu").manual_seed(7 + i) for i in range(3)]
    theirs = pipe(prompt=prompts, num_inference_steps=2, guidance_scale=5.0, generator=generators).images
    assert [im.tobytes() for im in ours] == [im.tobytes() for im in theirs]


def test_samples_that_are_not_finite_are_refused_in_one_line_not_scored_as_black(tiny_setup, capsys):
    """A LoRA pushed past what the numbers hold (--scale 10000 on a shipped adapter) draws NaN, which the cast to
    8 bits made black images, scored as the LoRA's style."""
    lora = tiny_setup / "adapter"
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(tiny_setup / "base"), "--lora", str(lora), "--works", str(tiny_setup / "works"),
                       "--n", "2", "--steps", "1", "--scale", "1e20"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: samples came out as numbers that are not finite (NaN or infinite; the first with seed 0); "
        f"likely cause: the LoRA at --scale 1e+20 (lower it) or adapter {lora / WEIGHTS_NAME} itself")


def changed_adapter(path: Path, source: Path, rename=lambda key: key, extra: str | None = None) -> Path:
    """A copy of the adapter at `source` (its metadata kept), each key `rename`d, plus a weight named `extra`."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(source, "pt") as handle:
        metadata = handle.metadata()
    tensors = {rename(key): value for key, value in load_file(source).items()}
    if extra:
        tensors[extra] = torch.zeros(4, 32)
    save_file(tensors, path, metadata=metadata)
    return path


@pytest.mark.parametrize("case, unfit, first", [
    ("a-block-renamed", 32, "unet.sideways_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora_A.weight"),
    ("a-text-encoder-layer-it-lacks", 1, "text_encoder.bogus.lora_A.weight"),
    ("a-text-encoder-the-base-lacks", 1, "text_encoder_2.encoder.layers.0.self_attn.q_proj.lora_A.weight"),
])
def test_an_adapter_that_only_partly_fits_the_base_is_refused_in_one_line_before_sampling(
        case, unfit, first, tiny_setup, tmp_path, capsys, monkeypatch):
    """peft loaded the weights that fit, after a warning hundreds of layer names long, and diffusers dropped those
    of a model the base lacks without a word: the adapter was evaluated (or sampled) as if whole."""
    from generation.ml.lora_training import AdapterError, apply_adapters, load_base_pipeline, loaded_adapters

    source = tiny_setup / "adapter" / WEIGHTS_NAME
    if case == "a-block-renamed":
        adapter = changed_adapter(tmp_path / "partial.safetensors", source,
                                  rename=lambda key: key.replace("up_blocks.0.", "sideways_blocks.0."))
    else:
        adapter = changed_adapter(tmp_path / "partial.safetensors", source, extra=first)
    from safetensors.torch import load_file

    held = len(load_file(adapter))
    expected = (f"adapter {adapter} does not fit this base model: {unfit} of its {held} LoRA weights fit no layer of "
                f"it (the first: {first})")
    pipe = load_base_pipeline(tiny_setup / "base")
    with pytest.raises(AdapterError, match=f"^{re.escape(expected)}$"):
        apply_adapters(pipe, [("partial", adapter, 1.0)])
    assert loaded_adapters(pipe) == {} and not pipe.get_list_adapters().get("unet")
    apply_adapters(pipe, [("own", source, 1.0)])  # the pipeline still loads a whole adapter

    sampled = []
    monkeypatch.setattr(evaluate_style_module, "sample", lambda *args, **kwargs: sampled.append(args) or [])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(tiny_setup / "base"), "--lora", str(adapter), "--works", str(tiny_setup / "works"),
                       "--n", "2", "--steps", "1"])
    assert exit_info.value.code == 2 and sampled == []
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: {expected}"
    assert "inconsistency" not in err  # peft's warning


@pytest.mark.parametrize("side, cell", [(32, 128), (64, 128), (100, 100), (256, 256)])
def test_the_grid_draws_cells_of_about_128_px_never_smaller_than_the_images(side, cell, tmp_path):
    """4x the built-in base's 32 px as before; an SD base's 512 px at 1x (4x made a 100 M px grid at 512 px, and
    at 1024 px one Pillow refuses to open)."""
    rows = [[Image.new("RGB", (side, side), "red")] * 3, [Image.new("RGB", (side, side), "blue")] * 2]
    evaluate_style_module.save_grid(tmp_path / "grid.png", rows)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (3 * cell, 2 * cell)
        assert grid.getpixel((cell - 1, cell - 1)) == (255, 0, 0) and grid.getpixel((cell, cell)) == (0, 0, 255)


def test_a_grid_that_cannot_be_written_keeps_the_earlier_one_and_the_measures_are_printed(
        tiny_setup, tmp_path, capsys, monkeypatch):
    rows = [[Image.new("RGB", (32, 32), "red")] * 2]
    grid = tmp_path / "grids" / "grid.png"
    evaluate_style_module.save_grid(grid, rows)
    earlier = grid.read_bytes()
    real_save = Image.Image.save

    def disk_full(image, fp, *args, **kwargs):
        real_save(image, fp, *args, **kwargs)  # part of the file is written, then the disk is full
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(Image.Image, "save", disk_full)
        with pytest.raises(OSError, match="No space left") as refused:
            evaluate_style_module.save_grid(grid, [[Image.new("RGB", (32, 32), "blue")] * 3])
    assert refused.value.filename == str(grid)  # Pillow's own error names no file
    assert grid.read_bytes() == earlier and [p.name for p in grid.parent.iterdir()] == ["grid.png"]

    def grid_refused(path, rows):  # as Pillow fails a write: through the handle, naming no file
        with monkeypatch.context() as patched:
            patched.setattr(Image.Image, "save", disk_full)
            real_save_grid(path, rows)

    real_save_grid = evaluate_style_module.save_grid
    monkeypatch.setattr(evaluate_style_module, "save_grid", grid_refused)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--base", str(tiny_setup / "base"), "--lora", str(tiny_setup / "adapter"),
                       "--works", str(tiny_setup / "works"), "--n", "2", "--steps", "1", "--grid", str(grid)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    printed = json.loads(out.strip().splitlines()[-1])  # minutes of sampling are not lost with the grid
    assert printed["grid"] is None and "distance" in json.dumps(printed)
    assert err.strip().splitlines()[-1] == f"error: the grid was not written: {grid}: No space left on device"

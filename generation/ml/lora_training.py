"""Per-artist style LoRA training: one readable loop, in the manner of
diffusers' `examples/text_to_image/train_text_to_image_lora.py`.

What it does, in order:

1. load the base pipeline (any diffusers Stable Diffusion folder, the built-in
   model included) on the chosen device and dtype;
2. encode every work once through the VAE (and its mirror image when `flip` is
   on) and every caption once through the text encoder (and, for the mirror
   image, with left and right swapped), and cache both in `work_dir` (the
   reference script re-encodes images every step);
3. add a peft `LoraConfig` on the UNet attention projections (`to_q`, `to_k`,
   `to_v`, `to_out.0`), or on every linear and convolution of the UNet
   (`unet_targets="full"`, the built-in base's presets; optionally on the
   text encoder too) and train it with
   AdamW on the noise-prediction loss of the base's own noise schedule
   (epsilon or v-prediction, whatever the base was trained with);
4. checkpoint every `checkpoint_every` steps (LoRA weights, optimizer, LR
   scheduler, step, RNG state; written atomically) so a killed worker resumes
   where it stopped and ends with the same adapter an uninterrupted run gives;
5. save with `save_lora_weights` *with the adapter metadata* (without it
   diffusers silently drops a `lora_alpha` that differs from the rank) into a
   temporary folder, fsync, and rename it into place; return the sha256.

No Django here: the platform's Celery task calls `train_lora` with callbacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors import SafetensorError

from . import WEIGHTS_NAME, sha256_file
from .devices import choose_device_and_dtype
from .images import to_rgb
from .training_config import UNET_TARGET_SETS, LoraTrainingConfig

TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
CHECKPOINT_NAME = "checkpoint.pt"
CACHE_NAME = "cache.pt"
CACHE_FORMAT = 3  # part of the cache's key; 3: mirrored images get their own, left/right-swapped captions


# ---------------------------------------------------------------- interface


@dataclass
class TrainingExample:
    image_path: str  # any size/mode; resized (centre crop) to the base's resolution, RGB
    caption: str


def _base_configs(base_path) -> tuple[dict, dict, dict]:
    """The model index, UNet and VAE configs of a base folder, read without loading it."""
    base = Path(base_path)
    try:
        index = json.loads((base / "model_index.json").read_text())
        unet = json.loads((base / "unet" / "config.json").read_text())
        vae = json.loads((base / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"{base} is not a diffusers model folder ({exc.__class__.__name__}: {exc})") from None
    return index, unet, vae


def native_resolution_of(base_path) -> int:
    """The base's own image size in px, from its config files (UnknownResolution when they do not give it)."""
    _, unet, vae = _base_configs(base_path)
    return _native_resolution(unet, vae, base=base_path)


def base_kind_of(base_path, resolution: int | None = None) -> str:
    """"sd" for Stable Diffusion class folders (SDXL, or a native size of
    256 px and more), "builtin" for the shipped base and other tiny models.
    `resolution`: the training size, used only for a base whose config gives no size of its own."""
    index, unet, vae = _base_configs(base_path)
    if "XL" in str(index.get("_class_name", "")):
        return "sd"
    try:
        native = _native_resolution(unet, vae, base=base_path)
    except UnknownResolution:
        if resolution is None:
            raise
        native = resolution
    return "sd" if native >= 256 else "builtin"


class TrainingCancelled(Exception):
    """Raised when the callbacks ask to stop; the last checkpoint stays in work_dir."""

    checkpoint_step: int | None = None  # the step of the checkpoint kept; None: stopped before the loop began


def stop_if_cancelled(should_cancel: Callable[[], bool], doing: str) -> None:
    """Raises TrainingCancelled ("cancelled while <doing>") when `should_cancel()` says so."""
    if should_cancel():
        raise TrainingCancelled(f"cancelled while {doing}")


class TrainingAbandoned(Exception):
    """Raised by a callback when the run no longer owns its work folder (another run took it over): the loop
    stops where it is and, unlike a cancel, writes no checkpoint over the new owner's."""


class BaseModelError(ValueError):
    """The base model folder cannot be used."""


class UnknownResolution(BaseModelError):
    """The base's config gives no image size of its own (`"sample_size": null`): the resolution must be given."""


class TrainingDataError(ValueError):
    """The training examples cannot be used."""


class TrainingDiverged(RuntimeError):
    """The loss or the LoRA's weights stopped being finite numbers."""


class AdapterError(ValueError):
    """An adapter file that cannot be applied to this pipeline."""


class AdapterFolderError(ValueError):
    """An output folder that saving the adapter would lose something in."""


# Files a desktop drops into any folder it shows: not worth refusing a folder for.
DESKTOP_CLUTTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


def check_adapter_folder(out_dir, *, named=None) -> None:
    """`save_adapter` replaces the whole output folder, so it must be missing,
    empty, or hold an earlier adapter and nothing else. `named`: the path to
    name in the error, when `out_dir` is that folder moved aside."""
    out = Path(out_dir)
    named = named or out
    try:
        if not out.is_dir():
            if out.exists():
                raise AdapterFolderError(f"{named} exists and is not a folder")
            return
        others = sorted(p.name for p in out.iterdir() if p.name not in {WEIGHTS_NAME, *DESKTOP_CLUTTER})
    except OSError as exc:  # a folder this user may not read, or not even look into
        raise AdapterFolderError(f"cannot read {named}: {exc.strerror or exc}") from None
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise AdapterFolderError(f"{named} holds files that are not an adapter ({shown}), and saving replaces "
                                 "the whole folder: give a new or empty folder")


class TrainingCallbacks:
    """Subclass and override; the defaults do nothing."""

    def on_progress(self, step: int, total: int, loss: float, eta_seconds: float | None) -> None:
        pass

    def on_preview(self, step: int, images: list[tuple[str, int, Image.Image]]) -> None:
        pass

    def on_checkpoint(self, step: int) -> None:
        pass

    def on_resume(self, step: int) -> None:
        """Called once, before the first step, with the step the run really goes on from: that of the checkpoint
        resumed, or 0 when there was none or it could not be used (unreadable, or of another base, works or
        settings). What a caller recorded after that step will be done again."""

    def should_cancel(self) -> bool:
        """True stops the run, keeping a checkpoint; raise TrainingAbandoned to stop writing nothing."""
        return False

    def before_saving(self) -> None:
        """Called before the loop writes its work folder or the adapter (the encoded works' cache, each checkpoint,
        the adapter's save); raise TrainingAbandoned to stop there."""

    def on_log(self, line: str) -> None:
        pass


@dataclass
class LoraTrainingResult:
    weights_path: str  # <out_dir>/pytorch_lora_weights.safetensors
    sha256: str
    steps: int
    final_loss: float  # mean loss of the last 10% of steps (a single step's loss is mostly noise level)
    losses: list[float]
    seconds: float  # wall time of this call (loading, encoding, training, previews, saving)
    resumed_from_step: int  # 0 when not resumed
    trainable_parameters: int = 0
    encode_seconds: float = 0.0
    train_seconds: float = 0.0  # summed over this run and any run it resumed
    step_seconds: list[float] = field(default_factory=list)  # each step of this run (previews and checkpoints apart)


# ---------------------------------------------------------------- helpers


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_work_inside_out(work_dir, out_dir) -> None:
    """An AdapterFolderError when the work folder lies inside the output folder, which saving replaces whole."""
    if Path(work_dir).resolve().is_relative_to(Path(out_dir).resolve()):
        raise AdapterFolderError(f"the work folder {work_dir} is inside the output folder {out_dir}, which saving "
                                 "replaces: give them apart")


def atomic_write(path: Path, write: Callable[[Any], None], *, mode: int | None = None) -> None:
    """`write(handle)` to a temporary file beside `path` (`.name.….tmp`), fsync, chmod to `mode` when given
    (mkstemp's is 0600), rename: never a cut file where an earlier one was. An OSError that names no file (one
    raised through the handle) or the temporary one is raised again naming `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    _fsync_dir(path.parent)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def _vae_factor(vae_config: dict) -> int:
    """Pixels per latent along a side: the VAE halves the size at each level after its first."""
    return 2 ** (len(vae_config.get("block_out_channels", (64,))) - 1)


def _native_resolution(unet_config: dict, vae_config: dict, base=None) -> int:
    size = unet_config.get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) and size else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        where = f"{base}: its" if base is not None else "the base's"
        raise UnknownResolution(f"{where} unet/config.json gives no sample_size, so the base's own resolution is "
                                "unknown")
    return size * _vae_factor(vae_config)


def base_fingerprint(base_path) -> str:
    """Identity of a base model folder: file names and contents (files over
    256 MB by size and modification time, so SD-class bases hash quickly)."""
    base = Path(base_path)
    digest = hashlib.sha256()
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        stat = path.stat()
        digest.update(rel.encode() + b"\0")
        if stat.st_size > (256 << 20):
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def load_training_images(paths, resolution: int) -> list[Image.Image]:
    """`load_training_image` of each path; an unreadable file is a TrainingDataError naming it."""
    images = []
    for path in paths:
        try:
            images.append(load_training_image(path, resolution))
        except Exception as exc:
            raise TrainingDataError(f"cannot read training image {path}: {exc}") from exc
    return images


def load_training_image(path, resolution: int) -> Image.Image:
    """RGB at resolution x resolution: EXIF orientation applied, converted as
    uploads are (`images.to_rgb`: 16-bit scaled to 8, transparency flattened on
    white), shorter side scaled (area average when shrinking, bicubic when
    enlarging) and centre-cropped."""
    with warnings.catch_warnings():
        # A very large image is read all the same; the CLI's check_image has said so in one line.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    image = to_rgb(image)
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if new_size != image.size:
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
        image = image.resize(new_size, resample)
    left = (image.width - resolution) // 2
    top = (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# What the loop trains on (README: --device cuda|cuda:N|mps|cpu). torch knows more names (meta, xla, lazy,
# mkldnn, ...), on which a run fails with a traceback or blames the base model once it starts loading.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def device_problem(device) -> str | None:
    """Why `device` cannot be trained on here (None: it can). A name torch does not know raises its RuntimeError."""
    if str(device).partition(":")[0] not in DEVICE_TYPES:  # before torch parses it: it warns about some names
        return "not a device this trains on (give cpu, cuda, cuda:N or mps)"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"CUDA is not available (torch {torch.__version__} was built without it, or no GPU is visible)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"there is no CUDA device {device.index} ({count} found)"
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            return "MPS is not available on this machine"
    return None


def load_base_pipeline(base_path, device=None, dtype=None):
    """The base pipeline, through the loader sampling uses (`pipeline.load_pipeline`)."""
    from .pipeline import load_pipeline  # here: diffusers takes seconds to import

    base = Path(base_path)
    if not (base / "model_index.json").is_file():
        raise BaseModelError(f"{base} is not a diffusers model folder (no model_index.json)")
    try:
        pipe = load_pipeline(base, device=device, dtype=dtype)
    except BaseModelError:
        raise
    except Exception as exc:
        raise BaseModelError(f"cannot load the base model from {base}: {exc.__class__.__name__}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------- encoding


def _is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def _tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def caption_report(tokenizer, captions: list[str]) -> str | None:
    """What the text encoder will not read of the captions, in one line (None: it reads them whole): those cut at
    its length, and words its tokenizer does not know (a word-level one, as the built-in base's, reads each as one
    "unknown"; CLIP's splits any word into pieces it knows, so it has none)."""
    ids = tokenizer(captions, truncation=False, verbose=False).input_ids
    limit = tokenizer.model_max_length
    cut = sum(len(row) > limit for row in ids)
    unknown_id = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids)
    if unknown_id in {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}:
        unknown_id = None  # CLIP's unknown token is its end-of-text one: there is no unknown word to count
    words = [token for row in ids for token in row if token not in special or token == unknown_id]
    unknown = sum(token == unknown_id for token in words) if unknown_id is not None else 0
    parts = []
    if cut:
        parts.append(f"{cut} of {len(captions)} captions are longer than the text encoder's {limit} tokens and are cut there")
    if unknown:
        parts.append(f"{unknown} of the captions' {len(words)} words ({100 * unknown / len(words):.0f}%) are unknown to "
                     "the base's tokenizer and read as one unknown word each")
    return "; ".join(parts) or None


@torch.no_grad()
def encode_text(pipe, captions: list[str], device) -> dict[str, torch.Tensor]:
    """Per-caption conditioning, as the UNet wants it."""
    if _is_sdxl(pipe):
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return {"embeds": prompt_embeds.float().cpu(), "pooled": pooled.float().cpu()}
    ids = _tokenize(pipe.tokenizer, captions).to(device)
    embeds = pipe.text_encoder(ids, return_dict=False)[0]
    return {"embeds": embeds.float().cpu()}


# Works and pixels the VAE encodes at once while caching: 16 works of the
# built-in base's 32 px, one at Stable Diffusion's 512 px or more (its
# encoder's activations take about 1 GB per 512 px image in fp32, more than
# the training step's own).
ENCODE_PIXELS = 512 * 512
ENCODE_BATCH_MAX = 16


@contextlib.contextmanager
def vae_batches(vae, images: list[Image.Image], device):
    """The images as pixel batches for the VAE, at most ENCODE_BATCH_MAX works and ENCODE_PIXELS pixels each (an SD
    VAE takes about 0.6 GB per 512 px work), in the VAE's precision; meanwhile, as diffusers' SDXL pipelines decode,
    a VAE marked `force_upcast` runs in fp32 over an fp16 base (SDXL's overflows in fp16 and gives NaN)."""
    width, height = images[0].size
    batch = max(1, min(ENCODE_BATCH_MAX, ENCODE_PIXELS // (width * height)))
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield (torch.stack([image_to_tensor(im) for im in images[start:start + batch]]).to(device, dtype=vae.dtype)
               for start in range(0, len(images), batch))
    finally:
        if upcast:
            vae.to(torch.float16)


@torch.no_grad()
def encode_images(pipe, images: list[Image.Image], device,
                  should_cancel: Callable[[], bool] = lambda: False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the VAE's latent distribution (unscaled), float32 on CPU, encoded in the VAE's own
    precision; a cancel is heard between batches (minutes of encoding on a CPU for an SD-sized base)."""
    means, stds = [], []
    with vae_batches(pipe.vae, images, device) as batches:
        for pixels in batches:
            stop_if_cancelled(should_cancel, "encoding the works")
            dist = pipe.vae.encode(pixels).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


_LEFT_OR_RIGHT = re.compile(r"\b(left|right)(?=(?:most|wards?)?\b)", re.IGNORECASE)
_LEFT_OR_RIGHT_KANJI = str.maketrans({"左": "右", "右": "左"})  # the platform's other language, Japanese


def mirror_caption(caption: str) -> str:
    """The caption of the mirrored image: "left" and "right" swapped (also in
    "leftmost", "right-hand", ...), keeping their case, and 左 and 右; the rest unchanged."""
    def swap(match: re.Match) -> str:
        word = match.group(1)
        other = "right" if word.lower() == "left" else "left"
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

    return _LEFT_OR_RIGHT.sub(swap, caption).translate(_LEFT_OR_RIGHT_KANJI)


def _data_fingerprint(examples: list[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        try:
            image_hash = sha256_file(example.image_path)
        except OSError as exc:
            raise TrainingDataError(f"cannot read training image {example.image_path}: {exc.strerror or exc}") from exc
        digest.update(image_hash.encode() + b"\0" + example.caption.encode() + b"\0")
    return digest.hexdigest()


def _check_examples(examples: list[TrainingExample]) -> None:
    if not examples:
        raise TrainingDataError("no training examples: a style needs at least one work")
    for example in examples:
        if not os.path.isfile(example.image_path):
            raise TrainingDataError(f"training image not found: {example.image_path}")
        if not example.caption or not example.caption.strip():
            raise TrainingDataError(f"training image has an empty caption: {example.image_path}")


def build_cache(pipe, examples: list[TrainingExample], resolution: int, flip: bool,
                device, cache_path: Path, key: str, log,
                should_cancel: Callable[[], bool] = lambda: False,
                before_saving: Callable[[], None] = lambda: None) -> dict[str, torch.Tensor]:
    """Latents (mean, std; plain and mirrored) and text embeddings, encoded once
    and kept in `cache_path` under `key` (a fingerprint of base, data, resolution, precision).
    A cancel is heard once the works are read, between the batches of their encoding, and before the captions'."""
    if cache_path.is_file():
        try:
            cached = torch.load(cache_path, map_location="cpu", weights_only=True)
            if cached.get("key") == key:
                log(f"using cached latents and text embeddings ({len(examples)} works)")
                return cached
        except Exception:  # a corrupt cache is rebuilt, never trusted
            pass
    images = load_training_images([example.image_path for example in examples], resolution)
    stop_if_cancelled(should_cancel, "reading the works")
    mean, std = encode_images(pipe, images, device, should_cancel)
    cache = {"key": key, "mean": mean, "std": std}
    if flip:
        mirrored = [ImageOps.mirror(im) for im in images]
        cache["mean_flip"], cache["std_flip"] = encode_images(pipe, mirrored, device, should_cancel)
    stop_if_cancelled(should_cancel, "encoding the works")
    sdxl = _is_sdxl(pipe)

    def encoded(texts: list[str]) -> dict[str, torch.Tensor]:
        # Token ids too, for a text-encoder LoRA (SD 1.x/2.x only), which re-encodes every step.
        return {**encode_text(pipe, texts, device),
                "input_ids": _tokenize(pipe.tokenizer, texts) if not sdxl else torch.zeros(0)}

    captions = [e.caption for e in examples]
    if report := caption_report(pipe.tokenizer, captions):
        log(report)
    cache.update(encoded(captions))
    cache.update({f"empty_{k}": v for k, v in encoded([""]).items()})
    if flip:
        # A mirrored "star, top left" shows the star top right: without the swap,
        # every flip would teach the adapter that left means right.
        mirrored_captions = [mirror_caption(c) for c in captions]
        if mirrored_captions != captions:
            cache.update({f"{k}_flip": v for k, v in encoded(mirrored_captions).items()})
    before_saving()
    _atomic_torch_save(cache, cache_path)
    log(f"encoded {len(examples)} works at {resolution} px{' (and their mirror images)' if flip else ''}")
    return cache


# ---------------------------------------------------------------- LoRA plumbing


def add_lora(pipe, config: LoraTrainingConfig) -> list[torch.nn.Parameter]:
    """Freezes the base and adds trainable LoRA layers; returns them (float32)."""
    from peft import LoraConfig

    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.requires_grad_(False)
    pipe.unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                     target_modules=list(UNET_TARGET_SETS[config.unet_targets])))
    modules = [pipe.unet]
    if config.train_text_encoder:  # SD 1.x/2.x only: train_lora refuses it on SDXL
        pipe.text_encoder.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                                 target_modules=TEXT_ENCODER_TARGETS))
        modules.append(pipe.text_encoder)
    params = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # LoRA weights train in fp32 even over an fp16/bf16 base
                params.append(p)
    return params


def lora_state(pipe, config: LoraTrainingConfig) -> dict[str, dict[str, torch.Tensor]]:
    from peft.utils import get_peft_model_state_dict

    state = {"unet": {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(pipe.unet).items()}}
    if config.train_text_encoder:
        state["text_encoder"] = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(pipe.text_encoder).items()}
    return state


def load_lora_state(pipe, state: dict[str, dict[str, torch.Tensor]]) -> None:
    from peft.utils import set_peft_model_state_dict

    for name, tensors in state.items():
        result = set_peft_model_state_dict(getattr(pipe, name), tensors)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise RuntimeError(f"checkpoint does not fit the {name}: unexpected keys {unexpected[:3]}")


def _adapter_metadata(module) -> dict:
    """The peft config to store beside the weights, with `target_modules`
    sorted: peft keeps it as a set, whose order changes from one process to
    the next and would make the same weights hash differently."""
    metadata = module.peft_config["default"].to_dict()
    for key, value in metadata.items():
        if isinstance(value, (set, frozenset, list, tuple)) and all(isinstance(v, str) for v in value):
            metadata[key] = sorted(value)
    return metadata


def canonicalise_safetensors(path) -> None:
    """Rewrites a safetensors header with sorted keys. The writer orders the
    header's keys by a hash map seeded per run, so the same weights would
    give different bytes (and sha256) from one save to the next."""
    path = Path(path)
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little") + text + raw[8 + length:])
        handle.flush()
        os.fsync(handle.fileno())


def _this_machine() -> str:
    """A short hash of this machine's name, in the names of the folders a save makes beside the adapter."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_running(pid: int) -> bool:
    """Whether a process of this id runs on this machine (another user's too)."""
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only asks
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or not a process id at all: taken as running
        return True
    return True


def remove_leftovers_of_killed_saves(out: Path, *, of_ended_processes_only: bool = True) -> None:
    """Removes what a save into `out` killed half-way left beside it (its temporary folder, the earlier adapter
    it had moved aside): only folders named as `save_adapter` names them, holding nothing but an adapter, and by
    default only those of a process of this machine that has ended: a save going on, or one of another machine
    sharing the folder, keeps its own. A caller whose version has ended for good (no save of it can finish)
    removes them all."""
    made_by_a_save = re.compile(
        rf"\.{re.escape(out.name)}\.(?:old-)?(?P<machine>[0-9a-f]{{8}})-(?P<pid>\d+)-\w+(?:\.tmp)?")
    if not out.parent.is_dir():
        return
    for folder in out.parent.iterdir():
        named = made_by_a_save.fullmatch(folder.name)
        if not named or folder.is_symlink() or not folder.is_dir():
            continue
        if of_ended_processes_only and (named["machine"] != _this_machine() or _process_running(int(named["pid"]))):
            continue
        try:
            check_adapter_folder(folder)
        except AdapterFolderError:  # someone put files there: not ours to delete
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _failed_write(exc: SafetensorError, path: Path) -> OSError | None:
    """safetensors' writer reports a failed write (a full disk) as its own error, with the OS's number only in its
    text ("I/O error: No space left on device (os error 28)"): an OSError naming `path`, as any other failed
    write is reported. None for its other errors."""
    number = re.search(r"\(os error (\d+)\)", str(exc))
    if number is None:
        return None
    return OSError(int(number[1]), os.strerror(int(number[1])), str(path))


def save_adapter(pipe, config: LoraTrainingConfig, out_dir) -> tuple[str, str]:
    """Saves the LoRA with its metadata into a temporary folder beside
    `out_dir`, fsyncs, and renames it into place; returns (path, sha256)."""
    from peft.utils import get_peft_model_state_dict

    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers_of_killed_saves(out)
    saver = f"{_this_machine()}-{os.getpid()}"  # tells a later save whether this one is still going on
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{saver}-", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the adapter from a server running as another user
    old = None
    try:
        # peft's own key names: diffusers' older names (convert_state_dict_to_diffusers)
        # cover attention only, and a file mixing both loses its attention
        # layers when loaded.
        kwargs: dict[str, Any] = {
            "unet_lora_layers": get_peft_model_state_dict(pipe.unet),
            "unet_lora_adapter_metadata": _adapter_metadata(pipe.unet),
        }
        if config.train_text_encoder:
            kwargs["text_encoder_lora_layers"] = get_peft_model_state_dict(pipe.text_encoder)
            kwargs["text_encoder_lora_adapter_metadata"] = _adapter_metadata(pipe.text_encoder)
        broken = [key for name, layers in kwargs.items() if name.endswith("_layers")
                  for key, tensor in layers.items() if not torch.isfinite(tensor).all()]
        if broken:  # the last step can blow the weights up after the last loss was checked
            raise TrainingDiverged(f"training diverged: {len(broken)} LoRA tensor(s) not finite, the first "
                                   f"{broken[0]}; {_divergence_advice(config, pipe.unet.dtype)}")
        try:
            type(pipe).save_lora_weights(str(tmp), safe_serialization=True, **kwargs)
        except SafetensorError as exc:
            failed_write = _failed_write(exc, out)
            if failed_write is None:
                raise
            raise failed_write from exc
        weights = tmp / WEIGHTS_NAME
        canonicalise_safetensors(weights)  # also fsyncs
        weights.chmod(0o644)  # safetensors writes 0600, which would hide it from a server running as another user
        digest = sha256_file(weights)
        _fsync_dir(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{saver}-{time.monotonic_ns()}"
            os.replace(out, old)
            # Checked again once moved aside, where nothing new arrives by its old
            # path: files may have come in during the run (the except below moves it back).
            check_adapter_folder(old, named=out)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return str(out / WEIGHTS_NAME), digest


# ---------------------------------------------------------------- the loop


def _divergence_advice(config: LoraTrainingConfig, dtype: torch.dtype) -> str:
    advice = f"lower the learning rate (it was {config.learning_rate:g})"
    if dtype == torch.float16:  # fp16's range is small enough for the base itself to overflow
        advice += ", or train in bf16 or fp32 (--dtype)"
    return advice


def _noise_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def _snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1 - alphas_cumprod).clamp(min=1e-8)


def remaining_seconds(step_seconds: list[float], steps_left: int, grids_left: int = 0,
                      grid_seconds: float | None = None) -> float | None:
    """The steps left times the median of the last 50 steps, plus the preview grids left times the last grid's
    seconds once one has been drawn. A GPU's first step (kernel selection, a compile) takes seconds against a
    fraction of one after: with a mean, an H200 run whose 40 steps took 16 s still showed 35 s left after its
    tenth step, when 5 s were; the median is right from the third. Grids are a good part of a run on the CPU."""
    if len(step_seconds) < 2:
        return None
    return steps_left * statistics.median(step_seconds[-50:]) + grids_left * (grid_seconds or 0.0)


def preview_grids_from(step: int, config: LoraTrainingConfig) -> int:
    """The preview grids still to draw once step `step` is done, its own included."""
    every = config.preview_every
    if not every:
        return 0
    return config.steps // every - (step - 1) // every + (1 if config.steps % every else 0)


def _sdxl_time_ids(resolution: int, batch: int, device, dtype) -> torch.Tensor:
    ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=dtype, device=device)
    return ids.repeat(batch, 1)


def _previews(pipe, config: LoraTrainingConfig, device, resolution: int,
              should_cancel: Callable[[], bool] = lambda: False) -> list[tuple[str, int, Image.Image]]:
    prompts = [p for p in config.preview_prompts for _ in config.preview_seeds]
    seeds = [s for _ in config.preview_prompts for s in config.preview_seeds]
    if not prompts:
        return []
    from .pipeline import quiet_prompt_truncation  # diffusers' import is paid only by a run that draws

    quiet_prompt_truncation(pipe)  # a long preview prompt is said once, at the start (train_lora)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

    def stop_between_sampling_steps(_pipe, _index, _timestep, tensors):
        # A cancel is heard between sampling steps: a preview grid takes minutes on a CPU for an SD-sized base.
        stop_if_cancelled(should_cancel, "drawing previews")
        return tensors
    was_training, was_slicing = pipe.unet.training, pipe.vae.use_slicing
    pipe.unet.eval()
    # One image at a time through the VAE decoder: the whole grid at once
    # raised an SD 1.5-shaped run's peak by 0.9 GB at 256 px on the CPU (one at
    # a time: by nothing), and an SDXL run in fp16, whose VAE decodes in fp32,
    # peaked at 39.8 GB on a GPU against 23.3 GB in bf16 (README).
    pipe.vae.enable_slicing()
    try:
        with torch.no_grad():
            images = pipe(prompt=prompts, generator=generators, height=resolution, width=resolution,
                          num_inference_steps=config.preview_inference_steps,
                          guidance_scale=config.preview_guidance_scale,
                          callback_on_step_end=stop_between_sampling_steps).images
    finally:
        pipe.unet.train(was_training)
        pipe.vae.use_slicing = was_slicing
    return list(zip(prompts, seeds, images))


def _cache_key(base_fp: str, data_fp: str, resolution: int, flip: bool, dtype) -> str:
    return hashlib.sha256(json.dumps([CACHE_FORMAT, base_fp, data_fp, resolution, flip, str(dtype)]).encode()).hexdigest()


def _run_key(cache_key: str, config: LoraTrainingConfig) -> str:
    return hashlib.sha256(json.dumps([cache_key, config.fingerprint_dict()], sort_keys=True).encode()).hexdigest()


def planned_run_key(base_path, examples: list[TrainingExample], config: LoraTrainingConfig, dtype) -> str:
    """The key `train_lora` gives this run's checkpoints (same base, works, resolution, precision and
    settings), worked out from the base's config files without loading it."""
    resolution = config.resolution or native_resolution_of(base_path)
    data_fp = _data_fingerprint(list(examples))
    return _run_key(_cache_key(base_fingerprint(base_path), data_fp, resolution, config.flip, dtype), config)


def checkpoint_run_key(work_dir) -> str | None:
    """The run key of the checkpoint in `work_dir`; None when there is none or it cannot be read.
    Memory-mapped: the tensors are not read."""
    path = Path(work_dir) / CHECKPOINT_NAME
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return checkpoint.get("run_key") if isinstance(checkpoint, dict) else None


def train_lora(*, base_path, examples: list[TrainingExample], out_dir, config: LoraTrainingConfig,
               work_dir, callbacks: TrainingCallbacks | None = None, device=None,
               dtype=None, threads: int | None = None) -> LoraTrainingResult:
    """Trains one style adapter; see the module docstring.

    `work_dir` keeps the encoded cache and the latest checkpoint; a call with
    the same base, data and config resumes from that checkpoint. `device` and
    `dtype` default to CUDA in bf16/fp16 when present, else the CPU in fp32.
    `threads` sets torch's CPU threads for this process (None: leave them);
    the same seed gives the same adapter only at the same thread count."""
    started = time.perf_counter()
    callbacks = callbacks or TrainingCallbacks()
    log = callbacks.on_log
    examples = list(examples)
    _check_examples(examples)
    check_adapter_folder(out_dir)
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        torch.set_num_threads(threads)
    work = Path(work_dir)
    refuse_work_inside_out(work, out_dir)
    # The work folder is made by the first thing saved in it (the encoded works), so a run that fails before
    # leaves no empty folder behind.

    device, dtype = choose_device_and_dtype(device, dtype)
    # Set-up is not interrupted inside a stage (loading an SD-sized base, hashing it, reading the works); a cancel
    # asked during one is heard when it ends, before anything is written.
    pipe = load_base_pipeline(base_path, device, dtype)
    stop_if_cancelled(callbacks.should_cancel, "loading the base model")
    resolution = config.resolution or _native_resolution(dict(pipe.unet.config), dict(pipe.vae.config), base=base_path)
    latent_factor = _vae_factor(dict(pipe.vae.config))
    if resolution % latent_factor:
        raise ValueError(f"resolution {resolution} is not a multiple of the VAE's factor {latent_factor}")
    if config.train_text_encoder and _is_sdxl(pipe):
        raise BaseModelError("a text-encoder LoRA is supported on SD 1.x/2.x bases only, not on SDXL")
    cpu_threads = f", {torch.get_num_threads()} CPU thread(s)" if device.type == "cpu" else ""
    log(f"base {base_path} on {device} ({str(dtype).replace('torch.', '')}{cpu_threads}), {len(examples)} works, "
        f"{resolution} px, rank {config.rank}, alpha {config.alpha}, {config.steps} steps at batch {config.batch_size}")
    if config.preview_every and (report := caption_report(pipe.tokenizer, list(config.preview_prompts))):
        log(f"preview prompts: {report}")

    # 1. The cache: every work and caption encoded once.
    base_fp = base_fingerprint(base_path)
    stop_if_cancelled(callbacks.should_cancel, "fingerprinting the base model")
    data_fp = _data_fingerprint(examples)
    stop_if_cancelled(callbacks.should_cancel, "fingerprinting the works")
    cache_key = _cache_key(base_fp, data_fp, resolution, config.flip, dtype)
    encode_started = time.perf_counter()
    cache = build_cache(pipe, examples, resolution, config.flip, device, work / CACHE_NAME, cache_key, log,
                        callbacks.should_cancel, callbacks.before_saving)
    stop_if_cancelled(callbacks.should_cancel, "encoding the works")  # the cache is whole: the next run uses it
    encode_seconds = time.perf_counter() - encode_started
    run_key = _run_key(cache_key, config)

    # 2. LoRA layers, optimizer, LR schedule: seeded so the same seed gives the same adapter.
    from diffusers.optimization import get_scheduler

    torch.manual_seed(config.seed)
    params = add_lora(pipe, config)
    trainable = sum(p.numel() for p in params)
    # The fused AdamW kernel (CPU and CUDA): the same update in one pass over the
    # weights; 4% of a standard-preset step on a 2-core CPU (198 vs 207 ms).
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(0.9, 0.999),
                                  weight_decay=config.weight_decay, eps=1e-8,
                                  fused=device.type in ("cpu", "cuda"))
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps, num_training_steps=config.steps)
    # Loss scaling over an fp16 base, as accelerate's fp16 mode does: gradients
    # flowing back through fp16 activations underflow to zero without it (on a
    # nearly trained tiny model 80% of the LoRA's gradients were zero unscaled,
    # 52% scaled: those of A, whose B starts at zero). bf16 and fp32 keep fp32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    noise_scheduler = _noise_scheduler(pipe)
    prediction_type = noise_scheduler.config.prediction_type
    scaling = pipe.vae.config.scaling_factor
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0

    step, losses, resumed_from, train_seconds = 0, [], 0, 0.0
    checkpoint_path = work / CHECKPOINT_NAME
    if checkpoint_path.is_file():
        try:
            # Tensors and plain data only: unpickling anything else could run code planted in the work folder.
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            log(f"ignoring an unreadable checkpoint ({exc.__class__.__name__})")
            checkpoint = None
        if checkpoint is not None and checkpoint.get("run_key") == run_key and checkpoint["step"] <= config.steps:
            load_lora_state(pipe, checkpoint["lora"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            if checkpoint.get("scaler"):
                scaler.load_state_dict(checkpoint["scaler"])
            generator.set_state(checkpoint["generator"])
            step = resumed_from = int(checkpoint["step"])
            losses = list(checkpoint["losses"])
            train_seconds = float(checkpoint.get("train_seconds", 0.0))
            log(f"resumed from the checkpoint at step {step}")
        elif checkpoint is not None:
            log("the checkpoint in the work folder belongs to another base, data or config; starting afresh")
    callbacks.on_resume(step)

    def save_checkpoint() -> None:
        callbacks.before_saving()
        _atomic_torch_save({
            "run_key": run_key, "step": step, "lora": lora_state(pipe, config),
            "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict(), "generator": generator.get_state(), "losses": losses,
            "train_seconds": train_seconds, "config": config.to_dict(),
        }, checkpoint_path)
        callbacks.on_checkpoint(step)
        log(f"checkpoint at step {step}")

    n = len(examples)
    mean, std = cache["mean"], cache["std"]
    mean_flip, std_flip = cache.get("mean_flip"), cache.get("std_flip")
    embeds, pooled = cache["embeds"], cache.get("pooled")
    input_ids = cache.get("input_ids")
    embeds_flip, pooled_flip = cache.get("embeds_flip", embeds), cache.get("pooled_flip", pooled)
    input_ids_flip = cache.get("input_ids_flip", input_ids)
    sdxl = _is_sdxl(pipe)
    pipe.unet.train()
    # The compiled module shares the UNet's parameters; previews and saving use the UNet itself.
    unet = torch.compile(pipe.unet) if config.compile_unet else pipe.unet
    if config.train_text_encoder:
        pipe.text_encoder.train()
    last_saved = step
    step_times: list[float] = []
    grid_seconds = None  # the last preview grid's, drawing and recording it
    try:
        while step < config.steps:
            if callbacks.should_cancel():
                raise TrainingCancelled(f"cancelled at step {step}")
            tick = time.perf_counter()
            # Everything random in a step comes from one generator whose state the checkpoint keeps.
            idx = torch.randint(0, n, (config.batch_size,), generator=generator)
            use_flip = (torch.rand(config.batch_size, generator=generator) < 0.5) if mean_flip is not None \
                else torch.zeros(config.batch_size, dtype=torch.bool)
            m = torch.where(use_flip[:, None, None, None], mean_flip[idx] if mean_flip is not None else mean[idx], mean[idx])
            s = torch.where(use_flip[:, None, None, None], std_flip[idx] if std_flip is not None else std[idx], std[idx])
            eps_latent = torch.randn(m.shape, generator=generator)
            noise = torch.randn(m.shape, generator=generator)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (config.batch_size,),
                                      generator=generator)
            latents = ((m + s * eps_latent) - shift) * scaling
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            if prediction_type == "epsilon":
                target = noise
            elif prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                raise BaseModelError(f"unsupported prediction type {prediction_type!r}")

            if config.caption_dropout > 0:
                drop = torch.rand(config.batch_size, generator=generator) < config.caption_dropout
            else:
                drop = torch.zeros(config.batch_size, dtype=torch.bool)
            if config.train_text_encoder and not sdxl:
                ids = torch.where(use_flip[:, None], input_ids_flip[idx], input_ids[idx])
                ids = torch.where(drop[:, None], cache["empty_input_ids"].expand_as(ids), ids)
                cond = pipe.text_encoder(ids.to(device), return_dict=False)[0]
            else:
                cond = torch.where(use_flip[:, None, None], embeds_flip[idx], embeds[idx])
                cond = torch.where(drop[:, None, None], cache["empty_embeds"].expand_as(cond), cond)
                cond = cond.to(device, dtype)
            kwargs = {}
            if sdxl:
                text_embeds = torch.where(use_flip[:, None], pooled_flip[idx], pooled[idx])
                text_embeds = torch.where(drop[:, None], cache["empty_pooled"].expand_as(text_embeds), text_embeds)
                kwargs["added_cond_kwargs"] = {
                    "text_embeds": text_embeds.to(device, dtype),
                    "time_ids": _sdxl_time_ids(resolution, config.batch_size, device, dtype),
                }
            pred = unet(noisy.to(device, dtype), timesteps.to(device), cond, return_dict=False, **kwargs)[0]
            target = target.to(device)
            if config.snr_gamma is None:
                loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
            else:
                snr = _snr(noise_scheduler, timesteps)
                weight = torch.minimum(snr, torch.full_like(snr, config.snr_gamma))
                weight = weight / (snr + 1) if prediction_type == "v_prediction" else weight / snr.clamp(min=1e-8)
                loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                loss = (loss * weight.to(device)).mean()
            if not torch.isfinite(loss):  # going on would only save a broken adapter
                raise TrainingDiverged(f"training diverged: the loss became {loss.item():g} at step {step + 1}; "
                                       f"{_divergence_advice(config, dtype)}")
            scaler.scale(loss).backward()
            if config.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            scaler.step(optimizer)  # skipped when a scaled gradient overflowed
            scaler.update()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            step += 1
            value = float(loss.detach())
            losses.append(value)
            elapsed = time.perf_counter() - tick
            train_seconds += elapsed
            step_times.append(elapsed)
            eta = remaining_seconds(step_times, config.steps - step, preview_grids_from(step, config), grid_seconds)
            callbacks.on_progress(step, config.steps, value, eta)
            if step % config.checkpoint_every == 0 and step < config.steps:
                save_checkpoint()
                last_saved = step
            if config.preview_every and (step % config.preview_every == 0 or step == config.steps):
                grid_started = time.perf_counter()
                callbacks.on_preview(step, _previews(pipe, config, device, resolution, callbacks.should_cancel))
                grid_seconds = time.perf_counter() - grid_started
                pipe.unet.train()
    except TrainingCancelled as cancelled:
        if step > last_saved or not checkpoint_path.is_file():
            save_checkpoint()
        log(f"stopped at step {step}; checkpoint kept in {work}")  # a cancel, Ctrl-C, or (on the platform) a retirement
        cancelled.checkpoint_step = step
        raise

    pipe.unet.eval()
    # The finished run's checkpoint is the final state, written first: a
    # re-delivered task, or a run whose saving failed, resumes at the last step
    # and only saves.
    if step > resumed_from or not checkpoint_path.is_file():
        save_checkpoint()
    callbacks.before_saving()
    weights_path, digest = save_adapter(pipe, config, out_dir)
    tail = losses[-max(1, len(losses) // 10):]
    final_loss = float(sum(tail) / len(tail)) if tail else float("nan")
    seconds = time.perf_counter() - started
    log(f"saved {weights_path} (sha256 {digest[:12]}), final loss {final_loss:.4f}, {seconds:.1f} s")
    return LoraTrainingResult(
        weights_path=weights_path, sha256=digest, steps=step, final_loss=final_loss, losses=losses,
        seconds=seconds, resumed_from_step=resumed_from, trainable_parameters=trainable,
        encode_seconds=encode_seconds, train_seconds=train_seconds, step_seconds=step_times,
    )


# ---------------------------------------------------------------- using adapters


def _adapter_location(weights_path) -> tuple[str, str]:
    path = Path(weights_path)
    if path.is_dir():
        return str(path), WEIGHTS_NAME
    return str(path.parent), path.name


def checked_adapter_file(path) -> Path:
    """The weights file of an adapter given as its folder or as the file itself, checked as below: for a CLI
    to refuse a bad adapter before it spends seconds loading the base."""
    path = Path(path)
    weights = Path(*_adapter_location(path))
    if not weights.is_file():
        raise AdapterError(f"no {WEIGHTS_NAME} in {path}" if path.is_dir() else f"no such folder or file {path}")
    check_adapter_file(weights)
    return weights


def check_adapter_file(path) -> None:
    """An AdapterError in one line for a file that cannot be read, is not safetensors, holds no LoRA weights, or
    holds weights that are not finite numbers (they would draw NaN images that pass for a result)."""
    from safetensors import safe_open

    try:
        with open(path, "rb"):  # safetensors reports a file it may not read as missing
            pass
    except OSError as exc:
        raise AdapterError(f"cannot read adapter {path}: {exc.strerror or exc}") from None
    try:
        with safe_open(str(path), "pt") as handle:
            keys = sorted(handle.keys())
            if not any("lora" in key for key in keys):
                raise AdapterError(f"cannot load adapter {path}: it holds no LoRA weights")
            for key in keys:
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise AdapterError(f"adapter {path} holds weights that are not finite numbers (the first: {key})")
    except AdapterError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise AdapterError(f"cannot load adapter {path}: not a readable safetensors file ({exc})") from None


@contextlib.contextmanager
def _diffusers_load_errors_muted():
    """diffusers logs an error as long as the exception it then raises (a line per mismatched tensor, hundreds for
    an adapter of another base): the AdapterError says it in one line. Its warnings still show.
    transformers, loading a text-encoder LoRA, reports every base weight as "MISSING ... newly initialized" (a
    line each, about 200 for SD's CLIP) though none is: its warnings are muted meanwhile.
    diffusers also warns, loading any adapter without a text-encoder LoRA (most of this project's), that the text
    encoder has no LoRA keys: what was asked for, so that warning is dropped too."""
    logger = logging.getLogger("diffusers.loaders.peft")
    lora_base_logger = logging.getLogger("diffusers.loaders.lora_base")
    transformers_logger = logging.getLogger("transformers")
    transformers_level = transformers_logger.level

    def below_error(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    def not_the_missing_text_encoder_lora(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No LoRA keys associated to")

    logger.addFilter(below_error)
    lora_base_logger.addFilter(not_the_missing_text_encoder_lora)
    transformers_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.removeFilter(below_error)
        lora_base_logger.removeFilter(not_the_missing_text_encoder_lora)
        transformers_logger.setLevel(transformers_level)


# The layer a LoRA weight belongs to: its name up to `.lora_A.weight`, `.lora_B.bias`, `.lora_magnitude_vector`
# (DoRA), `.lokr_w1` (LoKr) or `.alpha`, as diffusers and peft read it.
_LORA_WEIGHT_LAYER = re.compile(r"^(.+?)\.(?:lora|lokr_|alpha$)")


def lora_weights_fitting_no_layer(pipe, folder, weight_name) -> tuple[list[str], int]:
    """The adapter's LoRA weights that name no layer of the pipeline's models (sorted), and how many it holds,
    read as `load_lora_weights` reads them: diffusers' own conversion of other trainers' formats, then each weight
    under its model's prefix (`unet.`, `text_encoder.`, `text_encoder_2.`). diffusers loads such a weight into nothing
    without an error, so an adapter of which some weights fit would otherwise pass as whole."""
    from diffusers.utils import (
        convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft,
    )

    state_dict, _alphas = pipe.lora_state_dict(folder, weight_name=weight_name,
                                               **({"unet_config": pipe.unet.config} if _is_sdxl(pipe) else {}))
    models = {name: getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2")}
    unfit = [key for key in state_dict if key.partition(".")[0] not in models or models[key.partition(".")[0]] is None]
    for prefix, model in models.items():
        weights = {key[len(prefix) + 1:]: value for key, value in state_dict.items() if key.startswith(prefix + ".")}
        if model is None or not weights:
            continue
        try:  # as diffusers converts them before loading (`load_lora_adapter`, `_load_lora_into_text_encoder`)
            if prefix == "unet":
                if "lora_A" not in next(iter(weights)):
                    weights = convert_unet_state_dict_to_peft(weights)
            else:
                weights = convert_state_dict_to_peft(convert_state_dict_to_diffusers(weights))
                if not hasattr(model, "text_model"):
                    weights = {key.removeprefix("text_model."): value for key, value in weights.items()}
        except ValueError:  # a format diffusers cannot tell: the names as they are
            pass
        layers = {name for name, _ in model.named_modules()}
        for key in weights:
            layer = _LORA_WEIGHT_LAYER.match(key)
            if layer is None or layer.group(1) not in layers:
                unfit.append(f"{prefix}.{key}")
    return sorted(unfit), len(state_dict)


def apply_adapters(pipe, adapters: Iterable[tuple[str, Any, float]]) -> None:
    """Activates the given (name, weights path, scale) adapters, mixed.

    Each adapter is loaded once and kept on the pipeline under its name (load
    again only if the same name now points at another file); the active set
    and the scales are then set explicitly (loading makes an adapter active).
    An empty list disables every adapter."""
    adapters = list(adapters)
    if not adapters:
        disable_adapters(pipe)
        return
    sources: dict[str, str] = pipe.__dict__.setdefault("_style_adapter_sources", {})
    for name, weights_path, _scale in adapters:
        folder, weight_name = _adapter_location(weights_path)
        source = str(Path(folder, weight_name).resolve())
        if sources.get(name) == source:
            continue
        if not Path(source).is_file():  # diffusers would look for it on the hub
            raise AdapterError(f"no adapter file at {source}")
        check_adapter_file(source)
        if name in sources:
            pipe.delete_adapters(name)
            del sources[name]
        not_for_this_base = f"adapter {source} is not a LoRA for this base model: none of its weights fit its layers"
        try:
            with _diffusers_load_errors_muted():
                unfit, held = lora_weights_fitting_no_layer(pipe, folder, weight_name)
                if unfit and len(unfit) == held:
                    raise AdapterError(not_for_this_base)
                if unfit:  # checked before loading: peft would load the rest after a warning hundreds of names long
                    raise AdapterError(f"adapter {source} does not fit this base model: {len(unfit)} of its {held} "
                                       f"LoRA weights fit no layer of it (the first: {unfit[0]})")
                pipe.load_lora_weights(folder, weight_name=weight_name, adapter_name=name)
        except AdapterError:
            raise
        except (RuntimeError, ValueError, OSError) as exc:
            lines = str(exc).splitlines() or [exc.__class__.__name__]
            # diffusers lists every mismatched tensor; the first says enough
            mismatch = next((line.strip() for line in lines if "size mismatch" in line), None)
            if mismatch:
                raise AdapterError(f"adapter {source} does not fit this base model: {mismatch}") from exc
            raise AdapterError(f"cannot load adapter {source}: {lines[0]}") from exc
        except (IndexError, KeyError) as exc:  # diffusers reading LoRA names that match no layer it knows
            raise AdapterError(not_for_this_base) from exc
        if not any(name in names for names in pipe.get_list_adapters().values()):  # diffusers loaded nothing, silently
            raise AdapterError(not_for_this_base)
        sources[name] = source
    pipe.set_adapters([a[0] for a in adapters], adapter_weights=[float(a[2]) for a in adapters])
    pipe.enable_lora()


def disable_adapters(pipe) -> None:
    """Generation from the bare base (the loaded adapters stay cached)."""
    if pipe.__dict__.get("_style_adapter_sources"):
        pipe.disable_lora()


def remove_adapter(pipe, name: str) -> None:
    """Unloads one adapter (a retired version must not stay usable)."""
    sources = pipe.__dict__.get("_style_adapter_sources", {})
    if name in sources:
        pipe.delete_adapters(name)
        del sources[name]


def loaded_adapters(pipe) -> dict[str, str]:
    return dict(pipe.__dict__.get("_style_adapter_sources", {}))

"""The base model record for the configured folder, fingerprinted so adapters name exactly what they were trained on."""

import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from .ml import BUILTIN_BASE_MODEL, sha256_file
from .models import BaseModel

FINGERPRINTED_SUFFIXES = {".json", ".safetensors", ".bin", ".txt", ".model"}


@lru_cache(maxsize=8)
def _folder_fingerprint(stamp):
    digest = hashlib.sha256()
    for relative, absolute, _mtime, _size in stamp:
        digest.update(f"{relative}:{sha256_file(absolute)}\n".encode())
    return digest.hexdigest()


_hashing = threading.Lock()


def folder_fingerprint(path):
    """sha256 over the folder's weights and configs (name and sha256 of each); recomputed only when a file changes.
    The first call of a process hashes every weight (seconds for an SD-sized base); concurrent first requests wait
    for that one instead of each hashing again."""
    path = Path(path)
    stamp = tuple(
        sorted(
            (str(file.relative_to(path)), str(file), file.stat().st_mtime_ns, file.stat().st_size)
            for file in path.rglob("*")
            if file.is_file() and file.suffix in FINGERPRINTED_SUFFIXES
        )
    )
    with _hashing:
        return _folder_fingerprint(stamp)


def base_model_kind(path):
    index = json.loads((Path(path) / "model_index.json").read_text())
    if index.get("_class_name") == "StableDiffusionXLPipeline":
        return BaseModel.Kind.SDXL
    if Path(path).resolve() == BUILTIN_BASE_MODEL.resolve():
        return BaseModel.Kind.BUILTIN
    return BaseModel.Kind.SD


def base_model_on_this_host():
    """Whether settings.BASE_MODEL is a diffusers folder here (a web host may have none)."""
    return (Path(settings.BASE_MODEL) / "model_index.json").is_file()


def base_model_current():
    """The BaseModel row for settings.BASE_MODEL as it is on disk now (a new row when the folder changed)."""
    path = Path(settings.BASE_MODEL)
    if not base_model_on_this_host():
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"BASE_MODEL {str(path)!r} is not a diffusers folder (no model_index.json).")
    base, _ = BaseModel.objects.get_or_create(
        path=str(path.resolve()),
        sha256=folder_fingerprint(path),
        defaults={"name": path.name, "kind": base_model_kind(path)},
    )
    return base


def current_base_sha256():
    """The fingerprint of the base generation samples from now: BASE_MODEL's folder as it is here or, on a host
    without the folder (a web host may have none), the one last recorded for that path; None if none was."""
    path = Path(settings.BASE_MODEL)
    if base_model_on_this_host():
        return folder_fingerprint(path)
    recorded = BaseModel.objects.filter(path=str(path.resolve())).order_by("-created_at", "-pk")
    return recorded.values_list("sha256", flat=True).first()


def trained_on_current_base(adapter_version):
    """Whether the version's base is, weight for weight, the one generation samples from now."""
    return adapter_version.base_model.sha256 == current_base_sha256()

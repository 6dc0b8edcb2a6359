"""The base model record for the configured folder, fingerprinted so adapters name exactly what they were trained on."""

import contextlib
import hashlib
import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from .ml import BUILTIN_BASE_MODEL, sha256_file
from .models import BaseModel

FINGERPRINTED_SUFFIXES = {".json", ".safetensors", ".bin", ".txt", ".model"}


FINGERPRINT_RECORD_ENTRIES = 16  # folders (or versions of one) remembered; an older one is simply hashed again

logger = logging.getLogger(__name__)


def _fingerprint_record_path():
    return Path(settings.DATA_DIR) / "base-model-fingerprints.json"


def _recorded_fingerprints():
    """stamp digest -> fingerprint, as this host recorded them; an unreadable record is as good as none."""
    try:
        recorded = json.loads(_fingerprint_record_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the base-model fingerprint record %s (%s); the base is hashed again", _fingerprint_record_path(), exc)
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _record_fingerprint(stamp_digest, fingerprint):
    record = _recorded_fingerprints()
    record.pop(stamp_digest, None)
    record[stamp_digest] = fingerprint
    kept = dict(list(record.items())[-FINGERPRINT_RECORD_ENTRIES:])
    path = _fingerprint_record_path()
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # the hashing lock keeps one writer per process
    try:
        partial.write_text(json.dumps(kept))
        os.replace(partial, path)
    except OSError as exc:
        logger.warning("could not record the base-model fingerprint in %s (%s); the next process hashes it again", path, exc)
        with contextlib.suppress(OSError):
            partial.unlink()


@lru_cache(maxsize=8)
def _folder_fingerprint(stamp):
    # Every file's path, inode, size, mtime and ctime unchanged means the same weights (ctime cannot be set back by
    # cp -p, rsync or tar as mtime can); recorded on disk, a new process (a web worker, a retrain inside a
    # withdrawal's transaction) need not read the weights again.
    stamp_digest = hashlib.sha256(repr(stamp).encode()).hexdigest()
    recorded = _recorded_fingerprints().get(stamp_digest)
    if isinstance(recorded, str):
        return recorded
    digest = hashlib.sha256()
    for relative, absolute, *_stat in stamp:
        digest.update(f"{relative}:{sha256_file(absolute)}\n".encode())
    _record_fingerprint(stamp_digest, digest.hexdigest())
    return digest.hexdigest()


_hashing = threading.Lock()


def _identity(stat):
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def folder_fingerprint(path):
    """sha256 over the folder's weights and configs (name and sha256 of each); recomputed only when a file changes.
    The first call on a host hashes every weight (seconds for an SD-sized base) and records the result in the data
    folder; concurrent first requests wait for that one instead of each hashing again."""
    path = Path(path)
    stamp = tuple(
        sorted(
            (str(file.relative_to(path)), str(file), *_identity(file.stat()))
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

import io
import itertools
import json
import time
from pathlib import Path

import pytest

from django.conf import settings

from generation.models import AdapterVersion, TrainingJob
from illustration_platform.celery import app
from licensing.models import ConsentTerms
from licensing.services import dataset_snapshot_create, work_opt_in, work_upload
from tests.factories import ArtistFactory
from tests.support.workers import celery_worker


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory):
    """A randomly initialised model in the built-in architecture, small enough to train in seconds."""
    from generation.ml.architecture import TINY_CONFIG, build_pipeline

    folder = tmp_path_factory.mktemp("tiny-base")
    build_pipeline(TINY_CONFIG).save_pretrained(folder)
    return folder


@pytest.fixture
def generation_roots(settings, tmp_path, tiny_base_model):
    settings.BASE_MODEL = tiny_base_model
    settings.ADAPTER_ROOT = tmp_path / "adapters"
    settings.TRAINING_WORK_ROOT = tmp_path / "training"
    settings.STYLE_MIN_WORKS = 4
    # A few steps are enough to show every part of a training; checkpoints often enough to kill between them.
    settings.TRAINING_PRESET_OVERRIDES = {
        "quick": {"steps": 12, "checkpoint_every": 4, "preview_every": 6},
        "thorough": {"steps": 60, "checkpoint_every": 5, "preview_every": 0},
    }
    return settings


def drawing_png(seed, style="pastel-outline"):
    from generation.ml.scenes import illustration

    drawn = illustration(seed, style)
    buffer = io.BytesIO()
    drawn.image.resize((256, 256)).save(buffer, format="PNG")
    return buffer.getvalue(), drawn.caption


# Drawings of their own by default: two artists' works of one drawing would be held as copies of each other.
_unused_seeds = itertools.count(100_000, 1_000)


def opted_in_artist(count, style="pastel-outline", first_seed=None):
    """An artist with `count` captioned works opted in under the current terms."""
    artist = ArtistFactory()
    if first_seed is None:
        first_seed = next(_unused_seeds)
    works = []
    for seed in range(first_seed, first_seed + count):
        data, caption = drawing_png(seed, style)
        result = work_upload(artist=artist, data=data, filename=f"work-{seed}.png", caption=caption)
        assert result.status == "created", result.message
        work_opt_in(work=result.work, actor=artist.user)
        works.append(result.work)
    return artist, works


def ready_version(artist, *, publish=True, number=None):
    """A version marked ready without training (for consent and selector tests); its weights file is a stand-in."""
    from generation.base_models import base_model_current
    from generation.services import adapter_version_publish, style_for_artist

    style = style_for_artist(artist=artist)
    number = number or (style.versions.count() + 1)
    weights = Path(settings.ADAPTER_ROOT) / f"style-{style.pk}" / f"v{number}" / "pytorch_lora_weights.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(json.dumps({"stand-in": number}).encode())
    version = AdapterVersion.objects.create(
        style=style, number=number, snapshot=dataset_snapshot_create(artist=artist), base_model=base_model_current(),
        preset="quick", status=AdapterVersion.Status.READY, weights_sha256="0" * 64,
        weights_path=str(weights.relative_to(settings.ADAPTER_ROOT)),
    )
    TrainingJob.objects.create(adapter_version=version, total_steps=1, step=1)
    if publish:
        adapter_version_publish(adapter_version=version)
    return version


def finished_result(folder, data=b"weights"):
    """What train_lora returns once it has saved an adapter into `folder` (written by hand here)."""
    import hashlib

    weights = Path(folder) / "pytorch_lora_weights.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(data)

    class Result:
        weights_path = str(weights)
        sha256 = hashlib.sha256(data).hexdigest()
        steps, final_loss, seconds, resumed_from_step = 12, 0.1, 1.0, 0

    return Result


@pytest.fixture
def training_terms(db):
    assert ConsentTerms.current(ConsentTerms.Kind.TRAINING) is not None, "the first consent terms ship in a migration"


def empty_training_queue():
    """Drop every message waiting on the `training` queue, as a broker that lost them would."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_declare("training", durable=True, auto_delete=False)
        channel.queue_purge("training")


@pytest.fixture
def start_training_worker(tmp_path):
    """Start a `training` worker on the test process's own broker; stopped at the end of the test."""
    empty_training_queue()
    started = []

    def start(**extra_env):
        broker_env = {"CELERY_BROKER_FOLDER": str(settings.CELERY_BROKER_FOLDER)} if settings.CELERY_BROKER_URL.startswith("filesystem") else {}
        env = {
            **broker_env,
            "BASE_MODEL": str(settings.BASE_MODEL),
            "ADAPTER_ROOT": str(settings.ADAPTER_ROOT),
            "TRAINING_WORK_ROOT": str(settings.TRAINING_WORK_ROOT),
            "STYLE_MIN_WORKS": str(settings.STYLE_MIN_WORKS),
            "TRAINING_PRESET_OVERRIDES": json.dumps(settings.TRAINING_PRESET_OVERRIDES),
            **extra_env,
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        context = celery_worker(settings.CELERY_BROKER_URL, env, ["training"], log_path)
        process = context.__enter__()
        started.append((context, log_path))
        return process

    yield start
    for context, _log in reversed(started):
        context.__exit__(None, None, None)


def wait_for(predicate, timeout, what, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    jobs = list(AdapterVersion.objects.values("status", "job__step", "job__total_steps", "job__log"))
    tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs if log.exists())
    pytest.fail(f"timed out waiting for {what}; versions: {jobs}; worker logs:\n{tails}")

"""A training whose loss stops being a number fails with that cause; nothing is saved, nothing published."""

import pytest

from generation import services
from generation.models import AdapterVersion
from generation.training import run_training_job

from .conftest import opted_in_artist

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


def test_a_diverging_training_fails_with_its_cause_and_publishes_nothing(settings, django_capture_on_commit_callbacks):
    settings.TRAINING_PRESET_OVERRIDES = {"quick": {"steps": 6, "learning_rate": 1000.0, "preview_every": 0}}
    artist, _works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):  # run in this process, not queued
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick",
                                                publish_when_ready=True)
    finished = run_training_job(adapter_version_id=version.pk, worker="test")
    assert finished.status == AdapterVersion.Status.FAILED
    # The artist reads what happened and what they can do; the loop's advice for operators stays in the log.
    assert finished.failure_reason == (
        "The training became unstable (its loss was no longer a number) and was stopped; "
        "train again with another preset, and tell the platform's team if it happens again."
    )
    assert "training diverged: the loss became nan at step " in finished.job.log
    assert "lower the learning rate (it was 1000)" in finished.job.error_detail
    finished.style.refresh_from_db()
    assert finished.style.published_version_id is None and finished.weights_path == ""
    assert not list(settings.ADAPTER_ROOT.rglob("*.safetensors"))

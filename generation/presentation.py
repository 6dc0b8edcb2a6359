"""What the style page and the API show of a training: one shape for both."""

import functools
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext, gettext_lazy

from . import base_models
from .models import AdapterVersion
from .selectors import training_queue_state
from .services import NOT_QUEUED_REASON

TRAINING_QUEUED_MESSAGE = gettext_lazy("Training queued. Progress and previews appear below as it runs.")
CANCEL_MESSAGE = gettext_lazy("Cancelling: the training stops within a few seconds.")
CANCELLED_MESSAGE = gettext_lazy("Cancelled.")
PRESET_CHOICES = [
    ("quick", gettext_lazy("Quick: a first look in about a minute")),
    ("standard", gettext_lazy("Standard: a good style in a few minutes")),
    ("thorough", gettext_lazy("Thorough: more steps, closer to your works")),
]
LOSS_CURVE_SIZE = (320, 80)
LOG_LINES_SHOWN = 30


# An absolute path on the server: its folders are nobody's business but the operator's.
SERVER_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s/'\"]+/)+(?=[^\s/'\"])")


def published_message(version, went_live_instead):
    """What publishing `version` did, naming it, and the trainings that will no longer go live when ready."""
    sentence = gettext("Version %(number)s is published: subscribers now generate with it.") % {"number": version.number}
    return messages.SUCCESS, sentence + _no_longer_going_live(went_live_instead)


def unpublished_message(version, went_live_instead):
    """What unpublishing did: `version` is the one taken offline (None when none was published)."""
    sentence = gettext("Unpublished: subscribers can no longer use this style.") if version is None else gettext(
        "Version %(number)s is unpublished: subscribers can no longer use this style.") % {"number": version.number}
    return messages.SUCCESS, sentence + _no_longer_going_live(went_live_instead)


def _no_longer_going_live(numbers):
    if not numbers:
        return ""
    return " " + gettext("The training of version %(numbers)s will no longer go live when it is ready.") % {
        "numbers": ", ".join(str(number) for number in numbers)}


def queue_refusal(version):
    """The failure sentence of a training whose task the broker refused as its start committed, else None (also
    for one a quick worker took and failed on a cause of its own: it was queued)."""
    version.refresh_from_db(fields=["status", "failure_reason", "failure_params"])
    refused = version.status == AdapterVersion.Status.FAILED and version.failure_reason == NOT_QUEUED_REASON
    return version.failure_reason_shown if refused else None


def training_started_message(version):
    """What the page says once "Train my style" went through."""
    refusal = queue_refusal(version)
    return (messages.ERROR, refusal) if refusal else (messages.SUCCESS, TRAINING_QUEUED_MESSAGE)


def cancel_message(version):
    """A queued training (or one whose worker is gone) is cancelled at once; a running one stops within seconds."""
    if version.status == AdapterVersion.Status.CANCELLED:
        return messages.SUCCESS, CANCELLED_MESSAGE
    return messages.SUCCESS, CANCEL_MESSAGE


@functools.lru_cache(maxsize=8)
def _folder_patterns(configured):
    """The platform's own absolute folders, longest first, as configured and resolved (spaces and links too),
    each matched only where a path starts: not "/data/" inside "/mnt/data/x.png". Resolved once per setting."""
    folders = {str(folder) for path in configured for folder in (Path(path), Path(path).resolve()) if folder.is_absolute()}
    ordered = sorted((folder.rstrip("/") + "/" for folder in folders if folder != "/"), key=len, reverse=True)
    return [re.compile(rf"(?<![\w.~/-]){re.escape(folder)}") for folder in ordered]


def without_server_paths(text):
    """The text with every absolute path cut to its last part, for what artists and API clients see."""
    configured = (
        settings.ADAPTER_ROOT, settings.TRAINING_WORK_ROOT, settings.MEDIA_ROOT, settings.DATA_DIR,
        Path(settings.BASE_MODEL).parent, settings.BASE_DIR, sys.prefix, os.path.expanduser("~"),
    )
    for folder in _folder_patterns(tuple(str(path) for path in configured)):
        text = folder.sub("", text)
    return SERVER_PATH.sub("", text)


def one_sentence(error):
    """A failure's cause for people: the first line of the error, short, without server paths."""
    text = without_server_paths((str(error).strip().splitlines() or [type(error).__name__])[0])[:280]
    return text if text.endswith(".") else text + "."


def loss_curve_axes(losses):
    """What the curve's edges stand for: the highest and lowest loss drawn, and the first and last step."""
    if len(losses) < 2:
        return None
    values = [loss for _step, loss in losses]
    return {"high": max(values), "low": min(values), "first_step": losses[0][0], "last_step": losses[-1][0]}


def loss_curve_points(losses, width=LOSS_CURVE_SIZE[0], height=LOSS_CURVE_SIZE[1]):
    """SVG polyline points for [step, loss] pairs, scaled into the box its axes name (no chart library needed)."""
    axes = loss_curve_axes(losses)
    if axes is None:
        return ""
    first, low = axes["first_step"], axes["low"]
    span_x = (axes["last_step"] - first) or 1
    span_y = (axes["high"] - low) or 1
    return " ".join(
        f"{(step - first) / span_x * width:.1f},{height - (loss - low) / span_y * height:.1f}" for step, loss in losses
    )


def job_state(version, *, current_base_sha256=None):
    """A dict of everything a person (or API client) needs to follow one version's training."""
    job = version.job
    current_base_sha256 = current_base_sha256 or base_models.current_base_sha256()
    state = {
        "id": version.pk,
        "number": version.number,
        "status": version.status,
        "status_display": version.get_status_display(),
        "is_active": version.is_active,
        "preset": version.preset,
        "preset_display": version.get_preset_display(),
        "step": job.step,
        "total_steps": job.total_steps,
        "progress_percent": job.progress_percent,
        "eta_seconds": round(job.eta_seconds) if job.eta_seconds is not None and version.is_active else None,
        "queue_position": None,
        "waiting_for_worker": False,
        "losses": job.losses,
        "loss_curve": loss_curve_points(job.losses),
        "loss_axes": loss_curve_axes(job.losses),
        "final_loss": version.metrics.get("final_loss"),
        "previews": [
            {**preview, "url": reverse("api-adapter-version-preview", args=[version.pk, preview["file"]])} for preview in job.previews
        ],
        "log_tail": without_server_paths("\n".join(job.log.strip().splitlines()[-LOG_LINES_SHOWN:])),
        "failure_reason": version.failure_reason_shown,
        "retired_reason": version.retired_reason_shown,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "publish_when_ready": version.publish_when_ready,
        "work_count": version.snapshot.work_count,
        "snapshot_fingerprint": version.snapshot.fingerprint,
        "weights_sha256": version.weights_sha256,
        "base_model_sha256": version.base_model.sha256,
        "on_current_base": version.base_model.sha256 == current_base_sha256,
        "created_at": version.created_at,
        "finished_at": version.finished_at,
    }
    if version.status == AdapterVersion.Status.TRAINING and not job.heartbeat_is_fresh():
        # Its worker stopped reporting (killed, its machine gone): the last ETA will not come true. The training
        # goes on from its checkpoint once a worker takes it again.
        state["waiting_for_worker"] = True
        state["eta_seconds"] = None
    if version.status == AdapterVersion.Status.QUEUED:
        queue = training_queue_state(adapter_version=version)
        state["queue_position"] = queue.position
        state["waiting_for_worker"] = queue.no_worker_taking
        state["eta_seconds"] = None if queue.no_worker_taking else round(queue.seconds_left)
    state["eta_display"] = eta_display(state["eta_seconds"])
    return state


def eta_display(seconds):
    """An ETA for people: seconds under a minute, else hours and minutes in the reader's language."""
    if seconds is None:
        return ""
    if seconds < 60:
        return gettext("about %(seconds)d s left") % {"seconds": seconds}
    now = timezone.now()
    return gettext("about %(duration)s left") % {"duration": timeuntil(now + timedelta(seconds=seconds), now, depth=2)}


def style_page_context(*, artist, styles):
    from licensing.models import ConsentTerms
    from licensing.selectors import works_for_training, works_needing_reconsent

    terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    versions = [version for style in styles for version in style.versions.all()]
    latest = max(versions, key=lambda version: (version.created_at, version.pk), default=None)
    current_base_sha256 = base_models.current_base_sha256()
    return {
        "artist": artist,
        "styles": styles,
        "presets": PRESET_CHOICES,
        "trainable_works": works_for_training(artist=artist, terms=terms).count() if terms else 0,
        "min_works": settings.STYLE_MIN_WORKS,
        "published": any(style.published_version_id for style in styles),
        "works_awaiting_reconsent": works_needing_reconsent(artist=artist, terms=terms).count(),
        "latest_job": job_state(latest, current_base_sha256=current_base_sha256) if latest else None,
        "taken_down": next((style for style in styles if style.taken_down_at is not None), None),
        "takedown_lifted": next((style for style in styles if style.taken_down_at is None and style.takedown_lifted_at), None),
        "versions": [
            {
                "version": version,
                "state": job_state(version, current_base_sha256=current_base_sha256),
                "is_published": version.style.published_version_id == version.pk,
            }
            for version in versions
        ],
    }

"""Reads of the generation side; `usable_adapter_versions` is the only way generation finds adapters."""

import heapq
from statistics import median
from typing import NamedTuple

from django.conf import settings
from django.db.models import F, Max, Prefetch, Q
from django.utils import timezone

from .base_models import current_base_sha256
from .models import AdapterVersion, Style, TrainingJob

DEFAULT_SECONDS_PER_STEP = 0.5


def usable_adapter_versions(*, style_ids=None):
    """Published, ready adapter versions of styles staff have not taken down, of artists still here (not left,
    account active), no work withdrawn, trained on the base model generation samples from now.

    Retirement already happens inside every withdrawal; the consent check here is the second lock
    on the same door, so a missed retirement can never let a withdrawn work reach an image.
    An adapter of another base would not fit its layers (or would fit and draw nonsense), so after
    BASE_MODEL changes a style is out of generation until it is trained again.
    """
    from licensing.models import ConsentEvent, Work

    candidates = AdapterVersion.objects.filter(
        status=AdapterVersion.Status.READY,
        published_for__isnull=False,
        style__taken_down_at__isnull=True,  # a takedown unpublishes too; this holds should a publish slip past it
        base_model__sha256=current_base_sha256(),  # None (no base known here) matches nothing
        style__artist__left_at__isnull=True,
        style__artist__user__is_active=True,  # an account staff deactivated is off the platform too
    ).select_related("style", "style__artist", "snapshot", "base_model")
    if style_ids is not None:
        candidates = candidates.filter(style_id__in=style_ids)
    candidates = list(candidates)
    work_ids = {work_id for version in candidates for work_id in version.snapshot.work_ids}
    still_consented = set(
        Work.objects.filter(
            pk__in=work_ids, status=Work.Status.ACTIVE, current_consent__kind=ConsentEvent.Kind.GRANTED
        ).values_list("pk", flat=True)
    )
    # Consent granted again after a withdrawal is a new grant: it does not reach back to the snapshots of before.
    last_withdrawal = dict(
        ConsentEvent.objects.filter(work_id__in=work_ids, kind=ConsentEvent.Kind.WITHDRAWN)
        .values("work_id").annotate(last=Max("pk")).values_list("work_id", "last")
    )

    def consented_since_snapshot(entry):
        return entry["work_id"] in still_consented and last_withdrawal.get(entry["work_id"], 0) < entry["consent_event_id"]

    usable = [version.pk for version in candidates if all(map(consented_since_snapshot, version.snapshot.entries))]
    return AdapterVersion.objects.filter(pk__in=usable).select_related("style", "style__artist", "base_model")


def styles_in_use():
    """One usable version per artist, by artist name: who a visitor can make images with now."""
    by_artist = {}
    for version in usable_adapter_versions().order_by("style__artist__display_name", "style__artist_id", "style__name",
                                                      "style_id"):
        by_artist.setdefault(version.style.artist_id, version)
    return list(by_artist.values())


def usable_versions_of_artist(*, artist):
    """The versions of the artist's styles that generation uses now, each with the snapshot it was trained on."""
    style_ids = Style.objects.filter(artist=artist).values("pk")
    return list(usable_adapter_versions(style_ids=style_ids).select_related("snapshot__terms").order_by("style__name"))


def seconds_per_step_estimate(*, base_model):
    """Median seconds per step of this base's recent finished trainings, for queue ETAs.

    Only trainings that ran in one go: a resumed one's seconds are its last run's, not all its steps'.
    """
    rates = [
        metrics["seconds"] / metrics["steps"]
        for metrics in AdapterVersion.objects.filter(base_model=base_model, status=AdapterVersion.Status.READY)
        .order_by(F("finished_at").desc(nulls_last=True))
        .values_list("metrics", flat=True)[:10]
        if metrics.get("steps") and not metrics.get("resumed_from_step")
    ]
    return median(rates) if rates else DEFAULT_SECONDS_PER_STEP


class QueueState(NamedTuple):
    position: int  # 1-based: the trainings running now, then those waiting that were started before it
    seconds_left: float  # until this one is done
    no_worker_taking: bool  # nothing runs and the head of the line has waited two stale periods


def training_queue_state(*, adapter_version):
    """Where a queued version stands in line (a QueueState).

    The seconds assume as many trainings at a time as are running now: while one waits, every training
    worker that is alive is busy (an idle one would have taken it), so the running count is the worker count.
    Each training in line goes to the worker that frees first, as the queue hands them out. With none running,
    an idle worker takes the head of the line within moments (and finds a lost message, or a training whose
    worker died, within one stale period), so a head still waiting after two means no training worker is
    taking any: the seconds would be a guess that never comes true, for every training behind it too.
    """
    started_before = Q(adapter_version__created_at__lt=adapter_version.created_at)
    unfinished = list(
        TrainingJob.objects.filter(adapter_version__status__in=AdapterVersion.ACTIVE_STATUSES)
        .filter(started_before | Q(adapter_version__status=AdapterVersion.Status.TRAINING))
        .exclude(adapter_version=adapter_version)
        .select_related("adapter_version__base_model")
        .order_by("adapter_version__created_at", "adapter_version_id")
    )
    now = timezone.now()
    running = [job for job in unfinished if job.adapter_version.status == AdapterVersion.Status.TRAINING and job.heartbeat_is_fresh(now)]
    # A training whose worker is gone waits for another, in its place in line.
    waiting = [job for job in unfinished if job not in running and job.adapter_version.created_at < adapter_version.created_at]
    waiting.append(adapter_version.job)
    rates = {}  # one estimate per base model, however long the queue

    def seconds_left(job):
        base = job.adapter_version.base_model
        if base.pk not in rates:
            rates[base.pk] = seconds_per_step_estimate(base_model=base)
        return max(job.total_steps - job.step, 0) * rates[base.pk]

    workers_free_at = [seconds_left(job) for job in running] or [0.0]
    heapq.heapify(workers_free_at)
    for job in waiting:
        done_at = heapq.heappop(workers_free_at) + seconds_left(job)
        heapq.heappush(workers_free_at, done_at)
    return QueueState(len(running) + len(waiting), done_at, not running and _head_waited_too_long(waiting[0], now))


def _head_waited_too_long(head, now):
    """Whether the training at the head of a line with nothing running has waited two stale periods, since its
    start and since any worker last reported: one that has just finished a training is about to take the next,
    and a head whose worker died counts from that worker's last report, which is among them."""
    last_report = TrainingJob.objects.aggregate(last=Max("heartbeat_at"))["last"]
    since = max(head.adapter_version.created_at, last_report or head.adapter_version.created_at)
    return (now - since).total_seconds() > 2 * settings.TRAINING_STALE_SECONDS


def versions_to_go_live(*, style):
    """The numbers of the style's trainings under way that are to be published when ready."""
    return list(AdapterVersion.objects.filter(
        style=style, status__in=AdapterVersion.ACTIVE_STATUSES, publish_when_ready=True,
    ).order_by("number").values_list("number", flat=True))


def styles_of_artist(*, artist):
    """The artist's styles with every version's training, for the style page."""
    return Style.objects.filter(artist=artist).prefetch_related(
        "versions", "versions__job", "versions__snapshot", "versions__base_model"
    ).select_related("published_version")


def styles_with_version_ids(*, artist):
    """The artist's styles and their versions' ids only: a list needs no training logs."""
    return Style.objects.filter(artist=artist).prefetch_related(Prefetch("versions", queryset=AdapterVersion.objects.only("pk", "style_id", "number")))

"""Every write of the generation side: styles, adapter versions, their training jobs, and retirement on withdrawal."""

import logging
import shutil
import uuid
from datetime import timedelta
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from .base_models import base_model_current, base_model_on_this_host, folder_fingerprint, trained_on_current_base
from .ml import WEIGHTS_NAME, sha256_file
from .models import AdapterVersion, Style, TrainingJob
from .storage import adapter_dir, adapter_weights_path, training_work_dir

logger = logging.getLogger(__name__)


def _enqueue_training(adapter_version_id, if_refused=None):
    """Send the training's task once the transaction commits; if the broker refuses it, call `if_refused` (by
    default, the training fails: the artist can start it again)."""
    from .tasks import train_adapter_version

    def enqueue():
        try:
            train_adapter_version.delay(adapter_version_id)
        except Exception:
            logger.exception("could not queue the training of adapter version %s", adapter_version_id)
            (if_refused or training_not_queued)(adapter_version_id=adapter_version_id)

    transaction.on_commit(enqueue)


NOT_QUEUED_REASON = gettext_noop("The training could not be queued (the task queue did not answer); start it again in a moment.")


@transaction.atomic
def training_not_queued(*, adapter_version_id):
    """The broker refused the task: a training still waiting fails, so the artist can start it again."""
    _fail_while_waiting(adapter_version_id, NOT_QUEUED_REASON)


def _fail_while_waiting(adapter_version_id, reason, params=None):
    version = AdapterVersion.objects.select_for_update().get(pk=adapter_version_id)
    if version.status == AdapterVersion.Status.QUEUED:
        _finish(version, AdapterVersion.Status.FAILED, failure_reason=reason, failure_params=params or {})


@transaction.atomic
def style_for_artist(*, artist):
    """The artist's style, found by artist: a changed slug must not start a second style and lose the versions."""
    style = Style.objects.filter(artist=artist).order_by("pk").first()
    return style or Style.objects.create(artist=artist, slug=artist.slug, name=artist.display_name)


def style_training_start(*, artist, actor, preset="standard", publish_when_ready=True):
    """Freeze the artist's opted-in works into a snapshot and queue an adapter version trained on exactly those."""
    if not base_model_on_this_host():
        logger.error("no training can start: BASE_MODEL %s is not a diffusers folder on this host", settings.BASE_MODEL)
        raise ValidationError(_("Training is unavailable at the moment: the platform's base model is missing. Try again later."))
    # The base's fingerprint hashes its weights (once per host; seconds for an SD-sized base): before the
    # transaction, whose locks (SQLite's whole-database one) would hold every other write up meanwhile.
    folder_fingerprint(settings.BASE_MODEL)
    return _style_training_start(artist=artist, actor=actor, preset=preset, publish_when_ready=publish_when_ready)


@transaction.atomic
def _style_training_start(*, artist, actor, preset, publish_when_ready):
    from generation.ml.lora_training import base_kind_of
    from generation.ml.training_config import PRESETS, configured_preset
    from licensing.models import ConsentTerms
    from licensing.selectors import works_for_training, works_needing_reconsent, works_opted_in
    from licensing.services import dataset_snapshot_create

    if preset not in PRESETS["builtin"]:
        raise ValidationError(_("Unknown preset %(preset)s; choose one of %(choices)s.") % {"preset": preset, "choices": ", ".join(PRESETS["builtin"])})
    artist = type(artist).objects.select_for_update().get(pk=artist.pk)
    if artist.has_left:
        raise ValidationError(_("You have left the platform, so no style of yours can be trained."))
    style = style_for_artist(artist=artist)  # a takedown takes the artist's lock too: it is seen here, or waits
    if style.versions.filter(status__in=AdapterVersion.ACTIVE_STATUSES).exists():
        raise ValidationError(_("A training of this style is already under way."))
    terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    available = works_for_training(artist=artist, terms=terms).count() if terms else 0
    if available < settings.STYLE_MIN_WORKS:
        refusal = _("At least %(minimum)d opted-in works are needed to train a style; %(available)d are usable for training.") % {
            "minimum": settings.STYLE_MIN_WORKS, "available": available,
        }
        # What the studio lists as opted in but training cannot use, each named with what to do.
        held_back = works_opted_in(artist=artist, terms=terms).count() - available if terms else 0
        awaiting = works_needing_reconsent(artist=artist, terms=terms).count()
        notes = []
        if held_back:
            notes.append(ngettext(
                "%(count)d more opted-in work is held back, having no caption or a do-not-train signal; see your studio.",
                "%(count)d more opted-in works are held back, having no caption or a do-not-train signal; see your studio.",
                held_back,
            ) % {"count": held_back})
        if awaiting:
            notes.append(ngettext(
                "%(count)d more work awaits your consent to the current terms, in your studio.",
                "%(count)d more works await your consent to the current terms, in your studio.",
                awaiting,
            ) % {"count": awaiting})
        for note in notes:
            # Translated too: Japanese puts no space between sentences.
            refusal = _("%(refusal)s %(note)s") % {"refusal": refusal, "note": note}
        raise ValidationError(refusal)
    snapshot = dataset_snapshot_create(artist=artist)
    base = base_model_current()
    config = configured_preset(preset, base_kind_of(base.path), settings.TRAINING_PRESET_OVERRIDES)
    number = (style.versions.aggregate(last=Max("number"))["last"] or 0) + 1
    version = AdapterVersion.objects.create(
        style=style, number=number, snapshot=snapshot, base_model=base, preset=preset, hyperparameters=config.to_dict(),
        publish_when_ready=publish_when_ready and style.taken_down_at is None, created_by=actor,
    )
    TrainingJob.objects.create(adapter_version=version, total_steps=config.steps)
    _enqueue_training(version.pk)
    return version


@transaction.atomic
def training_cancel(*, adapter_version):
    """Cancel a queued training at once; ask a running one to stop (at once too when its worker is gone).
    Cancelling a cancelled training again changes nothing (a double click)."""
    version = AdapterVersion.objects.select_for_update().get(pk=adapter_version.pk)
    if version.status == AdapterVersion.Status.CANCELLED:
        return version
    if version.status == AdapterVersion.Status.QUEUED:
        _finish(version, AdapterVersion.Status.CANCELLED)
    elif version.status == AdapterVersion.Status.TRAINING:
        job = TrainingJob.objects.select_for_update().get(adapter_version=version)
        if job.heartbeat_is_fresh():
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
        else:
            _end_unfinished(version, job, AdapterVersion.Status.CANCELLED)
    else:
        raise ValidationError(_("This training has already ended."))
    return version


def _end_unfinished(version, job, status, **fields):
    """End a training as cancelled or failed: its claim is void (a run still alive can no longer write or
    finish), and its checkpoint and any adapter it wrote are removed."""
    job.claim_token = ""
    job.log = job.log_with(f"{status}: its checkpoint is removed, as an ended training does not resume")
    job.save(update_fields=["claim_token", "log"])
    _finish(version, status, **fields)
    _discard_unfinished_files(version)


def _discard_unfinished_files(version):
    """A cancelled or failed version never resumes: its checkpoint and cache go, and any adapter it wrote (its
    previews stay on the page)."""
    _remove_on_commit(work_folders=[training_work_dir(version) / "state"], adapter_folders=[adapter_dir(version)])


def _discard_ended_run_files(version):
    """What a run wrote after its version ended without it (cancelled while silent, failed past the retry bound, retired)."""
    if version.status in (AdapterVersion.Status.CANCELLED, AdapterVersion.Status.FAILED):
        _discard_unfinished_files(version)
    elif version.status == AdapterVersion.Status.RETIRED:
        _discard_retired_files([version])


def _remove_on_commit(*, work_folders=(), adapter_folders=()):
    """Once committed: training work folders whole (the platform's alone), and from adapter folders only the
    weights, then the folder if that left it empty: anything else someone put there is not ours to delete."""

    def remove():
        for folder in work_folders:
            shutil.rmtree(folder, ignore_errors=True)
        if adapter_folders:
            from .ml.lora_training import remove_leftovers_of_killed_saves  # here, and only then: torch loads with it
        for folder in adapter_folders:
            (folder / WEIGHTS_NAME).unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty, or already gone
            # What a save killed half-way left beside it holds the same weights; the version has ended for good.
            remove_leftovers_of_killed_saves(folder, of_ended_processes_only=False)

    transaction.on_commit(remove)


@transaction.atomic
def training_job_claim(*, adapter_version_id, worker):
    """Take a version for training (a job with a new claim token), or None when it is finished or alive elsewhere.

    Alive means its heartbeat is fresh, whoever holds it. A resumed job drops the progress, losses and
    previews recorded after its last checkpoint, since the run repeats those steps; tries are bounded.
    """
    version = AdapterVersion.objects.select_for_update().filter(pk=adapter_version_id).first()
    if version is None or not version.is_active:
        return None
    job = TrainingJob.objects.select_for_update().get(adapter_version=version)
    now = timezone.now()
    resuming = version.status == AdapterVersion.Status.TRAINING
    if resuming and job.heartbeat_is_fresh(now):
        return None
    if resuming and job.cancel_requested:
        _end_unfinished(version, job, AdapterVersion.Status.CANCELLED)
        return None
    if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
        _end_unfinished(version, job, AdapterVersion.Status.FAILED, failure_reason=gettext_noop(
            "The training stopped unexpectedly %(attempts)d times; start it again or contact support."
        ), failure_params={"attempts": job.attempts})
        return None
    job.attempts += 1
    job.worker = worker
    job.heartbeat_at = now
    job.claim_token = uuid.uuid4().hex
    if resuming:
        job.losses = [point for point in job.losses if point[0] <= job.checkpoint_step]
        job.previews = [preview for preview in job.previews if preview["step"] <= job.checkpoint_step]
        job.step = job.resumed_from_step = job.checkpoint_step
        job.eta_seconds = None  # the dead run's, until this one reports
    job.save()
    version.status = AdapterVersion.Status.TRAINING
    version.started_at = version.started_at or now
    version.save(update_fields=["status", "started_at"])
    return job


def _finish(version, status, **fields):
    version.status = status
    version.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(version, name, value)
    version.save()
    return version


def _claimed(job):
    """The job's version, locked, and whether `job` (a claim) still holds it: a run taken over must not write."""
    version = AdapterVersion.objects.select_for_update().get(pk=job.adapter_version_id)
    current = TrainingJob.objects.select_for_update().get(pk=job.pk)
    return version, current, bool(job.claim_token) and current.claim_token == job.claim_token


@transaction.atomic
def training_job_stop(*, job):
    """The run stopped on a cancel request or a retirement."""
    version, current, holds = _claimed(job)
    if holds and version.status == AdapterVersion.Status.TRAINING:
        _end_unfinished(version, current, AdapterVersion.Status.CANCELLED)
        return version
    if holds and version.status == AdapterVersion.Status.RETIRED:
        # The loop's last line says where its checkpoint is: say what became of it, and why the run stopped.
        current.log = current.log_with("retired: a work it was training on was withdrawn; its checkpoint is removed, "
                                       "as a retired training never resumes")
        current.save(update_fields=["log"])
    _discard_ended_run_files(version)
    return version


@transaction.atomic
def training_job_fail(*, job, reason, params=None, detail=""):
    """`reason` is the artist's one sentence; `detail` (the traceback) is kept for staff."""
    version, current, holds = _claimed(job)
    if holds and version.status == AdapterVersion.Status.TRAINING:
        current.error_detail = detail
        current.save(update_fields=["error_detail"])
        _end_unfinished(version, current, AdapterVersion.Status.FAILED, failure_reason=reason, failure_params=params or {})
    else:
        _discard_ended_run_files(version)
    return version


@transaction.atomic
def training_job_finish(*, job, result, adapter_root):
    """Record a finished training; a version retired or cancelled meanwhile is never published."""
    version, current, holds = _claimed(job)
    if not holds:
        _discard_ended_run_files(version)  # a run that took the job over records its own result
        return version
    weights = Path(result.weights_path).resolve()
    adapter_root = Path(adapter_root).resolve()  # the saved path is resolved; ADAPTER_ROOT may be a link
    metrics = {
        "final_loss": result.final_loss,
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "resumed_from_step": result.resumed_from_step,
    }
    TrainingJob.objects.filter(pk=current.pk).update(step=result.steps, eta_seconds=0, heartbeat_at=timezone.now())
    if version.status == AdapterVersion.Status.TRAINING and current.cancel_requested:
        # Asked during the last steps or the save: the artist's word stands.
        _end_unfinished(version, current, AdapterVersion.Status.CANCELLED)
        return version
    if version.status != AdapterVersion.Status.TRAINING:
        # Retired meanwhile: kept for the audit trail (or deleted, per RETIRED_ADAPTER_FILES), never usable.
        version.metrics = metrics
        version.weights_sha256 = result.sha256
        version.weights_path = str(weights.relative_to(adapter_root))
        version.save(update_fields=["metrics", "weights_sha256", "weights_path"])
        _discard_ended_run_files(version)
        return version
    if sha256_file(weights) != result.sha256:
        _end_unfinished(version, current, AdapterVersion.Status.FAILED,
                        failure_reason=gettext_noop("The written adapter does not match its checksum."))
        return version
    _finish(
        version, AdapterVersion.Status.READY, metrics=metrics, weights_sha256=result.sha256,
        weights_path=str(weights.relative_to(adapter_root)),
    )
    if version.publish_when_ready and trained_on_current_base(version):  # BASE_MODEL may have changed since the start
        try:  # its own savepoint: a refusal (staff took the style down meanwhile) leaves the version ready
            adapter_version_publish(adapter_version=version)
        except ValidationError as refusal:
            logger.info("version %s of style %s is ready, not published: %s", version.number, version.style_id,
                        refusal.messages[0])
    return version


@transaction.atomic
def adapter_version_publish(*, adapter_version):
    """Make this version the one generation uses for its style (also how an artist rolls back).

    The latest choice stands: a training under way that was to go live when ready no longer does.
    """
    under_way = _lock_versions_before_style(adapter_version.style_id, also=adapter_version.pk)
    version = AdapterVersion.objects.get(pk=adapter_version.pk)
    style = Style.objects.select_for_update().get(pk=version.style_id)
    if version.status != AdapterVersion.Status.READY:
        raise ValidationError(_("Only a ready version can be published; this one is %(status)s.") % {"status": version.get_status_display()})
    if not trained_on_current_base(version):
        raise ValidationError(_("This version was trained on an earlier base model than the one images are made with now; train your style again to publish it."))
    if style.taken_down_at is not None:
        raise ValidationError(_takedown_refusal(style))
    style.published_version = version
    style.takedown_lifted_at = None  # published again: the page's note that the takedown was lifted has done its work
    style.save(update_fields=["published_version", "takedown_lifted_at"])
    under_way.update(publish_when_ready=False)
    return style


@transaction.atomic
def style_unpublish(*, style, shown_version=None):
    """Take the style out of generation, the training under way included (the artist's word).

    `shown_version` is the version a page offered to unpublish, if the caller knows it: when another is published by
    then, or none, nothing changes, so that a click on a stale page takes down neither a version published since
    from elsewhere nor a retrain that is to go live."""
    under_way = _lock_versions_before_style(style.pk)
    style = Style.objects.select_for_update(of=("self",)).select_related("published_version").get(pk=style.pk)
    if shown_version is not None and style.published_version_id != shown_version.pk:
        if style.published_version is None:
            raise ValidationError(_("Version %(number)s is no longer published: the style is already offline. Nothing "
                                    "was changed.") % {"number": shown_version.number})
        raise ValidationError(_(
            "Version %(number)s is no longer the published version: version %(current)s is, published since this "
            "page was opened. Nothing was changed; unpublish again to take version %(current)s offline."
        ) % {"number": shown_version.number, "current": style.published_version.number})
    style.published_version = None
    style.save(update_fields=["published_version"])
    under_way.update(publish_when_ready=False)
    return style


@transaction.atomic
def style_take_down(*, style, reason=""):
    """Staff's takedown: unpublished, the training under way included, and no version can be published (by the
    artist, a training that finishes, or the demo's install) until staff lift it. Taking down a style already
    down keeps its date, and its reason unless a new one is given."""
    from licensing.models import Artist

    # The artist first, as a training start and a withdrawal lock it: a start then either sees the takedown or
    # waits for it (and never queues a version to go live on a style just taken down), and the second write of
    # the style below, whose artist key PostgreSQL checks, never waits on a start holding the artist.
    list(Artist.objects.select_for_update().filter(pk=style.artist_id).values_list("pk"))
    style = style_unpublish(style=style)
    if style.taken_down_at is None:
        style.taken_down_at, style.takedown_reason, style.takedown_lifted_at = timezone.now(), reason, None
    elif reason:
        style.takedown_reason = reason
    style.save(update_fields=["taken_down_at", "takedown_reason", "takedown_lifted_at"])
    return style


@transaction.atomic
def style_takedown_lift(*, style):
    """Staff lift their takedown; the artist publishes again (nothing goes live by itself)."""
    style = Style.objects.select_for_update().get(pk=style.pk)
    if style.taken_down_at is not None:
        style.takedown_lifted_at = timezone.now()
    style.taken_down_at = None
    style.takedown_reason = ""
    style.save(update_fields=["taken_down_at", "takedown_reason", "takedown_lifted_at"])
    return style


def _takedown_refusal(style):
    return _("Staff took this style down on %(date)s; no version of it can be published until they lift the "
             "takedown.") % {"date": f"{style.taken_down_at:%Y-%m-%d %H:%M} UTC"}


def _lock_versions_before_style(style_id, also=None):
    """Lock the style's training under way (and version `also`) before the style, in id order: the order a
    withdrawal and a finishing training take, so none of them can deadlock with another. Returns the
    training under way, as a queryset."""
    under_way = Q(style_id=style_id, status__in=AdapterVersion.ACTIVE_STATUSES)
    list(AdapterVersion.objects.select_for_update().filter(under_way | Q(pk=also)).order_by("pk").values_list("pk"))
    return AdapterVersion.objects.filter(under_way)


def _discard_retired_files(versions):
    """A retired version never resumes: its checkpoint and cached encodings go whatever the setting (the cache holds
    the works' latents, which decode to near copies of images their artist withdrew or deleted). Under
    RETIRED_ADAPTER_FILES=delete its weights and previews go too; under keep they stay, for audit."""
    if settings.RETIRED_ADAPTER_FILES != "delete":
        _remove_on_commit(work_folders=[training_work_dir(version) / "state" for version in versions])
        return
    TrainingJob.objects.filter(adapter_version__in=versions).update(previews=[])  # the page lists no image that is gone
    adapter_folders = {adapter_dir(version) for version in versions}
    # Where a version's weights were recorded, should that ever differ from its folder.
    adapter_folders |= {adapter_weights_path(version).parent for version in versions if version.weights_path}
    _remove_on_commit(work_folders=[training_work_dir(version) for version in versions], adapter_folders=sorted(adapter_folders))


@transaction.atomic
def adapter_versions_retire_for_works(*, work_ids, event_ids):
    """The withdrawal receiver: retire every version whose snapshot holds a withdrawn work, then retrain.

    Runs inside licensing's withdrawal transaction (which holds the artists' locks), so generation
    refuses these adapters from the moment the withdrawal is committed.
    """
    from licensing.models import Work

    event_of_work = dict(zip(work_ids, event_ids))
    artist_ids = set(Work.objects.filter(pk__in=event_of_work).values_list("artist_id", flat=True))
    candidates = (
        AdapterVersion.objects.select_for_update(of=("self",))
        .filter(snapshot__artist_id__in=artist_ids)
        .exclude(status=AdapterVersion.Status.RETIRED)
        .select_related("style", "style__artist__user", "snapshot")
        .order_by("pk")  # the order publishing locks them in
    )
    candidates = list(candidates)
    # Read after the versions are locked: a training that was finishing may have published one of them
    # meanwhile, and the style joined into the query above can predate that.
    published = dict(
        Style.objects.select_for_update().filter(pk__in={v.style_id for v in candidates})
        .values_list("pk", "published_version_id")
    )
    newest_ready = {}
    for version in candidates:
        if version.status == AdapterVersion.Status.READY:
            newest_ready[version.style_id] = max(version.number, newest_ready.get(version.style_id, 0))
    now = timezone.now()
    retired, styles = [], {}
    for version in candidates:
        held = sorted(set(event_of_work) & set(version.snapshot.work_ids))
        if not held:
            continue
        was_published = published[version.style_id] == version.pk
        # What the artist uses or waits for is retrained: the published version, a training under way (its retrain
        # keeps its wish to go live) and the newest ready one. An older ready version was passed over, and a
        # cancelled or failed one nobody asked for again: retired too, with no retrain on their account.
        wanted = version.is_active or was_published or version.number == newest_ready.get(version.style_id)
        publish = was_published or (version.is_active and version.publish_when_ready)
        version.status = AdapterVersion.Status.RETIRED
        version.retired_reason = gettext_noop("Trained on withdrawn work(s) %(works)s (consent event(s) %(events)s).")
        version.retired_params = {
            "works": ", ".join(f"#{pk}" for pk in held),
            "events": ", ".join(f"#{event_of_work[pk]}" for pk in held),
        }
        version.retired_at = now
        version.finished_at = version.finished_at or now  # a training retired on its way ends here
        version.save(update_fields=["status", "retired_reason", "retired_params", "retired_at", "finished_at"])
        if was_published:
            Style.objects.filter(pk=version.style_id).update(published_version=None)
        if wanted:
            style_state = styles.setdefault(version.style_id, {"style": version.style, "publish": False})
            style_state["preset"] = version.preset  # the newest one's (id order): the artist's latest choice
            style_state["publish"] |= publish
        retired.append(version)
    _discard_retired_files(retired)
    for state in styles.values():
        _retrain_after_withdrawal(style=state["style"], preset=state["preset"], publish=state["publish"])
    return retired


def withdrawal_receiver(work_ids, event_ids):
    """licensing's withdrawal hook calls this, positionally, inside its transaction."""
    return adapter_versions_retire_for_works(work_ids=work_ids, event_ids=event_ids)


def _retrain_after_withdrawal(*, style, preset, publish):
    """Queue a retrain on the works that remain; never let it stand in the way of the withdrawal itself."""
    artist = style.artist
    if not artist.is_on_platform:
        logger.info("no retrain of style %s after a withdrawal: its artist is off the platform", style.pk)
        return
    # The withdrawal has locked every version of this artist, so this one cannot finish meanwhile.
    running = style.versions.filter(status__in=AdapterVersion.ACTIVE_STATUSES).first()
    if running is not None:
        # It holds none of the withdrawn works (else it was retired above): it is the retrain, and it
        # takes over the wish to go live of the version it replaces.
        if publish and not running.publish_when_ready:
            running.publish_when_ready = True
            running.save(update_fields=["publish_when_ready"])
        logger.info("no retrain of style %s after a withdrawal: version %s is under way", style.pk, running.number)
        return
    try:
        style_training_start(artist=style.artist, actor=None, preset=preset, publish_when_ready=publish)
    except ValidationError as refusal:
        logger.info("no retrain of style %s after a withdrawal: %s", style.pk, refusal.messages[0])
    except Exception:
        # Its savepoint is rolled back; the withdrawal and the retirements stand.
        logger.exception("could not queue a retrain of style %s after a withdrawal", style.pk)


@transaction.atomic
def training_jobs_recover(*, worker=None, restarted_at=None):
    """Queue again every training whose worker is gone, and every waiting training whose message is lost;
    returns their version ids. `worker` is the training worker that asks, every TRAINING_STALE_SECONDS.

    Gone means: its worker has not reported for TRAINING_STALE_SECONDS (killed, machine lost), or it ran
    on `worker` before that worker (re)started at `restarted_at` (its first pass), so it died with the
    worker's last life (what the worker claimed since is alive). Lost means: still waiting though `worker`
    has trained nothing for a whole period, when an idle worker takes a waiting message within moments,
    so the broker no longer holds it (a Redis restarted without persistence, an outage longer than the
    task's retries); not looked for on the first pass, as the worker has not yet had that long. Either is
    queued again at most once per period; the claim takes only one. A broker that refuses leaves it as it
    is, for the next pass; a waiting training whose message is lost again after TRAINING_MAX_ATTEMPTS
    sends fails with a sentence.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TRAINING_STALE_SECONDS)
    # Only the job rows: a claim locks the version, then the job; locking both here in the other order deadlocks.
    training = TrainingJob.objects.select_for_update(of=("self",)).filter(adapter_version__status=AdapterVersion.Status.TRAINING)
    if restarted_at:
        training.filter(worker=worker, heartbeat_at__lt=restarted_at).update(heartbeat_at=None, requeued_at=None)
    gone = list(
        training.filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale_before))
        .filter(Q(requeued_at__isnull=True) | Q(requeued_at__lt=stale_before))
        .values_list("adapter_version_id", flat=True)
    )
    lost = _lost_queued_trainings(worker, stale_before) if worker and not restarted_at else []
    resent = [job.adapter_version_id for job in lost if job.lost_message_resends < settings.TRAINING_MAX_ATTEMPTS]
    TrainingJob.objects.filter(adapter_version_id__in=resent).update(lost_message_resends=F("lost_message_resends") + 1)
    TrainingJob.objects.filter(adapter_version_id__in=gone + resent).update(requeued_at=now)
    for version_id in gone:
        _enqueue_training(version_id)
    for version_id in resent:
        _enqueue_training(version_id, if_refused=_lost_message_not_resent)
    for job in lost:
        if job.adapter_version_id not in resent:
            transaction.on_commit(partial(training_never_arrived, adapter_version_id=job.adapter_version_id))
    return gone + resent


def _lost_queued_trainings(worker, stale_before):
    """The job rows (locked, oldest first) of waiting trainings whose message the broker lost, unless `worker`
    trained within the period or holds a training still (a run stuck past TRAINING_MAX_SILENCE_SECONDS beats
    no more, yet occupies the worker): what waits may be waiting behind it."""
    busy = Q(heartbeat_at__gte=stale_before) | Q(adapter_version__status=AdapterVersion.Status.TRAINING)
    if TrainingJob.objects.filter(busy, worker=worker).exists():
        return []
    return list(
        TrainingJob.objects.select_for_update(of=("self",))
        .filter(adapter_version__status=AdapterVersion.Status.QUEUED, adapter_version__created_at__lt=stale_before)
        .filter(Q(requeued_at__isnull=True) | Q(requeued_at__lt=stale_before))
        .order_by("adapter_version__created_at")
    )


def _lost_message_not_resent(*, adapter_version_id):
    """The broker refused to take a lost message again (it is down, say): that send does not count."""
    TrainingJob.objects.filter(adapter_version_id=adapter_version_id, lost_message_resends__gt=0).update(
        lost_message_resends=F("lost_message_resends") - 1
    )


@transaction.atomic
def training_never_arrived(*, adapter_version_id):
    """A waiting training whose task never reached a training worker, however often it was sent, fails."""
    _fail_while_waiting(adapter_version_id, gettext_noop(
        "The training never reached a training worker, though it was sent %(times)d times; start it again, and "
        "tell the platform's team if it happens again."
    ), {"times": 1 + settings.TRAINING_MAX_ATTEMPTS})

"""Running one adapter version's training inside a worker: claim, train, record, finish.

The training itself is generation.ml.lora_training (no Django); this module only moves its
progress, previews and result into the database, in short transactions, while it runs.
"""

import logging
import shutil
import threading
import time
import traceback
from pathlib import Path

from celery.worker import state as celery_worker_state
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext_noop

from generation.ml.lora_training import (
    LoraTrainingConfig,
    TrainingAbandoned,
    TrainingCallbacks,
    TrainingCancelled,
    TrainingDiverged,
    TrainingExample,
    train_lora,
)
from generation.ml.train_lora import out_of_memory_problem
from licensing.models import Work

from . import presentation, services
from .models import AdapterVersion, TrainingJob
from .storage import adapter_dir, preview_path, training_work_dir
from .tasks import DATABASE_OUTAGES

logger = logging.getLogger(__name__)

# How often the running loop writes progress and looks for a cancel request.
REPORT_EVERY_SECONDS = 1.0
LOSS_POINTS_KEPT = 400


class JobReporter(TrainingCallbacks):
    """The loop's callbacks: progress, previews, checkpoints, log lines and cancellation, written to the job row."""

    def __init__(self, job):
        self.job_id = job.pk
        self.claim_token = job.claim_token
        self.claimed_job = TrainingJob.objects.filter(pk=job.pk, claim_token=job.claim_token)  # empty once taken over
        self.version = job.adapter_version
        self.losses = list(job.losses)
        self.last_report = 0.0
        self.last_cancel_check = 0.0
        self.cancelled = False
        self.taken_over = False  # another run claimed the job: this one must not write to its folders
        self.last_sign_of_life = time.monotonic()  # when the loop last called back; the heartbeat reads it

    def on_progress(self, step, total, loss, eta_seconds):
        self.last_sign_of_life = time.monotonic()
        self._stop_if_taken_over()  # learnt from a write or the heartbeat
        self.losses.append([step, round(float(loss), 6)])
        if len(self.losses) > LOSS_POINTS_KEPT:
            self.losses = self.losses[::2]
        now = time.monotonic()
        if now - self.last_report >= REPORT_EVERY_SECONDS or step == total:
            self.last_report = now
            self._save(step=step, total_steps=total, eta_seconds=eta_seconds, losses=self.losses)

    def on_preview(self, step, images):
        self.last_sign_of_life = time.monotonic()
        self._check_claim()
        entries = []
        for index, (prompt, seed, image) in enumerate(images):
            path = preview_path(self.version, f"step-{step:06d}-{index}.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            entries.append({"step": step, "prompt": prompt, "seed": seed, "file": path.name})
        job = TrainingJob.objects.get(pk=self.job_id)
        self._save(previews=job.previews + entries)

    def on_resume(self, step):
        """The loop goes on from `step`: its checkpoint's, or 0 when it could not use the file (unreadable, or of
        another run). The claim trimmed the record by the database's checkpoint step; the file has the last word,
        so what was recorded after `step` goes, to be done again."""
        self.last_sign_of_life = time.monotonic()
        self._check_claim()
        self.losses = [point for point in self.losses if point[0] <= step]
        previews = [preview for preview in TrainingJob.objects.get(pk=self.job_id).previews if preview["step"] <= step]
        self._save(step=step, resumed_from_step=step, checkpoint_step=step, eta_seconds=None, losses=self.losses, previews=previews)

    def on_checkpoint(self, step):
        self.last_sign_of_life = time.monotonic()
        self._save(step=step, checkpoint_step=step)  # the loop logs the checkpoint itself

    def on_log(self, line):
        self.last_sign_of_life = time.monotonic()
        self._save(log=TrainingJob.objects.get(pk=self.job_id).log_with(line))

    def should_cancel(self):
        now = self.last_sign_of_life = time.monotonic()
        self._stop_if_taken_over()
        if self.cancelled or now - self.last_cancel_check < REPORT_EVERY_SECONDS:
            return self.cancelled
        self.last_cancel_check = now
        state = TrainingJob.objects.filter(pk=self.job_id).values("cancel_requested", "claim_token", "adapter_version__status").get()
        self.taken_over = state["claim_token"] != self.claim_token
        self._stop_if_taken_over()
        # A withdrawal retires the version while it trains: stop, it can never be published.
        self.cancelled = state["cancel_requested"] or state["adapter_version__status"] != AdapterVersion.Status.TRAINING
        return self.cancelled

    def before_saving(self):
        self._check_claim()

    def _check_claim(self):
        """Asked now, not at the report interval: the caller is about to write into folders that a run which
        took this one over shares."""
        if not self.taken_over:
            self.taken_over = not self.claimed_job.exists()
        self._stop_if_taken_over()

    def _stop_if_taken_over(self):
        """A run whose claim was taken over (its worker looked dead) stops without a last checkpoint: the
        work folder is the other run's now."""
        if self.taken_over:
            raise TrainingAbandoned("this run no longer holds the training's claim (taken over, or ended while it was silent)")

    def beat(self):
        """The heartbeat alone, unless the loop has been silent past TRAINING_MAX_SILENCE_SECONDS: a run stuck
        that long goes stale like a dead one, and recovery, cancel and the retry bound take over."""
        if time.monotonic() - self.last_sign_of_life <= settings.TRAINING_MAX_SILENCE_SECONDS:
            self._save()

    def _save(self, **fields):
        if not self.claimed_job.update(heartbeat_at=timezone.now(), **fields):
            self.taken_over = True  # write nothing more; the loop stops at its next callback


class SnapshotUnusable(Exception):
    """A snapshot's works cannot be trained on; its reason is the catalogue's, translated when the artist reads it."""

    def __init__(self, reason, **params):
        super().__init__(reason % params)
        self.reason, self.params = reason, params


TRAINING_DIVERGED_REASON = gettext_noop(
    "The training became unstable (its loss was no longer a number) and was stopped; "
    "train again with another preset, and tell the platform's team if it happens again."
)
OUT_OF_MEMORY_REASON = gettext_noop(
    "The platform's training machine ran out of memory; try again later, and tell the platform's team if it happens again."
)
# Any other error: the catalogue's frame, in the reader's language, around the error's own first line.
UNEXPECTED_FAILURE_REASON = gettext_noop(
    "The training stopped on an error; start it again, and tell the platform's team if it happens again "
    "(the error: %(error)s)."
)


def failure_reason(error):
    """What the artist reads of a failure, and its parameters: the catalogue's sentence where the cause is known,
    else one around the error's first line. The loop's own wording (advice on learning rate and dtype, for
    operators) goes to the log."""
    if isinstance(error, SnapshotUnusable):
        return error.reason, error.params
    if isinstance(error, TrainingDiverged):
        return TRAINING_DIVERGED_REASON, {}
    if out_of_memory_problem(error):
        return OUT_OF_MEMORY_REASON, {}
    return UNEXPECTED_FAILURE_REASON, {"error": presentation.one_sentence(error).removesuffix(".")}


def training_examples(snapshot):
    """The snapshot's works as training examples, read from the RGB training copies frozen with it."""
    works = Work.objects.in_bulk(snapshot.work_ids)
    examples = []
    for entry in snapshot.entries:
        work = works[entry["work_id"]]
        if work.sha256 != entry["sha256"]:
            raise SnapshotUnusable(gettext_noop("Work %(work)d no longer matches the snapshot (its file changed)."), work=work.pk)
        if not Path(work.training_image.path).is_file():
            raise SnapshotUnusable(
                gettext_noop("The file of work %(work)d is missing from storage; the platform's team must restore it."), work=work.pk
            )
        examples.append(TrainingExample(image_path=work.training_image.path, caption=entry["caption"]))
    return examples


class Heartbeat:
    """Calls the reporter's `beat` every quarter of TRAINING_STALE_SECONDS from a thread of its own, so that a
    live run is not taken for dead while the loop is quiet (loading a large base, encoding the works, drawing
    previews, saving)."""

    def __init__(self, reporter):
        self.reporter = reporter
        self.interval = max(1.0, settings.TRAINING_STALE_SECONDS / 4)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"training-heartbeat-{reporter.job_id}", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join(timeout=self.interval + 30)  # a beat stuck on a database lock must not hold the run

    def _beat(self):
        try:
            while not self.stopped.wait(self.interval):
                try:
                    self.reporter.beat()
                except Exception:
                    logger.warning("could not write the heartbeat of training job %s", self.reporter.job_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection


def run_training_job(*, adapter_version_id, worker):
    """Train one adapter version to the end (or resume it); safe to call again for the same version."""
    job = services.training_job_claim(adapter_version_id=adapter_version_id, worker=worker)
    if job is None:
        return None
    version = job.adapter_version
    reporter = JobReporter(job)
    reporter.on_log(f"attempt {job.attempts} of {settings.TRAINING_MAX_ATTEMPTS}")
    with Heartbeat(reporter):
        try:
            result = train_lora(
                base_path=version.base_model.path,
                examples=training_examples(version.snapshot),
                out_dir=adapter_dir(version),
                config=LoraTrainingConfig.from_dict(version.hyperparameters),
                work_dir=training_work_dir(version) / "state",
                callbacks=reporter,
                threads=settings.TRAINING_THREADS,
            )
            version = services.training_job_finish(job=job, result=result, adapter_root=Path(settings.ADAPTER_ROOT))
        except (TrainingCancelled, TrainingAbandoned):
            return services.training_job_stop(job=job)
        except DATABASE_OUTAGES:
            # The database dropped out (a restart, a fail-over): failing would discard the checkpoint for a blip.
            # The task is retried, and recovery queues the job again once its heartbeat is stale; it resumes.
            logger.warning("training of adapter version %s lost its database; it resumes later", version.pk, exc_info=True)
            raise
        except Exception as error:
            if celery_worker_state.should_terminate:
                # A cold shutdown (a second Ctrl-C, SIGQUIT): Celery cancels the task by raising from its signal
                # handler, here with the solo pool's "does not implement kill_job". Not the training's failure:
                # it stays `training` and resumes from its checkpoint, as after a kill -9. Not raised on either,
                # which Celery would log as the task's error with a traceback through the whole UNet.
                logger.warning("training of adapter version %s stopped by the worker's shutdown; it resumes later", version.pk)
                return None
            logger.exception("training of adapter version %s failed", version.pk)
            reason, params = failure_reason(error)
            reporter.on_log(f"failed: {presentation.one_sentence(error)}")
            return services.training_job_fail(job=job, reason=reason, params=params, detail=traceback.format_exc())
    if version.status == AdapterVersion.Status.READY:
        shutil.rmtree(training_work_dir(version) / "state", ignore_errors=True)
    return version

"""Thin Celery tasks: take ids, load, call the runner; safe to deliver twice."""

import logging
import threading
import time

from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)


# A database that drops out (a restart, a fail-over). The task is retried on these, or it would end with its
# message acknowledged and a version it had not yet claimed queued for ever (the claim makes a retry safe); the
# runner lets them through instead of failing the training.
DATABASE_OUTAGES = (OperationalError, InterfaceError)


@shared_task(
    name="generation.tasks.train_adapter_version", acks_late=True, reject_on_worker_lost=True,
    autoretry_for=DATABASE_OUTAGES, retry_backoff=5, retry_backoff_max=300, max_retries=8,
)
def train_adapter_version(adapter_version_id):
    from .training import run_training_job  # torch loads in training workers only

    version = run_training_job(adapter_version_id=adapter_version_id, worker=train_adapter_version.request.hostname or "")
    return {"adapter_version": adapter_version_id, "status": version.status if version else "skipped"}


@worker_ready.connect
def resume_interrupted_trainings(sender, **kwargs):
    """A training worker that (re)starts picks up trainings whose worker died, then keeps watching for them.

    The watch runs beside the tasks (a training occupies the worker's only slot for minutes), so a
    training whose worker vanished is queued again even when no worker restarts under its name, and so is
    a waiting training whose message the broker lost.
    """
    if "training" not in sender.app.amqp.queues.consume_from:
        return
    from django.utils import timezone

    threading.Thread(
        target=_watch_for_interrupted_trainings, args=(sender.hostname, timezone.now()), name="training-recovery", daemon=True
    ).start()


def _watch_for_interrupted_trainings(hostname, started_at):
    """First the trainings that died under this worker's name before it started, then, every period, those whose
    worker went silent and those waiting for a message the broker lost. A failed pass (the database not up yet,
    say) is logged and tried again next period."""
    from django.conf import settings
    from django.db import connection

    from .services import training_jobs_recover

    first_pass = True
    while True:
        try:
            resumed = training_jobs_recover(worker=hostname, restarted_at=started_at if first_pass else None)
            first_pass = False
            if resumed:
                logger.info("queued again %d interrupted or lost training(s): %s", len(resumed), resumed)
        except Exception:
            logger.exception("looking for interrupted trainings failed; trying again later")
        finally:
            connection.close()  # this thread's own connection; a fresh one next time
        time.sleep(settings.TRAINING_STALE_SECONDS)

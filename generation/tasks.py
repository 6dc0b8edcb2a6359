"""Thin Celery tasks: take ids, load, call the runner; safe to deliver twice."""

import logging

from celery import shared_task
from celery.signals import worker_ready

logger = logging.getLogger(__name__)


@shared_task(name="generation.tasks.train_adapter_version", acks_late=True, reject_on_worker_lost=True)
def train_adapter_version(adapter_version_id):
    from .training import run_training_job  # torch loads in training workers only

    version = run_training_job(adapter_version_id=adapter_version_id, worker=train_adapter_version.request.hostname or "")
    return {"adapter_version": adapter_version_id, "status": version.status if version else "skipped"}


@worker_ready.connect
def resume_interrupted_trainings(sender, **kwargs):
    """A training worker that (re)starts picks up trainings whose worker died mid-job."""
    if "training" in sender.app.amqp.queues.consume_from:
        from .services import training_jobs_recover

        resumed = training_jobs_recover(worker=sender.hostname)
        logger.info("queued again %d interrupted training(s): %s", len(resumed), resumed)

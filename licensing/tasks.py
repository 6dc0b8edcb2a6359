"""Thin Celery tasks of the licensing side: take ids, call a service; safe to deliver twice."""

from celery import shared_task

from . import services

# SMTP errors (OSErrors) are retried, six times over about an hour.
MAIL_RETRIES = {"acks_late": True, "autoretry_for": (OSError,), "retry_backoff": 60, "retry_backoff_max": 3600,
                "max_retries": 6}


@shared_task(name="licensing.tasks.tell_staff_of_held_work", **MAIL_RETRIES)
def tell_staff_of_held_work(work_id):
    return "mailed" if services.held_work_tell_staff(work_id=work_id) else "not mailed"


@shared_task(name="licensing.tasks.tell_artist_of_copied_work", **MAIL_RETRIES)
def tell_artist_of_copied_work(work_id):
    return "mailed" if services.held_work_tell_copied_artist(work_id=work_id) else "not mailed"

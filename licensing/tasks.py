"""Thin Celery tasks of the licensing side: take ids, load, act; safe to deliver twice."""

from celery import shared_task
from django.core.mail import mail_admins
from django.urls import reverse

from .models import Work


@shared_task(name="licensing.tasks.tell_staff_of_held_work", acks_late=True, autoretry_for=(OSError,),
             retry_backoff=60, retry_backoff_max=3600, max_retries=6)
def tell_staff_of_held_work(work_id):
    """Mail ADMINS that an upload is held as another artist's image (SMTP errors, OSErrors, are retried)."""
    work = Work.objects.select_related("artist", "same_image_as__artist").filter(pk=work_id).first()
    if work is None or not work.ownership_held:
        return "not held"  # released or deleted before the mail went: nothing to ask
    other = work.same_image_as
    mail_admins(
        f"Work #{work.pk} is held for review: the same image as work #{other.pk} of another artist",
        f"{work.artist.display_name} ({work.artist.slug}) uploaded work #{work.pk}, the same image as work #{other.pk} "
        f"of {other.artist.display_name} ({other.artist.slug}). It cannot be opted in or shown until staff confirm "
        f"that its artist made it (the Work admin's action), or delete it.\n\n"
        f"Held work: {reverse('admin:licensing_work_change', args=[work.pk])}\n"
        f"Matched work: {reverse('admin:licensing_work_change', args=[other.pk])}\n",
    )
    return "mailed"

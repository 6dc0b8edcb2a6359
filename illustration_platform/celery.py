"""The Celery app. Workers: `celery -A illustration_platform worker -Q default,training,generation`."""

import os

from celery import Celery

from illustration_platform.startup import run_cleanly

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "illustration_platform.settings.local")

app = Celery("illustration_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _load_settings():
    from django.conf import settings

    # Touch the settings now so a bad environment ends the worker with one sentence.
    settings.INSTALLED_APPS  # noqa: B018


run_cleanly(_load_settings)
app.autodiscover_tasks()

"""The Celery app. Workers (README, *Production*): `-Q default` at any concurrency; `-Q training` with
`--pool solo`, one training at a time per worker (a training takes the machine's cores and memory)."""

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

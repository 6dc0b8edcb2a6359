"""Reachability of the parts the platform cannot work without."""

import time

from django.conf import settings
from django.db import connection


def _timed(check):
    started = time.monotonic()
    try:
        check()
    except Exception as error:  # any failure of the part means "down"; the reason is reported
        return {"ok": False, "error": f"{type(error).__name__}: {error}".strip()[:300]}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker():
    from illustration_platform.celery import app

    with app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)


def health_report():
    parts = {"database": _timed(check_database), "broker": _timed(check_broker)}
    return {"status": "ok" if all(part["ok"] for part in parts.values()) else "unavailable", **parts}

"""Reachability of the parts the platform cannot work without."""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)
# The check of each part still waiting from an earlier probe: a part that hangs past every timeout holds one
# thread (and connection) per process, not one per probe.
_waiting = {}


def _timed(check, result):
    started = time.monotonic()
    try:
        check()
    except Exception as error:  # any failure of the part means "down"; the reason is reported
        result.update(ok=False, error=f"{type(error).__name__}: {error}".strip()[:300])
    else:
        result.update(ok=True, ms=round((time.monotonic() - started) * 1000, 1))
    finally:
        connection.close()  # this thread's own database connection


def check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker():
    from illustration_platform.celery import app

    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        # kombu's file-system transport connects to nothing: the folders are the broker.
        for folder in dict.fromkeys([options["data_folder_in"], options["data_folder_out"], options["control_folder"]]):
            if not os.access(folder, os.W_OK | os.X_OK):
                logger.error("the embedded broker's folder %s is missing or not writable", folder)
                raise OSError("a folder of the embedded broker (CELERY_BROKER_FOLDER) is missing or not writable")
        return
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    socket_timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    with app.connection_for_write(connect_timeout=timeout, transport_options={**options, **socket_timeouts}) as broker:
        broker.ensure_connection(max_retries=1, timeout=timeout)


def health_report():
    """Each part is asked in a thread of its own, and one that has not answered within
    HEALTH_CHECK_TIMEOUT_SECONDS counts as down: a server that takes connections but never answers must
    not hold the probe, and the web worker serving it, for minutes."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    checks = {}
    for name, check in {"database": check_database, "broker": check_broker}.items():
        if name in _waiting and _waiting[name][1].is_alive():
            checks[name] = _waiting[name]  # asked again when that one ends; meanwhile it is still down
            continue
        result = {}
        thread = threading.Thread(target=_timed, args=(check, result), daemon=True)
        thread.start()
        checks[name] = _waiting[name] = (result, thread)
    report = {}
    for name, (result, thread) in checks.items():
        thread.join(max(deadline - time.monotonic(), 0))
        report[name] = dict(result) if result else {"ok": False, "error": f"no answer within {timeout} s"}
    return {"status": "ok" if all(part["ok"] for part in report.values()) else "unavailable", **report}

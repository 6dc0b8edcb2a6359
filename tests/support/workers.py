"""A real Celery worker process for integration tests, sharing the test database and media folder."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from illustration_platform.env import filesystem_broker_options

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_TEST_URL = os.environ.get("CELERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def running_test_database_url():
    """The URL of the database the running test uses (pytest-django's test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"])
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def broker_for(kind, tmp_path):
    """(url, transport options, extra worker environment) for the embedded broker or Redis."""
    if kind == "embedded":
        folder = tmp_path / "broker"
        return "filesystem://", filesystem_broker_options(folder), {"CELERY_BROKER_FOLDER": str(folder)}
    if kind == "redis":
        return REDIS_TEST_URL, {}, {}
    raise ValueError(kind)


@contextmanager
def celery_worker(broker_url, broker_env, queues, log_path, extra_env=None):
    """Start `celery worker` in its own process group; stop it (SIGTERM, then SIGKILL) on exit."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "illustration_platform.settings.test",
        "DATABASE_URL": running_test_database_url(),
        "CELERY_BROKER_URL": broker_url,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        **broker_env,
        **(extra_env or {}),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "illustration_platform", "worker",
        "-Q", ",".join(queues), "--pool", "solo", "-l", "info", "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

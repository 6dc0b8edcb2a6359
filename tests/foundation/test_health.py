import json
import os
import subprocess
import sys

import pytest

from tests.support.workers import REPO_ROOT, running_test_database_url

PROBE = "from django.test import Client; r = Client().get('/healthz'); print(r.status_code); print(r.content.decode())"


def healthz_in_subprocess(**env):
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", PROBE],
        cwd=REPO_ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "illustration_platform.settings.test", "ALLOWED_HOSTS": "testserver", **env},
        capture_output=True, text=True, timeout=120,
    )
    status, body = result.stdout.strip().split("\n", 1)
    return int(status), json.loads(body)


@pytest.mark.django_db
def test_healthz_is_200_when_database_and_broker_are_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["broker"]["ok"]


def test_healthz_is_503_when_the_database_is_unreachable():
    status, body = healthz_in_subprocess(DATABASE_URL="postgres://nobody@127.0.0.1:1/platform")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is False and "OperationalError" in body["database"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_unreachable():
    status, body = healthz_in_subprocess(
        DATABASE_URL=running_test_database_url(), CELERY_BROKER_URL="redis://127.0.0.1:1/0", HEALTH_CHECK_TIMEOUT_SECONDS="1"
    )
    assert status == 503
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is False


@pytest.fixture
def silent_server():
    """A port that takes connections and never answers, as a hung database or broker does."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.django_db
@pytest.mark.parametrize("part", ["database", "broker"])
def test_healthz_answers_within_its_timeout_when_a_part_never_answers(part, silent_server):
    import time

    hung = {
        "database": {"DATABASE_URL": f"postgres://nobody@127.0.0.1:{silent_server}/platform"},
        "broker": {"DATABASE_URL": running_test_database_url(), "CELERY_BROKER_URL": f"redis://127.0.0.1:{silent_server}/7"},
    }[part]
    started = time.monotonic()
    status, body = healthz_in_subprocess(HEALTH_CHECK_TIMEOUT_SECONDS="2", **hung)
    assert time.monotonic() - started < 30  # the process start included; without a deadline: 130 s and more
    assert status == 503 and body[part] == {"ok": False, "error": "no answer within 2 s"}


def test_healthz_says_the_embedded_broker_is_down_when_its_folder_is_gone(client, settings, tmp_path, monkeypatch):
    import shutil

    from illustration_platform.env import filesystem_broker_options

    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(tmp_path / "broker")
    shutil.rmtree(tmp_path / "broker")  # where a task would be written: train_adapter_version.delay() now fails
    monkeypatch.setattr("illustration_platform.site.health.check_database", lambda: None)
    body = client.get("/healthz").json()
    # The path is the operator's business (logged), not the probe's: the setting is named instead.
    assert body["broker"] == {"ok": False, "error": "OSError: a folder of the embedded broker (CELERY_BROKER_FOLDER) is missing or not writable"}


def test_a_part_that_hangs_holds_one_thread_however_many_probes(settings, monkeypatch):
    import threading
    import time

    from illustration_platform.site import health

    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    release, calls = threading.Event(), []

    def hang():
        calls.append(time.monotonic())
        release.wait(30)

    monkeypatch.setattr(health, "check_database", hang)
    monkeypatch.setattr(health, "check_broker", lambda: None)
    for _probe in range(3):
        report = health.health_report()
        assert report["database"] == {"ok": False, "error": "no answer within 1 s"} and report["broker"]["ok"]
    assert len(calls) == 1  # the later probes waited on the first one's check
    release.set()
    health._waiting["database"][1].join(5)
    monkeypatch.setattr(health, "check_database", lambda: None)
    assert health.health_report()["status"] == "ok"

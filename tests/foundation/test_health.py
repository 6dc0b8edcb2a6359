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

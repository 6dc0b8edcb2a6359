"""A real Celery worker process consumes a task through the broker; the result is read back."""

import pytest

from illustration_platform.celery import app
from illustration_platform.site.tasks import platform_probe
from tests.factories import UserFactory
from tests.support.workers import broker_for, celery_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_real_worker_runs_a_task_against_the_test_database(broker, tmp_path):
    url, transport_options, worker_env = broker_for(broker, tmp_path)
    user = UserFactory()
    log_path = tmp_path / "worker.log"
    with celery_worker(url, worker_env, ["default"], log_path):
        with app.connection_for_write(url, transport_options=transport_options) as connection:
            with connection.Producer() as producer:
                result = platform_probe.apply_async(args=[user.email], producer=producer)
        try:
            value = result.get(timeout=90)
        except Exception:
            pytest.fail("worker gave no result; its log:\n" + log_path.read_text(errors="replace")[-3000:])
    assert value == {"database": user._state.db and _vendor(), "user_exists": True}


def _vendor():
    from django.db import connection

    return connection.vendor

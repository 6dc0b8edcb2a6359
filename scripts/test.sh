#!/usr/bin/env bash
# The whole test suite. Uses DATABASE_URL and CELERY_BROKER_URL when set (CI: PostgreSQL and Redis),
# the embedded default otherwise. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/services.sh
# Idle OpenMP threads sleep: workers, the test process and their torch threads share the cores.
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest "$@"

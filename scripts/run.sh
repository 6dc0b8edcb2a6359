#!/usr/bin/env bash
# The embedded default on one machine: SQLite, the file-system Celery broker, the built-in base model,
# demo data, the web server and two Celery workers (training; default + generation). Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export DJANGO_SETTINGS_MODULE=illustration_platform.settings.local
# Idle OpenMP threads sleep instead of spinning: with torch in the web server and two workers on a
# small machine, spinning threads made every step several times slower.
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py seed_demo

training_worker=""
stop_all() {
  trap - EXIT
  # A second Ctrl-C (or SIGTERM, SIGHUP) while they stop: all stop at once. The workers hear only this script.
  trap 'kill -QUIT $(jobs -p) 2>/dev/null' INT TERM HUP
  # The training worker stops at once (a cold shutdown) instead of holding Ctrl-C up until its training ends:
  # the training stays under way and resumes from its checkpoint at the next start.
  [ -z "$training_worker" ] || kill -QUIT "$training_worker" 2>/dev/null || true
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
}
# A closed terminal (SIGHUP) stops everything too. The workers run in sessions of their own (setsid), so that only
# stop_all signals them: a worker whose output is not a terminal takes SIGHUP as "restart", and would come back
# training with no web server and no script left to stop it.
trap stop_all EXIT INT TERM HUP
setsid .venv/bin/celery -A illustration_platform worker -Q training --pool solo -n "training@%h" -l info &
training_worker=$!
setsid .venv/bin/celery -A illustration_platform worker -Q default,generation --pool solo -n "general@%h" -l info &
# In the background, waited for: bash holds a trap back until a foreground command ends, while `wait` returns at
# once, so SIGTERM (kill, systemd) stops all as Ctrl-C does.
.venv/bin/python manage.py runserver --noreload "${HOST:-127.0.0.1}:${PORT:-8000}" &
wait $!

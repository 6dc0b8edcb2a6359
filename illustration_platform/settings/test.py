"""The test suite: the local settings with a fast password hasher and a shareable SQLite test file.

The SQLite test database is a file (not in memory) so that a real Celery worker process
started by a test reads the same rows as the test itself.
"""

import os

from illustration_platform.env import env_path, filesystem_broker_options

from .local import *  # noqa: F403
from .local import CELERY_BROKER_URL, DATA_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The live server's request threads close their connections after each request, so the test
# database can be dropped at the end of the run.
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One file per test run, so two runs on one machine never share (and corrupt) a database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-platform-{os.getpid()}.sqlite3")}

# Tests never share a broker folder with a locally running platform's workers.
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_FOLDER = env_path("CELERY_BROKER_FOLDER", DATA_DIR / "test-broker")
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(CELERY_BROKER_FOLDER)

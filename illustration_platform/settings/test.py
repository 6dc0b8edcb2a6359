"""The test suite: the local settings with a fast password hasher and a shareable SQLite test file.

The SQLite test database is a file (not in memory) so that a real Celery worker process
started by a test reads the same rows as the test itself.
"""

from .local import *  # noqa: F403
from .local import DATA_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-platform.sqlite3")}

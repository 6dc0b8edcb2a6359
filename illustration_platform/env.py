"""Reading configuration from the environment.

Every reader raises ImproperlyConfigured with one sentence that names the
variable, the bad value and what was expected; manage.py, the WSGI entry point
and the Celery app print that sentence instead of a traceback.
"""

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "sqla+sqlite", "sqla+postgresql", "memory"}


def env_str(name, default=None):
    return os.environ.get(name, default)


def env_bool(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}.")


def env_int(name, default, minimum=None, maximum=None):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}.")
    return value


def env_choice(name, default, choices):
    raw = os.environ.get(name, default)
    if raw not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(sorted(choices))}, got {raw!r}.")
    return raw


def env_json(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be JSON ({error.msg} at character {error.pos}), got {raw!r}.") from None


def env_list(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_addresses(name):
    """A comma-separated list of email addresses, as Django's ADMINS wants them: (name, address) pairs."""
    addresses = env_list(name, [])
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ImproperlyConfigured(f"{name} must be email addresses separated by commas, got {address!r}.") from None
    return [("", address) for address in addresses]


def env_path(name, default):
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else Path(default)


def env_database(name, default_url):
    raw = os.environ.get(name) or default_url
    hint = "expected e.g. postgres://user@127.0.0.1:5432/platform or sqlite:////path/to/db.sqlite3"
    try:
        config = dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True)
    except Exception:  # dj-database-url raises several types for unparsable URLs
        raise ImproperlyConfigured(f"{name} {raw!r} is not a database URL ({hint}).") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"{name} {raw!r} is not a database URL ({hint}).")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Background workers and the web server share one SQLite file: readers never block the writer (WAL),
        # writers take the lock when their transaction starts and wait for it instead of failing.
        config.setdefault("OPTIONS", {}).update(
            {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
        )
        config["CONN_MAX_AGE"] = 0
    elif not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} {raw!r} names no database ({hint}).")
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # libpq waits for ever on a server that takes the connection but never answers.
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
    return config


def env_broker_url(name, default_url):
    raw = os.environ.get(name) or default_url
    scheme = urlparse(raw).scheme
    if scheme not in BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"{name} {raw!r} is not a supported broker URL (expected redis://127.0.0.1:6379/0, "
            f"amqp://guest:guest@127.0.0.1:5672//, or filesystem:// for the embedded broker)."
        )
    return raw


def made_folder(path, setting):
    """`path`, created if missing; one sentence naming the setting when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImproperlyConfigured(f"{setting}: cannot create the folder {path} ({error.strerror or error}).") from None
    return path


def secret_key_from_file(path):
    """The local-run secret key: made once, kept in the data directory, readable only by its owner."""
    made_folder(path.parent, "PLATFORM_DATA_DIR")
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(get_random_secret_key())
    return path.read_text().strip()


def filesystem_broker_options(folder):
    """kombu's file-system transport: the embedded broker, a folder shared by the web server and the workers."""
    setting = "CELERY_BROKER_FOLDER" if os.environ.get("CELERY_BROKER_FOLDER") else "PLATFORM_DATA_DIR"
    for sub in ("queue", "control"):
        made_folder(folder / sub, setting)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }

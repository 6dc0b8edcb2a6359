"""A bad environment ends start-up with one clear sentence, never a traceback."""

import os
import secrets
import subprocess
import sys

import pytest

from tests.support.workers import REPO_ROOT

STRONG_KEY = secrets.token_urlsafe(60)


def run_manage(*args, **env):
    base = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


BAD_ENVIRONMENTS = [
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL 'not a url' is not a database URL"),
    ({"DATABASE_URL": "postgres://127.0.0.1:5432"}, "names no database"),
    ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
    ({"CELERY_BROKER_URL": "kafka://127.0.0.1"}, "CELERY_BROKER_URL 'kafka://127.0.0.1' is not a supported broker URL"),
    ({"HEALTH_CHECK_TIMEOUT_SECONDS": "soon"}, "HEALTH_CHECK_TIMEOUT_SECONDS must be a whole number, got 'soon'"),
    ({"HEALTH_CHECK_TIMEOUT_SECONDS": "0"}, "HEALTH_CHECK_TIMEOUT_SECONDS must be at least 1"),
    ({"TRAINING_THREADS": "0"}, "TRAINING_THREADS must be at least 1"),
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of CRITICAL, DEBUG, ERROR, INFO, WARNING, got 'verbose'"),
    ({"PLATFORM_DATA_DIR": "/proc/no-folders-here"}, "PLATFORM_DATA_DIR: cannot create the folder /proc/no-folders-here/"),
    ({"TRAINING_PRESET_OVERRIDES": '{"standard": {"stepz": 600}}'}, "TRAINING_PRESET_OVERRIDES: 'standard': unknown training setting(s): stepz"),
    ({"TRAINING_PRESET_OVERRIDES": '{"standard": {"steps": "600"}}'}, "TRAINING_PRESET_OVERRIDES: 'standard': steps must be a whole number (got '600')"),
    ({"TRAINING_PRESET_OVERRIDES": '{"fast": {"steps": 60}}'}, "TRAINING_PRESET_OVERRIDES: unknown preset 'fast'; choose from quick, standard, thorough"),
    ({"TRAINING_PRESET_OVERRIDES": '[600]'}, "TRAINING_PRESET_OVERRIDES: must be a JSON object of presets and their settings"),
    ({"EMAIL_PORT": "smtp"}, "EMAIL_PORT must be a whole number, got 'smtp'"),
    ({"ADMINS": "staff@example.test, Staff <ops>"}, "ADMINS must be email addresses separated by commas, got 'Staff <ops>'"),
    ({"SITE_URL": "illustration.example"}, "SITE_URL must start with http:// or https://, got 'illustration.example'"),
    ({"EMAIL_PORT": "70000"}, "EMAIL_PORT must be at most 65535, got 70000"),
    ({"DJANGO_SETTINGS_MODULE": "illustration_platform.settings.production", "SECRET_KEY": STRONG_KEY, "ALLOWED_HOSTS": "example.com",
      "SECURE_HSTS_INCLUDE_SUBDOMAINS": "false"}, "SECURE_HSTS_PRELOAD needs SECURE_HSTS_INCLUDE_SUBDOMAINS"),
    ({"EMAIL_USE_TLS": "yes", "EMAIL_USE_SSL": "yes"}, "EMAIL_USE_TLS (STARTTLS, usually port 587) and EMAIL_USE_SSL (port 465) exclude each other"),
    ({"DJANGO_SETTINGS_MODULE": "illustration_platform.settings.production", "ALLOWED_HOSTS": "example.com"}, "SECRET_KEY must be set in production"),
    ({"DJANGO_SETTINGS_MODULE": "illustration_platform.settings.production", "SECRET_KEY": "short", "ALLOWED_HOSTS": "example.com"}, "SECRET_KEY is too weak"),
    ({"DJANGO_SETTINGS_MODULE": "illustration_platform.settings.production", "SECRET_KEY": STRONG_KEY}, "ALLOWED_HOSTS must be set in production"),
    ({"DJANGO_SETTINGS_MODULE": "illustration_platform.settings.production", "SECRET_KEY": STRONG_KEY, "ALLOWED_HOSTS": "*"}, "not '*'"),
]


@pytest.mark.parametrize("env,message", BAD_ENVIRONMENTS, ids=[str(case[0]) for case in BAD_ENVIRONMENTS])
def test_bad_value_gives_one_clear_sentence(env, message):
    result = run_manage("check", **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_database_is_one_sentence():
    result = run_manage("migrate", DATABASE_URL="postgres://nobody@127.0.0.1:1/platform")
    assert result.returncode == 2
    assert result.stderr.startswith("The database (127.0.0.1:1/platform) cannot be used:")
    assert "Traceback" not in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_SETTINGS_MODULE="illustration_platform.settings.production", SECRET_KEY=STRONG_KEY, ALLOWED_HOSTS="illustration.example",
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_reads_its_mail_server_and_hsts_from_the_environment():
    production = {"DJANGO_SETTINGS_MODULE": "illustration_platform.settings.production", "SECRET_KEY": STRONG_KEY,
                  "ALLOWED_HOSTS": "illustration.example"}
    names = ["EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS",
             "EMAIL_USE_SSL", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD"]
    show = f"from django.conf import settings; print(*(getattr(settings, name) for name in {names!r}), sep='|')"

    result = run_manage("shell", "--no-imports", "-c", show, **production)
    assert result.stdout.strip().split("|") == [
        "django.core.mail.backends.smtp.EmailBackend", "localhost", "25", "", "", "False", "False", "True", "True"], result.stderr
    result = run_manage("shell", "--no-imports", "-c", show, **production, EMAIL_HOST="smtp.example", EMAIL_PORT="587", EMAIL_HOST_USER="mailer",
                        EMAIL_HOST_PASSWORD="secret", EMAIL_USE_TLS="true", SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
                        SECURE_HSTS_PRELOAD="no")
    assert result.stdout.strip().split("|") == [
        "django.core.mail.backends.smtp.EmailBackend", "smtp.example", "587", "mailer", "secret", "True", "False", "False",
        "False"], result.stderr


def test_admins_and_the_server_email_come_from_the_environment():
    show = "from django.conf import settings; print(settings.ADMINS, settings.SERVER_EMAIL, sep='|')"
    result = run_manage("shell", "--no-imports", "-c", show, ADMINS="legal@example.test, ops@example.test",
                        DEFAULT_FROM_EMAIL="platform@example.test")
    assert result.stdout.strip() == "[('', 'legal@example.test'), ('', 'ops@example.test')]|platform@example.test", result.stderr
    assert run_manage("shell", "--no-imports", "-c", show).stdout.strip() == "[]|noreply@localhost"

"""Settings shared by every environment; each value comes from the environment with a safe default.

The embedded default (no variables set) runs on one machine with no servers to install:
SQLite under the data directory, a file-system Celery broker and the built-in base model.
"""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from generation.ml import BUILTIN_BASE_MODEL, default_threads
from generation.ml.training_config import check_preset_overrides
from illustration_platform.env import (
    env_addresses,
    env_bool,
    env_broker_url,
    env_choice,
    env_database,
    env_int,
    env_json,
    env_list,
    env_path,
    env_str,
    filesystem_broker_options,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = env_path("PLATFORM_DATA_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_htmx",
    "axes",
    "illustration_platform.accounts",
    "illustration_platform.site",
    "licensing",
    "generation",
    "revenue",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "illustration_platform.api.errors.api_not_found_as_json",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it turns a locked-out log-in into the lockout answer
]

ROOT_URLCONF = "illustration_platform.urls"
WSGI_APPLICATION = "illustration_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "illustration_platform.accounts.context_processors.roles",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{DATA_DIR / 'platform.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "site:home"
LOGOUT_REDIRECT_URL = "site:home"
# Failed log-ins (site, admin and API token alike) are counted per account and address by django-axes: after
# LOGIN_FAILURE_LIMIT in a row, that account cannot log in from that address for LOGIN_LOCKOUT_MINUTES, so a
# password cannot be guessed without limit, and nobody can lock an artist out from everywhere by guessing wrong.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # failures only: no record of every artist's log-ins and addresses
AXES_LOCKOUT_CALLABLE = "illustration_platform.accounts.lockout.locked_out"
AXES_USERNAME_CALLABLE = "illustration_platform.accounts.lockout.account_key"
AXES_CLIENT_IP_CALLABLE = "illustration_platform.accounts.lockout.client_address"
# Reverse proxies in front of the platform that append to X-Forwarded-For (0: none, clients connect directly).
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0, minimum=0)
# Attempts during a lockout do not extend it: else one guess a quarter hour would keep an artist locked out.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_USERNAME_FORM_FIELD = "username"  # the log-in form's and the token endpoint's name for the address
AXES_VERBOSE = False  # no banner at every start of every process
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ja", _("Japanese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", DATA_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files straight from the apps' folders when collectstatic has not been run (local runs).
WHITENOISE_USE_FINDERS = True

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "noreply@localhost")
# The SMTP server that production's backend sends through (password resets).
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 30  # a mail server that never answers must not hold a web worker
# Staff who are mailed when an upload is held as another artist's image, and (as Django does with ADMINS)
# the tracebacks of server errors in production.
ADMINS = env_addresses("ADMINS")
SERVER_EMAIL = env_str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
# The site's address, for links in mails that a worker sends (no request to take the host from).
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
if not SITE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"SITE_URL must start with http:// or https://, got {SITE_URL!r}.")
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS (STARTTLS, usually port 587) and EMAIL_USE_SSL (port 465) exclude each other; set one.")

# Every script and style is served by the platform itself; nothing inline, nothing from a CDN.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "illustration_platform.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "illustration_platform.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Illustration platform API",
    "DESCRIPTION": "Artists' works and consent, style adapters, generation, provenance and revenue.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "illustration_platform.api.errors.document_errors",
    ],
}

# Celery: one queue per kind of work so GPU hosts can take only `generation` and `training`.
CELERY_BROKER_URL = env_broker_url("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_FOLDER = env_path("CELERY_BROKER_FOLDER", DATA_DIR / "broker")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    filesystem_broker_options(CELERY_BROKER_FOLDER) if CELERY_BROKER_URL.startswith("filesystem://") else {}
)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "generation.tasks.train_*": {"queue": "training"},
    "generation.tasks.generate_*": {"queue": "generation"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TIMEZONE = TIME_ZONE

# The base diffusion model: the built-in one unless a diffusers folder on disk is configured.
BASE_MODEL = env_path("BASE_MODEL", BUILTIN_BASE_MODEL)

# Style training. Adapters and training work stay outside MEDIA_ROOT: they are never served as files.
ADAPTER_ROOT = env_path("ADAPTER_ROOT", DATA_DIR / "adapters")
TRAINING_WORK_ROOT = env_path("TRAINING_WORK_ROOT", DATA_DIR / "training")
STYLE_MIN_WORKS = env_int("STYLE_MIN_WORKS", 10, minimum=1)
# Per-preset changes to the training hyper-parameters, e.g. {"standard": {"steps": 600}}.
try:
    TRAINING_PRESET_OVERRIDES = check_preset_overrides(env_json("TRAINING_PRESET_OVERRIDES", {}))
except ValueError as error:  # checked here, or every "Train my style" would fail
    raise ImproperlyConfigured(f"TRAINING_PRESET_OVERRIDES: {error}.") from None
TRAINING_MAX_ATTEMPTS = env_int("TRAINING_MAX_ATTEMPTS", 3, minimum=1)
# A training job whose worker has not reported for this long is taken to be dead and is resumed.
TRAINING_STALE_SECONDS = env_int("TRAINING_STALE_SECONDS", 60, minimum=1)
# A run whose loop has not called back for this long is taken to be stuck: its heartbeat stops, it goes stale.
TRAINING_MAX_SILENCE_SECONDS = env_int("TRAINING_MAX_SILENCE_SECONDS", 900, minimum=1)
# torch's CPU threads in a training job (default: half the cores; see generation.ml.default_threads).
TRAINING_THREADS = env_int("TRAINING_THREADS", default_threads(), minimum=1)
# What happens to the weights of an adapter retired by a withdrawal: "keep" (for audit only) or "delete".
RETIRED_ADAPTER_FILES = env_choice("RETIRED_ADAPTER_FILES", "keep", {"keep", "delete"})

HEALTH_CHECK_TIMEOUT_SECONDS = env_int("HEALTH_CHECK_TIMEOUT_SECONDS", 3, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})},
    # django-axes says at INFO every failure it counts and every count a log-in clears ("Deleted 0 failed login
    # attempts"); its warnings (a repeated failure, a lockout) are the ones worth reading.
    "loggers": {"axes": {"level": "WARNING"}},
}

# Licensing: limits for uploaded works (one validation module applies them to pages, API and import).
WORK_MAX_BYTES = env_int("WORK_MAX_BYTES", 20 * 1024 * 1024, minimum=1)
WORK_MAX_PIXELS = env_int("WORK_MAX_PIXELS", 40_000_000, minimum=1)
WORK_MIN_SIDE_PX = env_int("WORK_MIN_SIDE_PX", 256, minimum=1)
# Works whose perceptual hashes (imagehash phash, 64 bits) differ in at most this many bits are flagged as near-duplicates.
WORK_NEAR_DUPLICATE_DISTANCE = env_int("WORK_NEAR_DUPLICATE_DISTANCE", 6, minimum=0)

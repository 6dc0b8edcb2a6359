"""The embedded default: one machine, no servers to install, a secret key made and kept locally."""

from illustration_platform.env import env_bool, env_str, made_folder, secret_key_from_file

from .base import *  # noqa: F403
from .base import DATA_DIR, STATIC_ROOT

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY") or secret_key_from_file(DATA_DIR / "secret_key")
# WhiteNoise serves from the apps' folders here; an empty collect folder keeps it quiet.
made_folder(STATIC_ROOT, "PLATFORM_DATA_DIR")

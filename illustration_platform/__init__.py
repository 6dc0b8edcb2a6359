"""The platform's core package.

Not called `platform`: that name would hide Python's own `platform` module, which `uuid`
(and so Django) imports at start-up.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]

import os

from django.core.wsgi import get_wsgi_application

from illustration_platform.startup import run_cleanly

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "illustration_platform.settings.production")
application = run_cleanly(get_wsgi_application)

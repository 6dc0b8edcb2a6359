from celery import shared_task
from django.contrib.auth import get_user_model
from django.db import connection


@shared_task(name="site.platform_probe")
def platform_probe(email):
    """Diagnostic task: proves a worker reached through the broker shares the platform's database."""
    return {"database": connection.vendor, "user_exists": get_user_model().objects.filter(email=email).exists()}

"""Demo accounts for a local run: an admin, a subscriber and an artist, with their credentials printed."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from licensing.models import Artist

DEMO_PASSWORD = "demo-password-123"
DEMO_USERS = [
    {"email": "admin@demo.local", "display_name": "Demo admin", "is_staff": True, "is_superuser": True},
    {"email": "subscriber@demo.local", "display_name": "Demo subscriber"},
    {"email": "artist@demo.local", "display_name": "Demo artist", "artist_slug": "demo-artist"},
]


class Command(BaseCommand):
    help = "Create (or reset) the demo users of a local run and print their credentials."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo makes accounts with a published password; it runs only with DEBUG on.")
        with transaction.atomic():
            for spec in DEMO_USERS:
                self._seed_user(dict(spec))
        self.stdout.write("Demo accounts (password for each: %s):" % DEMO_PASSWORD)
        for spec in DEMO_USERS:
            self.stdout.write(f"  {spec['email']:<24} {spec['display_name']}")

    def _seed_user(self, spec):
        slug = spec.pop("artist_slug", None)
        user, _ = get_user_model().objects.update_or_create(email=spec.pop("email"), defaults=spec)
        user.set_password(DEMO_PASSWORD)
        user.save()
        if slug:
            Artist.objects.get_or_create(user=user, defaults={"display_name": user.display_name, "slug": slug})

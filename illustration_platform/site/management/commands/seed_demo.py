"""Demo data for a local run: an admin, a subscriber, a new artist, and the demo artists with published styles."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from generation.demo import DemoMismatch, demo_artist_install, demo_manifests
from generation.selectors import usable_adapter_versions
from licensing.models import Artist
from licensing.services import artist_become

DEMO_PASSWORD = "demo-password-123"
DEMO_USERS = [
    {"email": "admin@demo.local", "display_name": "Demo admin", "is_staff": True, "is_superuser": True},
    {"email": "subscriber@demo.local", "display_name": "Demo subscriber"},
    {"email": "artist@demo.local", "display_name": "Demo artist", "artist_slug": "demo-artist"},
]


class Command(BaseCommand):
    help = "Create the demo users and demo artists of a local run (again: reset their passwords) and print their credentials."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo makes accounts with a published password; it runs only with DEBUG on.")
        with transaction.atomic():
            for spec in DEMO_USERS:
                self._seed_user(dict(spec))
        styled = []
        for manifest in demo_manifests():
            try:
                style = demo_artist_install(manifest=manifest, password=DEMO_PASSWORD)
            except DemoMismatch as mismatch:
                self.stderr.write(f"Demo artist {manifest['slug']} skipped: {mismatch}")
                continue
            styled.append((f"{manifest['slug']}@demo.local", f"{manifest['artist']} (style '{style.name}' {self._state(style)})"))
        self.stdout.write("Demo accounts (password for each: %s):" % DEMO_PASSWORD)
        for email, description in [(spec["email"], spec["display_name"]) for spec in DEMO_USERS] + styled:
            self.stdout.write(f"  {email:<28} {description}")

    @staticmethod
    def _state(style):
        if usable_adapter_versions(style_ids=[style.pk]).exists():
            return "published"
        if style.taken_down_at is not None:
            return "taken down by staff"
        return "published, not in use (see the style page)" if style.published_version_id else "not published"

    def _seed_user(self, spec):
        slug = spec.pop("artist_slug", None)
        user, _ = get_user_model().objects.update_or_create(email=spec.pop("email"), defaults=spec)
        user.set_password(DEMO_PASSWORD)
        user.save()
        if slug and not Artist.objects.filter(user=user).exists():
            artist_become(user=user, display_name=user.display_name, slug=slug, accept_agreement=True)

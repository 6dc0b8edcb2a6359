"""Bulk import of an artist's works from a folder: `name.png` with its caption in `name.txt` beside it."""

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from generation.ml.captions import CaptionNotText, decode_caption
from licensing import services
from licensing.models import Artist
from licensing.validation import ImageRefused


# Files that are never works: caption sidecars and other text beside the images.
SIDECAR_SUFFIXES = {".txt", ".caption", ".json", ".md"}


class Command(BaseCommand):
    help = (
        "Import every file in DIR (sorted by name) as a work of the artist with EMAIL; NAME.txt beside an image is its "
        "caption. Prints one JSON line per file ({file, status: created|duplicate|rejected, reason}) and a JSON summary."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", help="the folder to import")
        parser.add_argument("--artist", required=True, metavar="EMAIL", help="the artist's account email")
        parser.add_argument("--create-artist", action="store_true", help="create the user and artist profile if missing")

    def handle(self, *args, directory, artist, create_artist, **options):
        folder = Path(directory)
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
        profile = self._artist(artist.strip().lower(), create_artist)
        counts = {"created": 0, "duplicate": 0, "rejected": 0}
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() in SIDECAR_SUFFIXES:
                continue
            line = {"file": path.name}
            try:
                caption = self._caption(path.with_suffix(".txt"))
                result = services.work_upload(artist=profile, data=path.read_bytes(), filename=path.name, caption=caption)
            except (ImageRefused, services.LicensingError) as error:
                line.update(status="rejected", reason=error.message)
            except CaptionNotText as error:  # a mangled caption would be trained on: refuse the work instead
                line.update(status="rejected", reason=str(error))
            else:
                line.update(status=result.status, work=result.work.pk, reason=str(result.message) or None)
                if result.warnings:
                    line["warnings"] = [str(warning) for warning in result.warnings]
            counts[line["status"]] += 1
            self.stdout.write(json.dumps(line, ensure_ascii=False))
        self.stdout.write(json.dumps({"summary": counts}))

    @staticmethod
    def _caption(caption_file):
        if not caption_file.is_file():
            return ""
        try:
            return decode_caption(caption_file.read_bytes()).strip()
        except CaptionNotText as error:
            raise CaptionNotText(f"{caption_file.name} {error}; save it as UTF-8 and import the folder again.") from None

    def _artist(self, email, create):
        User = get_user_model()
        user = User.objects.filter(email=email).first()
        if user is not None and Artist.objects.filter(user=user, left_at__isnull=True).exists():
            return user.artist
        if not create:
            if user is None:
                raise CommandError(f"No user has the email {email}; pass --create-artist to create one.")
            raise CommandError(f"{email} is not an artist; pass --create-artist to make them one.")
        with transaction.atomic():
            if user is None:
                user = User.objects.create_user(email=email, password=None, display_name=email.split("@")[0])
            base = slugify(user.display_name or email.split("@")[0]) or "artist"
            slug, n = base, 1
            while Artist.objects.filter(slug=slug).exclude(user=user).exists():
                n += 1
                slug = f"{base}-{n}"
            try:
                return services.artist_become(user=user, display_name=user.display_name or base, slug=slug, accept_agreement=True)
            except services.LicensingError as error:
                raise CommandError(error.message) from None

"""Every write of the licensing app: `<noun>_<verb>(*, ...)` inside one transaction each.

Files are written only after validation passes, inside the transaction; if the transaction fails they are
deleted again before the error propagates. Deleting files of removed works happens on commit.
"""

import io
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import imagehash
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import mail_admins, send_mail
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from PIL import Image, ImageChops

import uuid

from . import hooks
from .models import OWNERSHIP_HELD_REASON, Artist, ConsentEvent, ConsentTerms, DatasetSnapshot, Work, snapshot_fingerprint
from .validation import validate_image

logger = logging.getLogger(__name__)


class LicensingError(Exception):
    """A request the rules refuse; `message` is one sentence for the user."""

    def __init__(self, message, code="invalid"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class UploadResult:
    status: str  # "created" or "duplicate"
    work: Work
    message: str = ""
    warnings: list = field(default_factory=list)


# ---------------------------------------------------------------- artists


def artist_become(*, user, display_name, slug, bio="", links="", payout_contact="", accept_agreement,
                  agreement_version=None, agreement_language=None):
    """Make `user` an artist (or bring back one who left), accepting the current artist agreement.

    `agreement_version` is the version the person was shown; when given, a different current version is refused.
    `agreement_language` is the language it was shown in (see `_language_read`)."""
    agreement = ConsentTerms.current(ConsentTerms.Kind.ARTIST_AGREEMENT)
    if agreement is None:
        raise LicensingError(_("No artist agreement has been published yet; please try again later."))
    if not accept_agreement:
        raise LicensingError(_("You must accept the artist agreement to become an artist."))
    if agreement_version is not None and agreement_version != agreement.version:
        raise LicensingError(_(
            "The artist agreement in force is now version %(version)s, not the version you were shown. Read version "
            "%(version)s, then accept it; nothing was changed."
        ) % {"version": agreement.version}, code="terms_changed")
    agreement_language = _language_read(agreement, agreement_language)
    with transaction.atomic():
        if Artist.objects.filter(slug=slug).exclude(user=user).exists():
            raise LicensingError(_("That address is taken; choose another slug."), code="slug_taken")
        artist, created = Artist.objects.select_for_update().get_or_create(
            user=user, defaults={"display_name": display_name, "slug": slug}
        )
        if not created and not artist.has_left:
            raise LicensingError(_("You are already an artist."), code="already_artist")
        artist.display_name = display_name
        artist.slug = slug
        artist.bio = bio
        artist.links = links
        artist.payout_contact = payout_contact
        artist.agreement = agreement
        artist.agreement_accepted_at = timezone.now()
        artist.agreement_language = agreement_language
        artist.left_at = None
        artist.save()
    return artist


def artist_update(*, artist, **fields):
    allowed = {"display_name", "slug", "bio", "links", "payout_contact", "avatar"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"artist_update cannot change {sorted(unknown)}")
    with transaction.atomic():
        if "slug" in fields and Artist.objects.filter(slug=fields["slug"]).exclude(pk=artist.pk).exists():
            raise LicensingError(_("That address is taken; choose another slug."), code="slug_taken")
        for name, value in fields.items():
            setattr(artist, name, value)
        artist.save()
    return artist


def artist_leave(*, artist, actor):
    """The artist leaves: every consent is withdrawn (one hook call), every work deleted, the profile hidden."""
    with transaction.atomic():
        artist = Artist.objects.select_for_update().get(pk=artist.pk)
        works = list(Work.objects.select_for_update().filter(artist=artist, status=Work.Status.ACTIVE))
        works_withdraw(works=works, actor=actor, reason=gettext_noop("The artist left the platform."))
        for work in works:
            _work_remove(work)
        if artist.avatar:
            name = artist.avatar.name
            transaction.on_commit(lambda: default_storage.delete(name))
            artist.avatar = ""
        artist.left_at = timezone.now()
        artist.save()
    return artist


# ---------------------------------------------------------------- works


def work_upload(*, artist, data, filename="", caption=""):
    """Validate and store one work. Raises ImageRefused; returns UploadResult('duplicate') for exact copies."""
    if artist.has_left:
        raise LicensingError(_("You have left the platform; become an artist again to upload works."))
    image = validate_image(data, filename=filename)
    written = []
    try:
        with transaction.atomic():
            Artist.objects.select_for_update().filter(pk=artist.pk).first()
            _lock_picture(image.phash)
            existing = Work.objects.filter(artist=artist, sha256=image.sha256, status=Work.Status.ACTIVE).first()
            if existing is not None:
                return UploadResult(
                    "duplicate", existing, _("This image is already among your works (work #%(id)s).") % {"id": existing.pk}
                )
            work = Work(
                artist=artist,
                original_name=(filename or "")[-255:],
                original_format=image.format,
                sha256=image.sha256,
                phash=image.phash,
                width=image.width,
                height=image.height,
                caption=(caption or "").strip(),
                do_not_train=bool(image.do_not_train_reason),
                do_not_train_reason=image.do_not_train_reason,
                do_not_train_params=image.do_not_train_params,
                near_duplicate_of=_near_duplicate(artist, image.phash),
                same_image_as=_same_image_of_another_artist(artist, image),
            )
            stem = uuid.uuid4().hex
            work.original.save(f"{stem}-original.{image.extension}", ContentFile(image.data), save=False)
            written.append(work.original.name)
            work.training_image.save(f"{stem}-train.png", ContentFile(image.training_png), save=False)
            written.append(work.training_image.name)
            work.save()
            if work.ownership_held:
                transaction.on_commit(partial(_tell_of_hold, work.pk))
    except IntegrityError:
        _delete_files(written)
        existing = Work.objects.filter(artist=artist, sha256=image.sha256, status=Work.Status.ACTIVE).first()
        if existing is None:
            raise
        return UploadResult("duplicate", existing, _("This image is already among your works (work #%(id)s).") % {"id": existing.pk})
    except BaseException:
        _delete_files(written)
        raise
    warnings = []
    if work.near_duplicate_of_id:
        warnings.append(_("This image looks very like work #%(id)s.") % {"id": work.near_duplicate_of_id})
    if work.do_not_train:
        warnings.append(work.do_not_train_reason_shown)
    if work.ownership_held:
        warnings.append(str(OWNERSHIP_HELD_REASON))
    return UploadResult("created", work, "", warnings)


def _tell_of_hold(work_id):
    """Queue the mails about a new hold: to staff (when ADMINS names any) and to the artist whose work it copies."""
    from .tasks import tell_artist_of_copied_work, tell_staff_of_held_work  # the tasks call back into this module

    tasks = [tell_staff_of_held_work, tell_artist_of_copied_work] if settings.ADMINS else [tell_artist_of_copied_work]
    for task in tasks:
        try:
            task.delay(work_id)
        except Exception:  # the broker is down: the hold stands, staff find it under the admin's filter, the artist
            logger.warning("could not queue %s for held work %s", task.name, work_id, exc_info=True)  # in the studio


# The first of PostgreSQL's two advisory-lock keys, naming this lock's kind so that no other lock shares its keys.
PICTURE_LOCK_KIND = 0x57524B  # "WRK"


def _lock_picture(phash):
    """Uploads of one picture (one perceptual hash) by different artists, one at a time: each upload locks only its
    own artist, so two artists uploading one image at once would each miss the other's. SQLite already runs one
    write transaction at a time (IMMEDIATE); PostgreSQL takes a lock on the hash, released at commit (folded to
    the 32 bits of a key: two pictures that share a key only wait for each other)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [PICTURE_LOCK_KIND, int(phash, 16) % 2**32 - 2**31])


# A copy's pixels stay within this of the original's (of 255, the largest channel's difference at 32x32 px), all
# but 1% of them: measured at most 23 for JPEG at quality 30, 48 for that at half size, and at least 85 between
# different drawings that share a perceptual hash.
COPY_PIXEL_DIFFERENCE = 64
# At most this many works that share the upload's perceptual hash are compared by their pixels: a hash that many
# works share belongs to near-blank images (every flat colour has the same one), and each comparison decodes a file.
PICTURES_COMPARED = 10


def _same_image_of_another_artist(artist, image):
    """The earliest active work of another artist (not itself held as a copy) that is this file, or a re-encoded
    or resized copy of it. Candidates are found by exact hashes through the index (a hash distance would read
    every artist's works on each upload); a shared perceptual hash is confirmed by the pixels, since different
    simple drawings share one (a pink and an orange circle at one place on one background)."""
    others = Work.objects.filter(status=Work.Status.ACTIVE).exclude(artist=artist).not_held_for_review().order_by("pk")
    same_file = others.filter(sha256=image.sha256).first()
    if same_file is not None:
        return same_file
    ours = None  # decoded only once there is a work to compare with: most uploads share no hash
    for other in others.filter(phash=image.phash)[:PICTURES_COMPARED]:
        if ours is None:
            ours = _thumbnail(io.BytesIO(image.training_png))
        try:
            with other.training_image.open("rb") as file:
                theirs = _thumbnail(file)
        except (OSError, ValueError):  # its file is missing or unreadable: nothing to compare, so not held on it
            continue
        red, green, blue = ImageChops.difference(ours, theirs).split()
        largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
        if sum(largest.histogram()[COPY_PIXEL_DIFFERENCE + 1:]) <= 0.01 * 32 * 32:
            return other
    return None


def _thumbnail(file):
    with Image.open(file) as image:
        return image.convert("RGB").resize((32, 32), Image.Resampling.BOX)


def held_work_tell_staff(*, work_id):
    """Mail ADMINS about a work held for review, once (a task delivered twice sends one mail); False when it was
    released, deleted or already told of. The mail goes inside the transaction: if recording it fails, it is sent
    again rather than never."""
    with transaction.atomic():
        work = (
            Work.objects.select_for_update(of=("self",)).select_related("artist", "same_image_as__artist")
            .filter(pk=work_id).first()
        )
        if work is None or not work.ownership_held or work.staff_told_of_hold_at is not None:
            return False
        other = work.same_image_as
        mail_admins(
            f"Work #{work.pk} is held for review: the same image as work #{other.pk} of another artist",
            f"{work.artist.display_name} ({work.artist.slug}) uploaded work #{work.pk}, the same image as work "
            f"#{other.pk} of {other.artist.display_name} ({other.artist.slug}). It cannot be opted in or shown until "
            f"staff confirm that its artist made it (the Work admin's action), or delete it.\n\n"
            f"Held work: {settings.SITE_URL}{reverse('admin:licensing_work_change', args=[work.pk])}\n"
            f"Matched work: {settings.SITE_URL}{reverse('admin:licensing_work_change', args=[other.pk])}\n",
        )
        work.staff_told_of_hold_at = timezone.now()
        work.save(update_fields=["staff_told_of_hold_at"])
    return True


# At most one mail a day about copies of one artist's works: each re-encoding or re-upload of a copy is held
# afresh, and must not become a way to flood the artist's inbox. The studio lists every copy held.
COPY_MAIL_INTERVAL = timedelta(days=1)


def held_work_tell_copied_artist(*, work_id):
    """Mail the artist whose work a held upload copies, without saying whose account it is on; False when the
    hold was released or deleted, they were already told of it or of another copy within COPY_MAIL_INTERVAL, or
    they cannot be mailed (left, deactivated, no address). In the site's language (LANGUAGE_CODE): no artist's
    own language is stored. The earlier upload is not always the real artist's, so the mail takes no side."""
    with transaction.atomic():
        work = Work.objects.select_for_update(of=("self",)).select_related("same_image_as").filter(pk=work_id).first()
        if work is None or not work.ownership_held or work.copied_artist_told_at is not None:
            return False
        original = work.same_image_as
        # Locked: one artist's copies are told of one at a time.
        artist = Artist.objects.select_for_update(of=("self",)).select_related("user").get(pk=original.artist_id)
        user = artist.user
        if original.is_deleted or not artist.is_on_platform or not user.email:
            return False
        now = timezone.now()
        if Work.objects.filter(same_image_as__artist=artist, copied_artist_told_at__gt=now - COPY_MAIL_INTERVAL).exists():
            return False
        with translation.override(settings.LANGUAGE_CODE):
            subject = _("A copy of your work #%(id)s was uploaded to another account") % {"id": original.pk}
            body = _(
                "Another account uploaded the same image as your work #%(id)s. The platform's team will review which "
                "account's artist made it; until then that upload is held: it cannot be opted in, trained on or "
                "shown. Nothing changes for your work meanwhile, and you need do nothing now; the team will write to "
                "you if they need to know more. Your studio marks every work of yours that has a copy held.\n\n"
                "Your work: %(url)s\n"
            ) % {"id": original.pk, "url": f"{settings.SITE_URL}{reverse('licensing:studio')}#work-{original.pk}"}
        send_mail(subject, body, None, [user.email])
        work.copied_artist_told_at = now
        work.save(update_fields=["copied_artist_told_at"])
    return True


def _near_duplicate(artist, phash):
    limit = settings.WORK_NEAR_DUPLICATE_DISTANCE
    target = imagehash.hex_to_hash(phash)
    best = None
    for pk, other in Work.objects.filter(artist=artist, status=Work.Status.ACTIVE).values_list("pk", "phash"):
        distance = target - imagehash.hex_to_hash(other)
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, pk)
    return Work(pk=best[1]) if best else None


def works_ownership_confirm(*, works, actor):
    """Staff confirm that each held work's artist made it: it can be opted in from now on. Returns those released."""
    with transaction.atomic():
        released = list(
            Work.objects.select_for_update().held_for_review().filter(pk__in=[work.pk for work in works]).order_by("pk")
        )
        now = timezone.now()
        for work in released:
            work.ownership_confirmed_at, work.ownership_confirmed_by = now, actor
            work.save(update_fields=["ownership_confirmed_at", "ownership_confirmed_by", "updated_at"])
    return released


def _delete_files(names):
    for name in names:
        if name:
            try:
                default_storage.delete(name)
            except OSError:
                pass


def work_update(*, work, caption=None, shown_on_profile=None):
    with transaction.atomic():
        work = Work.objects.select_for_update().get(pk=work.pk)
        if work.is_deleted:
            raise LicensingError(_("The work has been deleted."), code="deleted")
        if caption is not None:
            work.caption = caption.strip()
        if shown_on_profile is not None:
            work.shown_on_profile = shown_on_profile
        work.save()
    return work


def work_captions_apply(*, artist, work_ids, caption):
    """Give every selected work of the artist the same caption; returns how many changed."""
    with transaction.atomic():
        return Work.objects.filter(artist=artist, pk__in=list(work_ids), status=Work.Status.ACTIVE).update(
            caption=caption.strip(), updated_at=timezone.now()
        )


def work_captions_replace(*, artist, find, replace, work_ids=None):
    """Replace `find` by `replace` in the captions of the artist's works (all, or the selected ones)."""
    if not find:
        raise LicensingError(_("Enter the text to find."), code="find_required")
    changed = 0
    with transaction.atomic():
        works = Work.objects.select_for_update().filter(artist=artist, status=Work.Status.ACTIVE, caption__contains=find)
        if work_ids is not None:
            works = works.filter(pk__in=list(work_ids))
        for work in works:
            new = work.caption.replace(find, replace).strip()
            if new != work.caption:
                work.caption = new
                work.save(update_fields=["caption", "updated_at"])
                changed += 1
    return changed


def work_delete(*, work, actor):
    """Withdraw consent (through the one withdrawal service), then delete the files and keep a soft-deleted row.

    The row stays so that consent events and snapshots that name it remain meaningful (audit); the image
    files themselves are removed from storage once the transaction commits.
    """
    works_delete(works=[work], actor=actor)
    return Work.objects.get(pk=work.pk)


def works_delete(*, works, actor):
    """Delete several works in one withdrawal: adapters holding any of them retire at once, and one retrain
    follows, not one per work. Works already deleted are left as they are."""
    with transaction.atomic():
        # artists, then works: the one lock order
        list(Artist.objects.select_for_update().filter(pk__in={work.artist_id for work in works}).order_by("pk"))
        locked = list(
            Work.objects.select_for_update().filter(pk__in=[work.pk for work in works]).exclude(status=Work.Status.DELETED).order_by("pk")
        )
        works_withdraw(works=locked, actor=actor, reason=gettext_noop("The work was deleted."))
        for work in locked:
            _work_remove(work)
    return locked


def _work_remove(work):
    names = [work.original.name, work.training_image.name]
    work.status = Work.Status.DELETED
    work.deleted_at = timezone.now()
    work.shown_on_profile = False
    work.original = ""
    work.training_image = ""
    work.save()
    transaction.on_commit(lambda: _delete_files(names))


# ---------------------------------------------------------------- consent


def _current_training_terms(shown_version=None):
    """The training terms in force. Consent is recorded only under terms the artist was shown: when the caller says
    which version it showed (`shown_version`) and another is now in force, the opt-in is refused."""
    terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    if terms is None:
        raise LicensingError(_("No consent terms have been published yet, so works cannot be opted in."), code="no_terms")
    if shown_version is not None and shown_version != terms.version:
        raise LicensingError(_(
            "The consent terms in force are now version %(version)s, not the version you were shown. Read version "
            "%(version)s, then opt in again; nothing was opted in."
        ) % {"version": terms.version}, code="terms_changed")
    return terms


def _language_read(terms, language):
    """The language `terms` were shown in, as the page or client says (None when it does not say). A language
    the terms have no words in is refused: no consent is recorded as read in a text that does not exist."""
    if language is None:
        return None
    if language not in terms.languages():
        raise LicensingError(_(
            "Version %(version)s of these terms has no text in the language given (%(language)s); nothing was "
            "recorded. Reload the page to read the terms, then try again."
        ) % {"version": terms.version, "language": language if len(language) <= 8 else f"{language[:8]}…"},
            code="unknown_language")
    return language


def work_opt_in(*, work, actor, terms_version=None, terms_language=None):
    """Grant consent for one eligible work under the current terms; idempotent when already granted under them.

    `terms_version` is the version the artist was shown, if the caller knows it; see `_current_training_terms`.
    `terms_language` is the language they were shown in (see `_language_read`)."""
    with transaction.atomic():
        terms = _current_training_terms(terms_version)
        terms_language = _language_read(terms, terms_language)
        work = Work.objects.select_for_update(of=("self",)).select_related("current_consent").get(pk=work.pk)
        reason = work.ineligible_reason
        if reason:
            raise LicensingError(str(reason), code="not_eligible")
        if work.is_opted_in and work.current_consent.terms_id == terms.pk:
            return work.current_consent
        return _grant(work, terms, terms_language, actor)


def _grant(work, terms, terms_language, actor):
    """Record consent for a locked, eligible work under `terms` (one object for a whole batch: terms published
    meanwhile cannot split it), read in `terms_language`."""
    event = ConsentEvent.objects.create(
        work=work, kind=ConsentEvent.Kind.GRANTED, terms=terms, terms_language=terms_language, actor=actor)
    Work.objects.filter(pk=work.pk).update(current_consent=event)
    work.current_consent = event
    return event


def works_opt_in_eligible(*, artist, actor, terms_version=None, terms_language=None):
    """Opt in every eligible work of the artist not yet granted under the current terms; returns the new events."""
    events = []
    with transaction.atomic():
        terms = _current_training_terms(terms_version)
        terms_language = _language_read(terms, terms_language)
        for work in Work.objects.select_for_update(of=("self",)).select_related("current_consent").filter(
            artist=artist, status=Work.Status.ACTIVE
        ):
            if not work.is_eligible or (work.is_opted_in and work.current_consent.terms_id == terms.pk):
                continue
            events.append(_grant(work, terms, terms_language, actor))
    return events


def work_withdraw(*, work, actor, reason=""):
    """Withdraw consent for one work; returns the event, or None if it was not opted in."""
    events = works_withdraw(works=[work], actor=actor, reason=reason)
    return events[0] if events else None


def works_withdraw(*, works, actor, reason=""):
    """THE withdrawal service: records a ConsentEvent per opted-in work, then calls the withdrawal hook once.

    Opt-out, work deletion and an artist leaving all come through here. The hook runs inside this
    transaction; if it raises, nothing is recorded.
    """
    events = []
    with transaction.atomic():
        # The artists first, in the order a training start and a snapshot take them: a training cannot
        # then freeze a work whose withdrawal is recorded but not yet committed, and retirement below
        # sees every version committed before it.
        list(Artist.objects.select_for_update().filter(pk__in={work.artist_id for work in works}).order_by("pk"))
        terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
        locked = Work.objects.select_for_update(of=("self",)).select_related("current_consent").filter(
            pk__in=[work.pk for work in works]
        ).order_by("pk")
        for work in locked:
            if not work.is_opted_in:
                continue
            event = ConsentEvent.objects.create(
                work=work, kind=ConsentEvent.Kind.WITHDRAWN, terms=terms or work.current_consent.terms,
                actor=actor, reason=(reason or "")[:300],
            )
            Work.objects.filter(pk=work.pk).update(current_consent=event)
            events.append(event)
        if events:
            hooks.notify_withdrawal([event.work_id for event in events], [event.pk for event in events])
    for work in works:  # keep the caller's objects in step with the database
        for event in events:
            if event.work_id == work.pk:
                work.current_consent = event
    return events


# ---------------------------------------------------------------- snapshots


def dataset_snapshot_create(*, artist):
    """Freeze the artist's opted-in, eligible works (granted under the current terms) into a snapshot."""
    from .selectors import works_for_training

    with transaction.atomic():
        terms = _current_training_terms()
        Artist.objects.select_for_update().filter(pk=artist.pk).first()
        entries = [
            {"work_id": work.pk, "sha256": work.sha256, "caption": work.caption, "consent_event_id": work.current_consent_id}
            for work in works_for_training(artist=artist, terms=terms)
        ]
        if not entries:
            raise LicensingError(
                _("No works are opted in under the current consent terms, so there is nothing to snapshot."), code="empty"
            )
        return DatasetSnapshot.objects.create(
            artist=artist, terms=terms, entries=entries, fingerprint=snapshot_fingerprint(entries), work_count=len(entries)
        )

"""Artists, their works, the consent they give or withdraw, and frozen dataset snapshots.

ConsentEvent and DatasetSnapshot are append-only: the model, its queryset and (in a migration)
database triggers refuse to change or delete a row once written.
"""

import hashlib
import json
import uuid

from django.conf import settings
from django.db import models
from django.utils.functional import cached_property
from django.utils.translation import get_language, gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from illustration_platform.reasons import translated_reason


class ImmutableRowError(Exception):
    """Raised when code tries to change or delete an append-only row."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableRowError(f"{self.model.__name__} rows are append-only: they cannot be updated.")

    def delete(self):
        raise ImmutableRowError(f"{self.model.__name__} rows are append-only: they cannot be deleted.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise ImmutableRowError(f"{self.model.__name__} rows are append-only: they cannot be updated.")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableRowError(f"{type(self).__name__} rows are append-only: they cannot be updated.")
        kwargs["force_insert"] = True
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableRowError(f"{type(self).__name__} rows are append-only: they cannot be deleted.")


class ConsentTerms(models.Model):
    """A versioned text an artist accepts; the newest active version of a kind is the current one."""

    class Kind(models.TextChoices):
        TRAINING = "training", _("Training consent")
        ARTIST_AGREEMENT = "artist_agreement", _("Artist agreement")

    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices, default=Kind.TRAINING)
    version = models.PositiveIntegerField(_("version"))
    title = models.CharField(_("title"), max_length=200)
    text = models.TextField(_("text"))
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("The newest active version of each kind is the one artists accept now.")
    )
    published_at = models.DateTimeField(_("published at"), auto_now_add=True)

    class Meta:
        ordering = ["kind", "-version"]
        verbose_name = _("consent terms")
        verbose_name_plural = _("consent terms")
        constraints = [models.UniqueConstraint(fields=["kind", "version"], name="consent_terms_kind_version_unique")]

    def __str__(self):
        return f"{self.get_kind_display()} v{self.version}"

    @classmethod
    def current(cls, kind=Kind.TRAINING):
        return cls.objects.filter(kind=kind, is_active=True).order_by("-version").first()

    @property
    def original_language(self):
        """Terms are written in the site's LANGUAGE_CODE; translations are stored beside them."""
        return settings.LANGUAGE_CODE.split("-")[0]

    def translation_for(self, language=None):
        """Its translation into `language` (the active language when none is given, as a template calls it), or
        None: none is stored, or `language` is the original's."""
        language = (language or get_language() or "").split("-")[0]
        if not language or language == self.original_language:
            return None
        return self.translations.filter(language=language).first()

    def language_shown(self, language=None):
        """The language its words are shown in to a reader of `language` (the active language when none is given):
        a translation's where one is stored, else the original's. Pages send it back with a consent."""
        translation = self.translation_for(language)
        return translation.language if translation else self.original_language

    def languages(self):
        """The languages its words can be read in: the original's and each translation's."""
        return {self.original_language, *self.translations.values_list("language", flat=True)}


class ConsentTermsTranslation(models.Model):
    """A terms version's words in another of the site's languages, shown with the original, so that an artist can
    read what they accept; where the two differ, the original applies."""

    terms = models.ForeignKey(ConsentTerms, verbose_name=_("consent terms"), on_delete=models.CASCADE,
                              related_name="translations")
    # The site's other languages: terms are written in LANGUAGE_CODE.
    language = models.CharField(_("language"), max_length=8, choices=[
        (code, name) for code, name in settings.LANGUAGES if code != settings.LANGUAGE_CODE])
    title = models.CharField(_("title"), max_length=200)
    text = models.TextField(_("text"))

    class Meta:
        verbose_name = _("consent terms translation")
        verbose_name_plural = _("consent terms translations")
        constraints = [models.UniqueConstraint(fields=["terms", "language"], name="consent_terms_translation_unique")]

    def __str__(self):
        return f"{self.terms} ({self.language})"


def avatar_path(instance, filename):
    return f"artists/{instance.pk or 'new'}/avatar-{uuid.uuid4().hex}{_suffix(filename)}"


def _suffix(filename):
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return suffix if suffix in {".png", ".jpg", ".jpeg", ".webp"} else ""


class Artist(models.Model):
    """An illustrator's profile; having one gives a user the artist role."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="artist"
    )
    display_name = models.CharField(_("display name"), max_length=80)
    slug = models.SlugField(_("slug"), unique=True)
    bio = models.TextField(_("bio"), blank=True)
    avatar = models.ImageField(_("avatar"), upload_to=avatar_path, blank=True)
    links = models.TextField(_("links"), blank=True, help_text=_("One web address per line."))
    payout_contact = models.CharField(_("payout contact"), max_length=200, blank=True)
    agreement = models.ForeignKey(
        ConsentTerms, verbose_name=_("accepted artist agreement"), null=True, blank=True,
        on_delete=models.PROTECT, related_name="+",
    )
    agreement_accepted_at = models.DateTimeField(_("agreement accepted at"), null=True, blank=True)
    # The language the agreement was read in (see ConsentEvent.terms_language).
    agreement_language = models.CharField(_("agreement read in"), max_length=8, null=True, blank=True)
    left_at = models.DateTimeField(_("left at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["display_name"]
        verbose_name = _("artist")
        verbose_name_plural = _("artists")

    def __str__(self):
        return self.display_name

    @property
    def has_left(self):
        return self.left_at is not None

    @property
    def is_on_platform(self):
        """Neither left nor deactivated by staff: generation, the public page and the mails treat either as gone."""
        return not self.has_left and self.user.is_active

    @property
    def link_list(self):
        return [line.strip() for line in self.links.splitlines() if line.strip()]


def work_upload_path(instance, filename):
    return f"works/{instance.artist_id}/{filename}"


OWNERSHIP_HELD_REASON = _(
    "This image is the same as a work on another artist's account, so it cannot be opted in until the platform's "
    "team has confirmed that you made it."
)


# Active works held as the same image as another artist's work, not yet confirmed as their artist's.
HELD_FOR_REVIEW = models.Q(status="active", same_image_as__isnull=False, ownership_confirmed_at__isnull=True)


class WorkQuerySet(models.QuerySet):
    def held_for_review(self):
        return self.filter(HELD_FOR_REVIEW)

    def not_held_for_review(self):
        return self.exclude(HELD_FOR_REVIEW)

    def with_copy_held(self):
        """Each work with `copy_held_for_review`: whether another artist's upload of it is held, in this one query."""
        held_copies = Work.objects.held_for_review().filter(same_image_as=models.OuterRef("pk"))
        return self.annotate(copy_held_for_review=models.Exists(held_copies))


class Work(models.Model):
    """One uploaded image: the file as uploaded, an RGB copy for training, hashes, caption and signals."""

    objects = WorkQuerySet.as_manager()

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        DELETED = "deleted", _("Deleted")

    artist = models.ForeignKey(Artist, verbose_name=_("artist"), on_delete=models.PROTECT, related_name="works")
    original = models.FileField(_("original file"), upload_to=work_upload_path, blank=True)
    training_image = models.FileField(_("training copy (RGB PNG)"), upload_to=work_upload_path, blank=True)
    original_name = models.CharField(_("uploaded file name"), max_length=255, blank=True)
    original_format = models.CharField(_("format"), max_length=8)
    sha256 = models.CharField(_("SHA-256"), max_length=64, db_index=True)
    phash = models.CharField(_("perceptual hash"), max_length=16, db_index=True)
    width = models.PositiveIntegerField(_("width"))
    height = models.PositiveIntegerField(_("height"))
    caption = models.TextField(_("caption"), blank=True)
    shown_on_profile = models.BooleanField(_("shown on profile"), default=False)
    do_not_train = models.BooleanField(_("do-not-train signal"), default=False)
    # The catalogue's English with its values apart, translated when shown (see illustration_platform.reasons).
    do_not_train_reason = models.CharField(_("do-not-train reason"), max_length=300, blank=True)
    do_not_train_params = models.JSONField(_("do-not-train reason values"), default=dict, blank=True)
    near_duplicate_of = models.ForeignKey(
        "self", verbose_name=_("resembles"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set at upload when another artist's active work is the same file, or a re-encoded or resized copy of it (the
    # same perceptual hash and pixels): the work is held, neither opted in nor shown, until staff confirm that this
    # artist made it (ownership_confirmed_at).
    same_image_as = models.ForeignKey(
        "self", verbose_name=_("same image as another artist's work"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+",
    )
    ownership_confirmed_at = models.DateTimeField(_("ownership confirmed at"), null=True, blank=True)
    ownership_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("ownership confirmed by"), null=True, blank=True,
        on_delete=models.PROTECT, related_name="+",
    )
    staff_told_of_hold_at = models.DateTimeField(_("staff mailed about the hold at"), null=True, blank=True)
    copied_artist_told_at = models.DateTimeField(_("copied artist mailed about the hold at"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.ACTIVE)
    current_consent = models.ForeignKey(
        "ConsentEvent", verbose_name=_("latest consent event"), null=True, blank=True,
        on_delete=models.PROTECT, related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    deleted_at = models.DateTimeField(_("deleted at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("work")
        verbose_name_plural = _("works")
        constraints = [
            models.UniqueConstraint(
                fields=["artist", "sha256"], condition=models.Q(status="active"), name="work_artist_sha256_unique_active"
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.original_name or self.sha256[:12]}"

    @property
    def is_deleted(self):
        return self.status == self.Status.DELETED

    @property
    def is_opted_in(self):
        return self.current_consent is not None and self.current_consent.kind == ConsentEvent.Kind.GRANTED

    @property
    def do_not_train_reason_shown(self):
        return translated_reason(self.do_not_train_reason, self.do_not_train_params)

    @property
    def ownership_held(self):
        return not self.is_deleted and self.same_image_as_id is not None and self.ownership_confirmed_at is None

    @cached_property
    def copy_held_for_review(self):
        """Whether another artist's upload of this work is held (`with_copy_held` sets it for a whole list)."""
        return Work.objects.held_for_review().filter(same_image_as=self).exists()

    @property
    def ineligible_reason(self):
        """Why the work cannot be opted in, in one sentence; empty when it can."""
        if self.is_deleted:
            return _("The work has been deleted.")
        if self.do_not_train:
            return self.do_not_train_reason_shown or _("The file carries a do-not-train signal.")
        if self.ownership_held:
            return OWNERSHIP_HELD_REASON
        if not self.caption.strip():
            return _("Write a caption first.")
        return ""

    @property
    def is_eligible(self):
        return not self.ineligible_reason

    def needs_reconsent(self, current_terms):
        return self.is_opted_in and current_terms is not None and self.current_consent.terms_id != current_terms.pk


class ConsentEvent(AppendOnlyModel):
    """One grant or withdrawal of consent to train on one work; never changed, never deleted."""

    class Kind(models.TextChoices):
        # An event's kind, in the history beside the studio's "Withdrawn" state badge: its own words in Japanese.
        GRANTED = "granted", pgettext_lazy("consent event", "Granted")
        WITHDRAWN = "withdrawn", pgettext_lazy("consent event", "Withdrawn")

    work = models.ForeignKey(Work, verbose_name=_("work"), on_delete=models.PROTECT, related_name="consent_events")
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    terms = models.ForeignKey(
        ConsentTerms, verbose_name=_("consent terms"), on_delete=models.PROTECT, null=True, blank=True,
        related_name="events",
    )
    # The language the terms were read in: the original's, or that of the translation shown in its place, so that
    # a dispute can be settled on the words the artist saw. Null where it is not known: events recorded before it
    # was, withdrawals, and opt-ins whose client did not say. Nullable, too, so that adding it altered the table in
    # place: SQLite rebuilds a table for a column with a default, dropping its append-only trigger.
    terms_language = models.CharField(_("terms read in"), max_length=8, null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("actor"), on_delete=models.PROTECT, related_name="+")
    # The artist's own words, or one of the platform's sentences in the catalogue's English (see reason_shown).
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("time"), auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("consent event")
        verbose_name_plural = _("consent events")

    @property
    def reason_shown(self):
        return translated_reason(self.reason)

    def __str__(self):
        # Numbered as the artist's consent history numbers it: a bare work id beside the kind read as the event's.
        return gettext("Event #%(id)s: %(kind)s, work #%(work)s (%(time)s)") % {
            "id": self.pk, "kind": self.get_kind_display(), "work": self.work_id,
            "time": f"{self.created_at:%Y-%m-%d %H:%M}",
        }


def snapshot_fingerprint(entries):
    """sha256 over the canonical JSON of the entries (sorted by work id, sorted keys, no spaces)."""
    canonical = json.dumps(
        sorted(entries, key=lambda entry: entry["work_id"]), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DatasetSnapshot(AppendOnlyModel):
    """A frozen list of the works an artist had opted in at one moment; adapters are trained from these."""

    artist = models.ForeignKey(Artist, verbose_name=_("artist"), on_delete=models.PROTECT, related_name="snapshots")
    terms = models.ForeignKey(ConsentTerms, verbose_name=_("consent terms"), on_delete=models.PROTECT, related_name="+")
    entries = models.JSONField(_("entries"))
    fingerprint = models.CharField(_("fingerprint"), max_length=64, db_index=True)
    work_count = models.PositiveIntegerField(_("works"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("dataset snapshot")
        verbose_name_plural = _("dataset snapshots")

    def __str__(self):
        return ngettext(
            "Snapshot %(id)s of %(artist)s (%(count)s work, %(fingerprint)s)",
            "Snapshot %(id)s of %(artist)s (%(count)s works, %(fingerprint)s)",
            self.work_count,
        ) % {"id": self.pk, "artist": self.artist, "count": self.work_count, "fingerprint": self.fingerprint[:12]}

    @property
    def work_ids(self):
        return [entry["work_id"] for entry in self.entries]

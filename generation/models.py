from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from illustration_platform.reasons import translated_reason


class BaseModel(models.Model):
    """A diffusers model folder on disk that adapters are trained on and images are sampled from."""

    class Kind(models.TextChoices):
        BUILTIN = "builtin", _("Built-in")
        SD = "sd", _("Stable Diffusion 1.x/2.x")
        SDXL = "sdxl", _("Stable Diffusion XL")

    name = models.CharField(_("name"), max_length=120)
    path = models.CharField(_("path"), max_length=500, help_text=_("Folder with model_index.json."))
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    sha256 = models.CharField(_("SHA-256"), max_length=64, help_text=_("Fingerprint of the folder's weights and configs."))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("base model")
        verbose_name_plural = _("base models")
        constraints = [models.UniqueConstraint(fields=["path", "sha256"], name="unique_base_model_version")]

    def __str__(self):
        return f"{self.name} ({self.sha256[:12]})"


class Style(models.Model):
    """An artist's style; its adapter versions are trained from snapshots of the artist's opted-in works."""

    artist = models.ForeignKey("licensing.Artist", verbose_name=_("artist"), on_delete=models.CASCADE, related_name="styles")
    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"))
    description = models.TextField(_("description"), blank=True)
    published_version = models.OneToOneField(
        "AdapterVersion", verbose_name=_("published version"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="published_for",
    )
    # Staff's takedown holds until staff lift it: the artist cannot publish meanwhile (see style_take_down).
    taken_down_at = models.DateTimeField(_("taken down at"), null=True, blank=True)
    takedown_reason = models.TextField(_("takedown reason"), blank=True, help_text=_("Shown to the artist on their style page."))
    # The artist's style page says the takedown was lifted until they publish again (nothing goes live by itself);
    # publishing clears it.
    takedown_lifted_at = models.DateTimeField(_("takedown lifted at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("style")
        verbose_name_plural = _("styles")
        constraints = [models.UniqueConstraint(fields=["artist", "slug"], name="unique_style_slug_per_artist")]

    def __str__(self):
        return self.name


class AdapterVersion(models.Model):
    """One trained (or training) LoRA adapter of a style, bound to the snapshot it was trained from."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        TRAINING = "training", _("Training")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        RETIRED = "retired", _("Retired")

    class Preset(models.TextChoices):
        """The training presets of generation/ml/training_config.py's PRESETS, named for staff."""

        QUICK = "quick", _("Quick")
        STANDARD = "standard", _("Standard")
        THOROUGH = "thorough", _("Thorough")

    ACTIVE_STATUSES = (Status.QUEUED, Status.TRAINING)

    style = models.ForeignKey(Style, verbose_name=_("style"), on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(_("version number"))
    snapshot = models.ForeignKey(
        "licensing.DatasetSnapshot", verbose_name=_("dataset snapshot"), on_delete=models.PROTECT,
        related_name="adapter_versions",
    )
    base_model = models.ForeignKey(
        BaseModel, verbose_name=_("base model"), on_delete=models.PROTECT, related_name="adapter_versions"
    )
    preset = models.CharField(_("preset"), max_length=20, choices=Preset.choices)
    hyperparameters = models.JSONField(_("hyperparameters"), default=dict)
    publish_when_ready = models.BooleanField(_("publish when ready"), default=False)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    weights_path = models.CharField(_("weights path"), max_length=500, blank=True, help_text=_("Relative to ADAPTER_ROOT."))
    weights_sha256 = models.CharField(_("weights SHA-256"), max_length=64, blank=True)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    # The platform's reasons are stored as the catalogue's English with their placeholders' values, and
    # translated when shown: the worker or withdrawal that writes one does not know the reader's language.
    failure_reason = models.CharField(_("failure reason"), max_length=300, blank=True)
    failure_params = models.JSONField(_("failure reason values"), default=dict, blank=True)
    # names every withdrawn work it held, however many
    retired_reason = models.TextField(_("retired reason"), blank=True)
    retired_params = models.JSONField(_("retired reason values"), default=dict, blank=True)
    retired_at = models.DateTimeField(_("retired at"), null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("created by"), null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["style", "-number"]
        verbose_name = _("adapter version")
        verbose_name_plural = _("adapter versions")
        constraints = [
            models.UniqueConstraint(fields=["style", "number"], name="unique_version_number_per_style"),
            models.CheckConstraint(
                condition=~Q(status="ready") | ~Q(weights_sha256=""), name="ready_adapter_has_weights"
            ),
        ]

    def __str__(self):
        return gettext("%(style)s v%(number)s (%(status)s)") % {
            "style": self.style, "number": self.number, "status": self.get_status_display(),
        }

    @property
    def is_active(self):
        return self.status in self.ACTIVE_STATUSES

    @property
    def failure_reason_shown(self):
        return translated_reason(self.failure_reason, self.failure_params)

    @property
    def retired_reason_shown(self):
        return translated_reason(self.retired_reason, self.retired_params)


class TrainingJob(models.Model):
    """The observable side of training one adapter version: progress, losses, previews, log, cancellation."""

    LOG_CHARACTERS_KEPT = 20000

    adapter_version = models.OneToOneField(
        AdapterVersion, verbose_name=_("adapter version"), on_delete=models.CASCADE, related_name="job"
    )
    step = models.PositiveIntegerField(_("step"), default=0)
    total_steps = models.PositiveIntegerField(_("total steps"), default=0)
    losses = models.JSONField(_("losses"), default=list, blank=True, help_text=_("[step, loss] pairs, thinned."))
    # a duration estimate for display, not money
    eta_seconds = models.FloatField(_("estimated seconds left"), null=True, blank=True)
    previews = models.JSONField(_("previews"), default=list, blank=True, help_text=_("{step, prompt, seed, path} entries."))
    log = models.TextField(_("log"), blank=True)
    error_detail = models.TextField(
        _("error detail"), blank=True, help_text=_("A failure's traceback, for staff; never shown to the artist.")
    )
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    heartbeat_at = models.DateTimeField(_("last heartbeat at"), null=True, blank=True)
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    # A new token per claim: a run that lost its claim (taken over as dead) can no longer write or finish.
    claim_token = models.CharField(_("claim token"), max_length=32, blank=True)
    checkpoint_step = models.PositiveIntegerField(_("checkpoint step"), default=0)  # where a resumed run starts again
    # the last time recovery queued it again
    requeued_at = models.DateTimeField(_("requeued at"), null=True, blank=True)
    # while it waited; bounded by TRAINING_MAX_ATTEMPTS
    lost_message_resends = models.PositiveIntegerField(_("lost message resends"), default=0)
    resumed_from_step = models.PositiveIntegerField(_("resumed from step"), default=0)

    class Meta:
        verbose_name = _("training job")
        verbose_name_plural = _("training jobs")

    def __str__(self):
        return gettext("Training of %(version)s") % {"version": self.adapter_version}

    @property
    def progress_percent(self):
        return min(100, round(100 * self.step / self.total_steps)) if self.total_steps else 0

    def log_with(self, line):
        """The log with `line` added, stamped in UTC as every time the site shows, its oldest part dropped past
        LOG_CHARACTERS_KEPT."""
        return (self.log + f"{timezone.now():%H:%M:%S}Z {line}\n")[-self.LOG_CHARACTERS_KEPT:]

    def heartbeat_is_fresh(self, now=None):
        """Whether its worker reported within TRAINING_STALE_SECONDS: a run that is alive somewhere."""
        stale_before = (now or timezone.now()) - timedelta(seconds=settings.TRAINING_STALE_SECONDS)
        return self.heartbeat_at is not None and self.heartbeat_at > stale_before

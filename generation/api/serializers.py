from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from illustration_platform.api.serializers import RefusesUnknownFields

from ..models import AdapterVersion
from ..presentation import PRESET_CHOICES


class PreviewSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    prompt = serializers.CharField()
    seed = serializers.IntegerField()
    url = serializers.CharField()


@extend_schema_field({
    "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
    "description": "[step, loss]: the step a whole number, the loss a float.",
})
class LossPointField(serializers.Field):
    def to_representation(self, point):
        step, loss = point
        return [int(step), float(loss)]


class TrainingStateSerializer(serializers.Serializer):
    """One adapter version and its training, as the style page shows it."""

    id = serializers.IntegerField()
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=AdapterVersion.Status.values)
    preset = serializers.ChoiceField(choices=AdapterVersion.Preset.values)
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    progress_percent = serializers.IntegerField()
    eta_seconds = serializers.IntegerField(allow_null=True)
    queue_position = serializers.IntegerField(allow_null=True)
    waiting_for_worker = serializers.BooleanField(
        help_text=(
            "No worker is working on it: queued in a line no worker takes (nothing running, and the training at its "
            "head not taken for two TRAINING_STALE_SECONDS periods), or training with its worker silent for one (it "
            "goes on from its checkpoint once a worker takes it). eta_seconds is then null."
        )
    )
    losses = serializers.ListField(child=LossPointField())
    final_loss = serializers.FloatField(allow_null=True)
    previews = PreviewSerializer(many=True)
    log_tail = serializers.CharField()
    failure_reason = serializers.CharField()
    retired_reason = serializers.CharField()
    attempts = serializers.IntegerField()
    cancel_requested = serializers.BooleanField()
    publish_when_ready = serializers.BooleanField(help_text="Goes live once ready, unless the artist publishes or unpublishes by hand meanwhile.")
    work_count = serializers.IntegerField()
    snapshot_fingerprint = serializers.CharField()
    weights_sha256 = serializers.CharField()
    base_model_sha256 = serializers.CharField(help_text="Fingerprint of the base model this version was trained on.")
    on_current_base = serializers.BooleanField(
        help_text="Trained on the base model images are made with now; a version of an earlier base cannot be published or used."
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class StyleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    published_version = serializers.IntegerField(source="published_version_id", allow_null=True)
    taken_down_at = serializers.DateTimeField(
        allow_null=True, help_text="When staff took the style down; until they lift it no version can be published."
    )
    takedown_reason = serializers.CharField(allow_blank=True, help_text="Staff's reason for the takedown, if given.")
    takedown_lifted_at = serializers.DateTimeField(
        allow_null=True, help_text="When staff lifted the style's takedown; null while it is down, and once a version "
        "is published again."
    )
    versions = serializers.SerializerMethodField()

    def get_versions(self, style) -> list[int]:
        return [version.pk for version in style.versions.all()]


class TrainRequestSerializer(RefusesUnknownFields, serializers.Serializer):
    """Train my style: the preset (quick, standard or thorough) and whether the version goes live once ready."""

    preset = serializers.ChoiceField(choices=[value for value, _label in PRESET_CHOICES], default="standard")
    publish_when_ready = serializers.BooleanField(default=True)


class NoFieldsSerializer(RefusesUnknownFields, serializers.Serializer):
    """The body of an action that takes none: empty, or refused naming what it holds."""

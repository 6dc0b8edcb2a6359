"""The admin speaks Japanese about the platform's own models: their names, their fields, their rows."""

import pytest
from django.apps import apps
from django.db import models
from django.utils import translation

from generation.ml.training_config import PRESETS
from generation.models import AdapterVersion, Style, TrainingJob
from licensing.models import Artist, DatasetSnapshot

MODELS = [model for label in ("licensing", "generation") for model in apps.get_app_config(label).get_models()]
# Labels that read the same in both languages.
SAME_IN_JAPANESE = {"SHA-256"}


def _labels(model):
    fields = [
        field for field in model._meta.concrete_fields
        if not isinstance(field, (models.AutoField, models.BigAutoField, models.SmallAutoField))
    ]
    labels = {"verbose_name": model._meta.verbose_name, "verbose_name_plural": model._meta.verbose_name_plural}
    labels.update({field.name: field.verbose_name for field in fields})
    return labels


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_models_and_their_fields_are_named_in_japanese(model):
    with translation.override("en"):
        english = {key: str(label) for key, label in _labels(model).items()}
    with translation.override("ja"):
        japanese = {key: str(label) for key, label in _labels(model).items()}
    untranslated = sorted(
        f"{key}: {english[key]!r}" for key in english
        if japanese[key] == english[key] and english[key] not in SAME_IN_JAPANESE
    )
    assert not untranslated, f"{model.__name__} shows English under Japanese: {untranslated}"


def test_every_model_is_named_by_hand_rather_than_from_its_class_name():
    # Django's default is the class name split at capitals; a translated name needs to be written out.
    for model in MODELS:
        assert model._meta.original_attrs.get("verbose_name"), model.__name__
        assert model._meta.original_attrs.get("verbose_name_plural"), model.__name__


def test_the_presets_a_version_can_name_are_the_training_presets():
    assert set(AdapterVersion.Preset.values) == set(PRESETS["builtin"])
    for kind in PRESETS:
        assert set(PRESETS[kind]) == set(AdapterVersion.Preset.values), kind


def _version(status=AdapterVersion.Status.READY):
    return AdapterVersion(style=Style(name="Jonas Feder"), number=2, status=status, preset="standard")


def test_a_version_shows_its_displayed_status():
    with translation.override("en"):
        assert str(_version()) == "Jonas Feder v2 (Ready)"
        assert str(_version(AdapterVersion.Status.CANCELLED)) == "Jonas Feder v2 (Cancelled)"
        assert str(TrainingJob(adapter_version=_version())) == "Training of Jonas Feder v2 (Ready)"
    with translation.override("ja"):
        shown = str(_version())
        assert "準備完了" in shown and "ready" not in shown.lower()


def test_a_snapshot_counts_its_works_in_words():
    artist = Artist(display_name="Demo artist")
    one = DatasetSnapshot(pk=9, artist=artist, work_count=1, fingerprint="0123456789abcdef")
    three = DatasetSnapshot(pk=10, artist=artist, work_count=3, fingerprint="fedcba9876543210")
    with translation.override("en"):
        assert str(one) == "Snapshot 9 of Demo artist (1 work, 0123456789ab)"
        assert str(three) == "Snapshot 10 of Demo artist (3 works, fedcba987654)"

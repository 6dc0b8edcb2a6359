"""Where adapters and training state live on disk: outside MEDIA_ROOT, never served as plain files."""

from pathlib import Path

from django.conf import settings


def training_work_dir(adapter_version):
    return Path(settings.TRAINING_WORK_ROOT) / f"version-{adapter_version.pk}"


def adapter_dir(adapter_version):
    return Path(settings.ADAPTER_ROOT) / f"style-{adapter_version.style_id}" / f"v{adapter_version.number}"


def preview_path(adapter_version, name):
    return training_work_dir(adapter_version) / "previews" / name


def adapter_weights_path(adapter_version):
    return Path(settings.ADAPTER_ROOT) / adapter_version.weights_path

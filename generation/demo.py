"""Installing the shipped demo artists: their works opted in, and their adapters as published styles.

The works and adapters are made by `python -m generation.ml.demo_styles --out generation/ml/demo_styles`.
Consent holds here as everywhere: each adapter is registered against a snapshot of exactly the works it
was trained on, and only when every checksum (works, adapter, base model) matches its manifest.
"""

import json
import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from generation.ml import BUILTIN_BASE_MODEL

from .base_models import base_model_current, trained_on_current_base
from .ml import sha256_file
from .ml.demo_styles import base_model_hashes
from .models import AdapterVersion, TrainingJob
from .services import adapter_version_publish, style_for_artist
from .storage import adapter_dir

DEMO_STYLES_FOLDER = BUILTIN_BASE_MODEL.parent / "demo_styles"
REGENERATE = "python -m generation.ml.demo_styles --out generation/ml/demo_styles"


class DemoMismatch(Exception):
    """The shipped demo files do not match each other or the base model in use."""


def demo_manifests(folder=DEMO_STYLES_FOLDER):
    return [json.loads(path.read_text(encoding="utf-8")) | {"folder": path.parent} for path in sorted(Path(folder).glob("*/manifest.json"))]


def _weights_and_configs(file_hashes):
    """What decides a model's output (its model card and sample grid may change without retraining)."""
    return {name: digest for name, digest in file_hashes.items() if Path(name).suffix in {".json", ".safetensors"}}


@transaction.atomic
def demo_artist_install(*, manifest, password):
    """Create the demo artist of one manifest, with works, consent, snapshot and published adapter; for one made
    before, only its password and, once per adapter file, the adapter (after the demo styles were regenerated).

    What was done with a demo artist since stands, as for any artist: a work withdrawn or deleted is not opted in
    or uploaded again (no consent is ever recorded in an artist's name but at their first install), a style
    unpublished stays so, and an artist who left is not brought back.
    """
    from licensing.models import Artist, ConsentTerms
    from licensing.selectors import works_for_training
    from licensing.services import artist_become, dataset_snapshot_create, work_opt_in, work_update, work_upload

    folder = manifest["folder"]
    user, _ = get_user_model().objects.get_or_create(
        email=f"{manifest['slug']}@demo.local", defaults={"display_name": manifest["artist"]}
    )
    user.set_password(password)
    user.save()
    artist = Artist.objects.filter(user=user).first()
    if artist is not None and artist.has_left:
        raise DemoMismatch(f"{user.email} left the platform; an artist who left is not brought back.")
    first_install = artist is None
    if first_install:
        artist = artist_become(
            user=user, display_name=manifest["artist"], slug=manifest["slug"], bio=manifest["bio"], accept_agreement=True
        )
        for work in manifest["works"]:
            path = folder / work["file"]
            if sha256_file(path) != work["sha256"]:
                raise DemoMismatch(f"{path} does not match its manifest; regenerate with `{REGENERATE}`.")
            uploaded = work_upload(artist=artist, data=path.read_bytes(), filename=path.name, caption=work["caption"])
            work_update(work=uploaded.work, shown_on_profile=True)  # the public page has the style to see
            work_opt_in(work=uploaded.work, actor=user)

    style = style_for_artist(artist=artist)
    style.description = manifest["style_description"]
    style.save(update_fields=["description"])
    if style.versions.filter(weights_sha256=manifest["adapter"]["sha256"]).exists():
        return style  # installed before: what became of it since (retired, unpublished) stands
    if _weights_and_configs(base_model_hashes(settings.BASE_MODEL)) != _weights_and_configs(manifest["base_model"]["sha256"]):
        raise DemoMismatch(
            f"The demo adapter of {manifest['slug']} was trained on another base model than {settings.BASE_MODEL}; "
            f"regenerate the demo styles with `{REGENERATE}`."
        )
    opted_in = works_for_training(artist=artist, terms=ConsentTerms.current(ConsentTerms.Kind.TRAINING))
    if sorted(opted_in.values_list("sha256", flat=True)) != sorted(work["sha256"] for work in manifest["works"]):
        raise DemoMismatch(f"The opted-in works of {manifest['slug']} are no longer the ones its adapter was trained on.")
    snapshot = dataset_snapshot_create(artist=artist)
    version = AdapterVersion(
        style=style, number=style.versions.count() + 1, snapshot=snapshot, base_model=base_model_current(),
        preset=manifest["training"]["preset"], hyperparameters=manifest["training"]["config"],
        weights_sha256=manifest["adapter"]["sha256"], status=AdapterVersion.Status.READY,
        metrics={
            "final_loss": manifest["training"]["final_loss"], "steps": manifest["training"]["steps"],
            "seconds": manifest["training"]["seconds"], "resumed_from_step": 0, "evaluation": manifest.get("evaluation", {}),
        },
    )
    version.save()
    # Ready as it is created: finished at its creation time, not a moment before it (set before the insert).
    version.finished_at = version.created_at
    version.save(update_fields=["finished_at"])
    weights = adapter_dir(version) / Path(manifest["adapter"]["file"]).name
    weights.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / manifest["adapter"]["file"], weights)
    if sha256_file(weights) != manifest["adapter"]["sha256"]:
        raise DemoMismatch(f"The demo adapter of {manifest['slug']} does not match its manifest; regenerate with `{REGENERATE}`.")
    version.weights_path = str(weights.relative_to(settings.ADAPTER_ROOT))
    version.save(update_fields=["weights_path"])
    steps = manifest["training"]["steps"]
    TrainingJob.objects.create(adapter_version=version, step=steps, total_steps=steps, log="Installed from the shipped demo styles.\n")
    published = style.published_version
    # A regenerated adapter replaces a published one only where that one can no longer be used (another base);
    # an unpublished style, or one the artist published from their own training, stays as the artist left it.
    if first_install or (published is not None and not trained_on_current_base(published)):
        return adapter_version_publish(adapter_version=version)
    return style

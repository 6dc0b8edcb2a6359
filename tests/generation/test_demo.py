"""The shipped demo artists install as opted-in works with a published, consent-bound adapter."""

import json
import shutil

import pytest
from django.core.management import call_command

from generation.demo import DemoMismatch, demo_artist_install, demo_manifests
from generation.models import AdapterVersion
from generation.selectors import usable_adapter_versions
from licensing.selectors import works_shown
from licensing.services import work_update

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots")]


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory, tiny_base_model):
    """Demo styles built by the project's own command code, on the tiny base, with two training steps."""
    from generation.ml.demo_styles import build_style

    folder = tmp_path_factory.mktemp("demo-styles")
    for slug in ("pastel-outline", "pixel-art"):
        build_style(slug, base=tiny_base_model, out=folder, evaluate=False, n_works=5, steps=2, preview_every=0, checkpoint_every=1)
    return folder


def test_demo_artists_get_published_usable_styles_and_reinstalling_changes_nothing(demo_folder):
    manifests = demo_manifests(demo_folder)
    assert [m["slug"] for m in manifests] == ["pastel-outline", "pixel-art"]
    for manifest in manifests:
        style = demo_artist_install(manifest=manifest, password="pw-123456789")
        version = style.published_version
        assert version.status == AdapterVersion.Status.READY
        assert version.finished_at == version.created_at  # installed ready: never finished before it was created
        assert version.weights_sha256 == manifest["adapter"]["sha256"]
        assert version.snapshot.work_count == 5
        assert version.finished_at is not None  # ready since it was installed, as the API and admin say
        assert sorted(e["sha256"] for e in version.snapshot.entries) == sorted(w["sha256"] for w in manifest["works"])
    assert usable_adapter_versions().count() == 2
    # The public page shows the demo works, and a work the newcomer hid stays hidden when the demo installs again.
    artist = style.artist
    assert works_shown(artist=artist).count() == 5
    hidden = works_shown(artist=artist).first()
    work_update(work=hidden, shown_on_profile=False)
    for manifest in manifests:
        demo_artist_install(manifest=manifest, password="pw-123456789")
    assert AdapterVersion.objects.count() == 2
    assert works_shown(artist=artist).count() == 4 and hidden not in works_shown(artist=artist)


def test_installing_again_leaves_what_the_demo_artist_did_since(demo_folder):
    from licensing.models import ConsentEvent
    from licensing.services import artist_leave, work_delete, work_withdraw

    from generation.services import style_unpublish

    pastel, pixel = demo_manifests(demo_folder)
    style = demo_artist_install(manifest=pastel, password="pw-123456789")
    artist = style.artist
    withdrawn, deleted = list(artist.works.order_by("pk"))[:2]
    work_withdraw(work=withdrawn, actor=artist.user)
    work_delete(work=deleted, actor=artist.user)
    style_unpublish(style=style)
    events, versions = ConsentEvent.objects.count(), AdapterVersion.objects.count()

    style = demo_artist_install(manifest=pastel, password="pw-123456789")
    assert ConsentEvent.objects.count() == events  # no consent recorded in the artist's name
    assert AdapterVersion.objects.count() == versions and style.published_version_id is None
    assert artist.works.filter(status="active").count() == 4  # the deleted work is not uploaded again
    withdrawn.refresh_from_db()
    assert not withdrawn.is_opted_in

    left = demo_artist_install(manifest=pixel, password="pw-123456789").artist
    artist_leave(artist=left, actor=left.user)
    with pytest.raises(DemoMismatch, match="left the platform; an artist who left is not brought back"):
        demo_artist_install(manifest=pixel, password="pw-123456789")
    left.refresh_from_db()
    assert left.has_left


def test_a_regenerated_adapter_leaves_a_style_the_artist_unpublished_unpublished(demo_folder, tmp_path):
    import hashlib

    from generation.services import style_unpublish

    copy = tmp_path / "demo"
    shutil.copytree(demo_folder / "pixel-art", copy / "pixel-art")
    (manifest,) = demo_manifests(copy)
    style = demo_artist_install(manifest=manifest, password="pw-123456789")
    style_unpublish(style=style)
    adapter = copy / "pixel-art" / manifest["adapter"]["file"]
    adapter.write_bytes(adapter.read_bytes() + b" ")  # the demo styles regenerated: another adapter file
    manifest_path = copy / "pixel-art" / "manifest.json"
    changed = json.loads(manifest_path.read_text())
    changed["adapter"]["sha256"] = hashlib.sha256(adapter.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(changed))
    style = demo_artist_install(manifest=demo_manifests(copy)[0], password="pw-123456789")
    assert style.versions.filter(weights_sha256=changed["adapter"]["sha256"], status="ready").exists()
    assert style.published_version_id is None


def test_a_tampered_adapter_is_refused(demo_folder, tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(demo_folder / "pixel-art", copy / "pixel-art")
    (copy / "pixel-art" / "adapter" / "pytorch_lora_weights.safetensors").write_bytes(b"not the adapter")
    with pytest.raises(DemoMismatch, match="does not match its manifest"):
        demo_artist_install(manifest=demo_manifests(copy)[0], password="pw-123456789")
    assert not AdapterVersion.objects.exists()


def test_an_adapter_for_another_base_is_refused(demo_folder, tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(demo_folder / "pixel-art", copy / "pixel-art")
    manifest_path = copy / "pixel-art" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["base_model"]["sha256"]["unet/diffusion_pytorch_model.safetensors"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DemoMismatch, match="another base model"):
        demo_artist_install(manifest=demo_manifests(copy)[0], password="pw-123456789")


def test_seed_demo_installs_the_shipped_demo_artists(settings, capsys):
    """The README's run command: three demo artists whose shipped styles are published and usable at once."""
    from generation.ml import BUILTIN_BASE_MODEL

    settings.DEBUG = True
    settings.BASE_MODEL = BUILTIN_BASE_MODEL
    call_command("seed_demo")
    out = capsys.readouterr().out
    for email in ("admin@demo.local", "subscriber@demo.local", "artist@demo.local"):
        assert email in out
    shipped = demo_manifests()
    assert len(shipped) >= 3
    usable = {version.style.artist.slug: version for version in usable_adapter_versions()}
    for manifest in shipped:
        assert f"{manifest['slug']}@demo.local" in out and f"(style '{manifest['artist']}' published)" in out
        assert usable[manifest["slug"]].weights_sha256 == manifest["adapter"]["sha256"]
        assert usable[manifest["slug"]].snapshot.work_count == len(manifest["works"])

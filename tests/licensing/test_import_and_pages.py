"""The import command on a mixed folder, and the studio pages' forms."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from licensing.models import Artist, ConsentEvent, Work
from tests.factories import make_work
from tests.licensing import images
from tests.licensing.conftest import json_lines, media_files

pytestmark = pytest.mark.django_db


def mixed_folder(path):
    (path / "a-cat.png").write_bytes(images.good_png(1))
    (path / "a-cat.txt").write_text("a cat sitting on a fence\n")
    (path / "b-dog.jpg").write_bytes(images.good_jpeg(2))
    (path / "c-same-cat.png").write_bytes(images.good_png(1))
    (path / "d-evil.png").write_bytes(b"<html><script>alert(1)</script></html>")
    (path / "e-tiny.webp").write_bytes(images.good_webp(3, (64, 64)))
    (path / "f-bird.webp").write_bytes(images.good_webp(4))
    (path / "f-bird.txt").write_text("a bird")
    (path / ".DS_Store").write_bytes(b"\x00\x00")
    return path


def test_import_reports_each_file_and_a_summary(tmp_path, artist, media_root):
    out = io.StringIO()
    call_command("import_works", str(mixed_folder(tmp_path)), artist=artist.user.email, stdout=out)
    lines = json_lines(out.getvalue())
    statuses = [(line["file"], line["status"]) for line in lines[:-1]]
    assert statuses == [
        ("a-cat.png", "created"), ("b-dog.jpg", "created"), ("c-same-cat.png", "duplicate"),
        ("d-evil.png", "rejected"), ("e-tiny.webp", "rejected"), ("f-bird.webp", "created"),
    ]
    assert lines[3]["reason"] == "The file is an HTML page, not a PNG, JPEG or WebP image."
    assert lines[4]["reason"] == "The image is 64×64 pixels; each side must be at least 256 pixels."
    assert lines[2]["reason"].startswith("This image is already among your works")
    assert lines[-1] == {"summary": {"created": 3, "duplicate": 1, "rejected": 2}}
    captions = dict(Work.objects.values_list("original_name", "caption"))
    assert captions == {"a-cat.png": "a cat sitting on a fence", "b-dog.jpg": "", "f-bird.webp": "a bird"}
    assert len(media_files(media_root)) == 6


def test_import_needs_an_artist_or_create_artist(tmp_path, subscriber):
    with pytest.raises(CommandError, match="No user has the email nobody@example.test; pass --create-artist"):
        call_command("import_works", str(tmp_path), artist="nobody@example.test")
    with pytest.raises(CommandError, match="is not an artist; pass --create-artist"):
        call_command("import_works", str(tmp_path), artist=subscriber.email)
    out = io.StringIO()
    call_command("import_works", str(mixed_folder(tmp_path)), artist="New.Artist@Example.test", create_artist=True, stdout=out)
    user = get_user_model().objects.get(email="new.artist@example.test")
    assert user.artist.agreement is not None and Artist.objects.count() == 1
    assert json_lines(out.getvalue())[-1]["summary"]["created"] == 3


def test_caption_editor_bulk_operations(client_for, artist):
    works = [make_work(artist, seed=seed, caption=f"old caption {seed}") for seed in (1, 2, 3)]
    client = client_for(artist.user)
    client.post(reverse("licensing:captions"), {"operation": "apply", "selected": [works[0].pk, works[1].pk], "bulk_caption": "a red fox"})
    assert [Work.objects.get(pk=w.pk).caption for w in works] == ["a red fox", "a red fox", "old caption 3"]
    client.post(reverse("licensing:captions"), {"operation": "replace", "find": "red", "replace": "blue"})
    assert [Work.objects.get(pk=w.pk).caption for w in works] == ["a blue fox", "a blue fox", "old caption 3"]
    data = {"operation": "save", f"caption-{works[2].pk}": "  written by hand ", f"shown-{works[2].pk}": "on"}
    for work in works[:2]:
        data[f"caption-{work.pk}"] = "a blue fox"
    client.post(reverse("licensing:captions"), data)
    third = Work.objects.get(pk=works[2].pk)
    assert third.caption == "written by hand" and third.shown_on_profile
    response = client.post(reverse("licensing:opt_in_eligible"), follow=True)
    assert "3 works opted in." in response.content.decode()
    client.post(reverse("licensing:work_consent", args=[works[0].pk, "opt-out"]))
    page = client.get(reverse("licensing:history")).content.decode()
    assert page.count("event-granted") == 3 and page.count("event-withdrawn") == 1
    # Each event's number is shown: a retired style version names the withdrawals that retired it by these.
    withdrawn = ConsentEvent.objects.get(work=works[0], kind=ConsentEvent.Kind.WITHDRAWN)
    assert f'id="event-{withdrawn.pk}"><td>#{withdrawn.pk}</td>' in page
    assert page.count(" UTC</time>") == 4  # the site keeps no reader's time zone: it says which one it shows


def test_studio_says_why_a_work_cannot_be_opted_in(client_for, artist):
    from licensing import services

    services.work_upload(artist=artist, data=images.png_with_xmp("DMI-PROHIBITED-AIMLTRAINING"), caption="x")
    page = client_for(artist.user).get(reverse("licensing:studio")).content.decode()
    assert "Do not train" in page and "DMI-PROHIBITED-AIMLTRAINING" in page
    assert ">Opt in<" not in page


def test_become_an_artist_page(client_for, subscriber):
    client = client_for(subscriber)
    page = client.get(reverse("licensing:become_artist")).content.decode()
    assert "Artist agreement" in page or "artist_agreement" in page
    # The help text reads as written (its "<slug>" was taken for a tag) and is the one the input points to.
    assert ('<small class="help" id="id_slug_helptext">Letters, numbers, hyphens; your page will be at '
            "/studio/artists/&lt;slug&gt;/.</small>") in page
    assert 'aria-describedby="id_slug_helptext"' in page
    refused = client.post(reverse("licensing:become_artist"), {"display_name": "Mio", "slug": "mio"})
    assert refused.status_code == 200 and not Artist.objects.exists()
    done = client.post(reverse("licensing:become_artist"), {"display_name": "Mio", "slug": "mio", "accept_agreement": "on"})
    assert done.status_code == 302 and Artist.objects.get().slug == "mio"
    upload_page = client.get(reverse("licensing:upload")).content.decode()
    assert "PNG, JPEG or WebP, at most 21.0 MB each, each side at least 256 pixels." in upload_page


def test_leaving_withdraws_everything(client_for, artist, withdrawal_receiver):
    from licensing import services

    work = make_work(artist)
    services.work_opt_in(work=work, actor=artist.user)
    client = client_for(artist.user)
    client.post(reverse("licensing:leave"), {"confirm": "wrong"})
    assert not Artist.objects.get().has_left
    client.post(reverse("licensing:leave"), {"confirm": artist.slug})
    assert Artist.objects.get().has_left and Work.objects.get().status == "deleted"
    assert ConsentEvent.objects.filter(kind="withdrawn").count() == 1 and len(withdrawal_receiver.calls) == 1
    assert "You have left the platform" in client.get(reverse("licensing:studio")).content.decode()
    assert client_for(None).get(reverse("licensing:artist_page", args=[artist.slug])).status_code == 404


def test_the_bulk_caption_buttons_save_the_captions_typed_first(client_for, artist):
    """They sit in the caption editor's form too: a caption typed and then a bulk button pressed, even one that
    refuses (nothing selected), must not be lost."""
    typed, other = make_work(artist, seed=1, caption="old"), make_work(artist, seed=2, caption="a red hen")
    client = client_for(artist.user)
    refused = client.post(reverse("licensing:captions"), {
        "operation": "apply", "bulk_caption": "x", f"caption-{typed.pk}": "a red fox, typed",
        f"caption-{other.pk}": "a red hen"}, follow=True)
    assert "Select at least one work first." in refused.content.decode()
    assert Work.objects.get(pk=typed.pk).caption == "a red fox, typed"
    replaced = client.post(reverse("licensing:captions"), {
        "operation": "replace", "find": "red", "replace": "blue", f"caption-{typed.pk}": "a red fox, typed again",
        f"caption-{other.pk}": "a red hen"}, follow=True)
    assert "Replaced in 2 captions." in replaced.content.decode()  # the replacement reads what was typed
    assert [Work.objects.get(pk=w.pk).caption for w in (typed, other)] == ["a blue fox, typed again", "a blue hen"]
    one = client.post(reverse("licensing:captions"), {"operation": "apply", "selected": [typed.pk],
                                                     "bulk_caption": "a fox"}, follow=True)
    assert "Caption applied to 1 work." in one.content.decode()


def test_the_terms_are_open_while_a_work_without_its_caption_yet_waits(client_for, artist):
    """Its caption can be typed on the page and the work opted in with the same click: the terms must be in view."""
    make_work(artist, seed=1, caption="")
    assert '<details id="consent-terms" open>' in client_for(artist.user).get(reverse("licensing:studio")).content.decode()


def test_every_button_of_the_caption_form_saves_the_captions_it_sends(client_for, artist):
    """Opt in, opt in all, withdraw and delete sit in the caption editor's form: a caption edited and then
    opted in is the caption consented to, not the one saved before, and no edit is silently dropped."""
    works = [make_work(artist, seed=seed, caption=f"old caption {seed}") for seed in (1, 2, 3, 4)]
    client = client_for(artist.user)

    def form(**captions):
        return {f"caption-{work.pk}": captions.get(f"w{i}", work.caption) for i, work in enumerate(Work.objects.filter(
            pk__in=[w.pk for w in works]).order_by("pk"))}

    client.post(reverse("licensing:work_consent", args=[works[0].pk, "opt-in"]), form(w0="a fox, edited", w1="a hare, edited"))
    first, second = Work.objects.get(pk=works[0].pk), Work.objects.get(pk=works[1].pk)
    assert first.is_opted_in and first.caption == "a fox, edited" and second.caption == "a hare, edited"
    client.post(reverse("licensing:opt_in_eligible"), form(w2="a crow, edited"))
    third = Work.objects.get(pk=works[2].pk)
    assert third.is_opted_in and third.caption == "a crow, edited"
    client.post(reverse("licensing:work_consent", args=[works[1].pk, "opt-out"]), form(w3="an owl, edited"))
    assert Work.objects.get(pk=works[3].pk).caption == "an owl, edited"
    client.post(reverse("licensing:work_delete", args=[works[3].pk]), form(w3="never saved", w0="a fox, edited again"))
    assert Work.objects.get(pk=works[0].pk).caption == "a fox, edited again"


def test_the_history_of_a_deleted_work_stays_readable(client_for, artist, other_artist):
    work = make_work(artist, seed=1, caption="a cat")
    client = client_for(artist.user)
    client.post(reverse("licensing:work_consent", args=[work.pk, "opt-in"]))
    client.post(reverse("licensing:work_delete", args=[work.pk]))
    response = client.get(reverse("licensing:history") + f"?work={work.pk}")
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Consent history of work #{work.pk}" in page and "event-granted" in page and "event-withdrawn" in page
    other = make_work(other_artist, seed=2)
    assert client.get(reverse("licensing:history") + f"?work={other.pk}").status_code == 404


def test_opt_in_all_names_the_works_it_could_not_opt_in(client_for, artist):
    make_work(artist, seed=1, caption="a cat")
    make_work(artist, seed=2, caption="")
    make_work(artist, seed=3, caption="")
    page = client_for(artist.user).post(reverse("licensing:opt_in_eligible"), follow=True).content.decode()
    assert "1 work opted in." in page
    assert "2 works cannot be opted in: each row says why (a caption to write, a do-not-train signal, or a review of who made it)." in page

"""An upload that is another artist's work (the same file, or a copy with its perceptual hash) is held for review:
stored, but never opted in or trained on until staff confirm that its artist made it."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from generation.ml import scenes
from licensing import selectors, services
from licensing.models import ConsentTerms, Work
from licensing.services import LicensingError
from tests.factories import StaffFactory, make_work
from tests.licensing import images

pytestmark = pytest.mark.django_db

HELD = "This image is the same as a work on another artist's account"


def upload(artist, data, name="copy.png", caption="a cat"):
    return services.work_upload(artist=artist, data=data, filename=name, caption=caption)


def training_works(artist):
    return list(selectors.works_for_training(artist=artist, terms=ConsentTerms.current(ConsentTerms.Kind.TRAINING)))


def test_the_same_file_as_another_artists_work_is_held_and_cannot_be_opted_in(artist, other_artist):
    original = make_work(artist, seed=7)
    result = upload(other_artist, images.good_png(7))
    copy = result.work
    assert result.status == "created" and copy.same_image_as == original and copy.ownership_held
    assert any(HELD in str(warning) for warning in result.warnings)
    assert not copy.is_eligible and HELD in str(copy.ineligible_reason)
    with pytest.raises(LicensingError) as refused:
        services.work_opt_in(work=copy, actor=other_artist.user)
    assert refused.value.code == "not_eligible" and HELD in refused.value.message
    assert services.works_opt_in_eligible(artist=other_artist, actor=other_artist.user) == []
    assert training_works(other_artist) == []
    # The first artist's own work is untouched.
    assert not Work.objects.get(pk=original.pk).ownership_held


def test_a_re_encoded_copy_with_the_same_perceptual_hash_is_held(artist, other_artist):
    original = make_work(artist, seed=8)
    jpeg = images.good_jpeg(8)
    copy = upload(other_artist, jpeg, name="copy.jpg").work
    assert copy.sha256 != original.sha256 and copy.phash == original.phash
    assert copy.same_image_as == original and copy.ownership_held
    # Staff comparing the two are told it is the picture, not the file, that matched.
    from licensing.admin import WorkAdmin

    assert "Not the same file: the same picture re-encoded or resized" in WorkAdmin.held_comparison(None, copy)


def drawing_png(seed, style):
    buffer = io.BytesIO()
    scenes.illustration(seed, style).image.resize((256, 256)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_different_drawing_that_shares_the_perceptual_hash_is_not_held(artist, other_artist):
    """An orange and a pink circle at one place on one yellow background: one hash, two pictures."""
    original = upload(artist, drawing_png(465, "pastel-outline"), name="orange.png").work
    other = upload(other_artist, drawing_png(538, "pastel-outline"), name="pink.png").work
    assert other.phash == original.phash and other.sha256 != original.sha256
    assert other.same_image_as is None and not other.ownership_held


def test_a_held_copy_does_not_hold_the_original_when_its_artist_uploads_it_again(artist, other_artist):
    original = make_work(artist, seed=19)
    assert upload(other_artist, images.good_png(19)).work.ownership_held
    services.work_delete(work=original, actor=artist.user)
    again = upload(artist, images.good_png(19), name="again.png").work
    assert again.same_image_as is None and not again.ownership_held


def test_other_images_deleted_works_and_the_artists_own_works_are_not_held(artist, other_artist):
    gone = make_work(artist, seed=9)
    services.work_delete(work=gone, actor=artist.user)
    make_work(artist, seed=10)
    assert not upload(other_artist, images.good_png(9)).work.ownership_held  # its only match was deleted
    assert not upload(other_artist, images.good_png(11)).work.ownership_held  # another image
    assert upload(artist, images.good_jpeg(10), name="mine-again.jpg").work.same_image_as is None  # the artist's own


def test_staff_confirming_ownership_releases_the_work_for_opt_in_and_training(artist, other_artist):
    make_work(artist, seed=12)
    copy = upload(other_artist, images.good_png(12)).work
    staff = StaffFactory()
    released = services.works_ownership_confirm(works=[copy, make_work(other_artist, seed=13)], actor=staff)
    assert released == [copy] and not released[0].ownership_held
    copy.refresh_from_db()
    assert not copy.ownership_held and copy.ownership_confirmed_by == staff and copy.ownership_confirmed_at
    services.work_opt_in(work=copy, actor=other_artist.user)
    assert copy in training_works(other_artist)
    assert services.works_ownership_confirm(works=[copy], actor=staff) == []  # already released: nothing changes


def test_a_deleted_held_work_is_not_released(artist, other_artist):
    make_work(artist, seed=20)
    copy = upload(other_artist, images.good_png(20)).work
    services.work_delete(work=copy, actor=other_artist.user)
    assert services.works_ownership_confirm(works=[copy], actor=StaffFactory()) == []
    assert Work.objects.get(pk=copy.pk).ownership_confirmed_at is None


def test_a_held_work_never_enters_training_even_if_its_consent_row_says_granted(artist, other_artist):
    """The training selector holds it back on its own, not only the opt-in service."""
    make_work(artist, seed=14)
    copy = upload(other_artist, images.good_png(14)).work
    original = copy.same_image_as
    Work.objects.filter(pk=copy.pk).update(same_image_as=None)
    services.work_opt_in(work=copy, actor=other_artist.user)
    assert training_works(other_artist) == [copy]
    Work.objects.filter(pk=copy.pk).update(same_image_as=original)
    assert training_works(other_artist) == []


def picture_of(work):
    return reverse("licensing:work_file", args=[work.pk, "original"])


def test_the_admin_lists_held_works_and_releases_them_after_showing_both_pictures(client, artist, other_artist):
    original = make_work(artist, seed=15)
    copy = upload(other_artist, images.good_png(15)).work
    free = make_work(other_artist, seed=16)
    client.force_login(StaffFactory())
    listing = reverse("admin:licensing_work_changelist")
    held_page = client.get(listing, {"held": "yes"}).content.decode()
    assert f'href="/admin/licensing/work/{copy.pk}/change/' in held_page
    assert f'href="/admin/licensing/work/{free.pk}/change/' not in held_page
    change_page = client.get(reverse("admin:licensing_work_change", args=[copy.pk])).content.decode()
    assert picture_of(copy) in change_page and picture_of(original) in change_page
    assert client.get(picture_of(original)).status_code == 200  # staff see another artist's file
    # The action first shows each held work beside the work it matches; nothing is released yet.
    asked = client.post(listing, {"action": "confirm_ownership", "_selected_action": [copy.pk, free.pk]})
    page = asked.content.decode()
    assert asked.status_code == 200 and "Release the works held for review?" in page
    assert "licensing/admin.css" in page  # side by side (the CSP refuses inline styles)
    assert picture_of(copy) in page and picture_of(original) in page and picture_of(free) not in page
    assert artist.display_name in page and other_artist.display_name in page and "The same file (sha256)." in page
    assert f'name="_selected_action" value="{copy.pk}"' in page and f'value="{free.pk}"' not in page
    assert Work.objects.get(pk=copy.pk).ownership_held
    response = client.post(listing, {"action": "confirm_ownership", "_selected_action": [copy.pk], "post": "yes"},
                           follow=True)
    assert "Released 1 work held for review." in response.content.decode()
    assert not Work.objects.get(pk=copy.pk).ownership_held
    again = client.post(listing, {"action": "confirm_ownership", "_selected_action": [copy.pk]}, follow=True)
    assert "None of the selected works was held for review; nothing changed." in again.content.decode()


def test_the_api_says_the_work_is_held_without_naming_the_other_artists_work(api_client_for, artist, other_artist):
    original = make_work(artist, seed=17)
    client = api_client_for(other_artist.user)
    created = client.post(
        reverse("works-list"), {"image": SimpleUploadedFile("copy.png", images.good_png(17)), "caption": "a cat"},
        format="multipart",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["ownership_held"] is True and not body["eligible"] and HELD in body["ineligible_reason"]
    assert any(HELD in warning for warning in body["warnings"])
    # Nothing names the other artist or their work.
    assert "same_image_as" not in body and body["near_duplicate_of"] is None
    listed = client.get(reverse("works-list")).content.decode()
    for told in (original.artist.slug, original.artist.display_name, f"#{original.pk}", original.original_name):
        assert told not in created.content.decode() and told not in listed
    refused = client.post(reverse("works-opt-in", args=[body["id"]]))
    assert refused.status_code == 400 and HELD in str(refused.json())
    # The hold is not the artist's to lift: read-only, so sending it back changes nothing.
    patched = client.patch(reverse("works-detail", args=[body["id"]]), {"ownership_held": False}, format="json")
    assert patched.json()["ownership_held"] is True and Work.objects.get(pk=body["id"]).ownership_held


def test_the_studio_shows_the_hold_and_offers_no_opt_in(client_for, artist, other_artist):
    make_work(artist, seed=18)
    copy = upload(other_artist, images.good_png(18)).work
    page = client_for(other_artist.user).get(reverse("licensing:studio")).content.decode()
    row = page[page.index(f'id="work-{copy.pk}"'):]
    row = row[:row.index("</tr>")]
    assert "Held for review" in row and HELD in row.replace("&#x27;", "'") and "not shown on your public page" in row
    assert reverse("licensing:work_consent", args=[copy.pk, "opt-in"]) not in row


def test_a_held_work_is_not_shown_publicly_until_released(client, artist, other_artist):
    make_work(artist, seed=21)
    copy = upload(other_artist, images.good_png(21)).work
    services.work_update(work=copy, shown_on_profile=True)
    public_file = reverse("licensing:work_file", args=[copy.pk, "original"])
    assert list(selectors.works_shown(artist=other_artist)) == []
    assert client.get(public_file).status_code == 404
    services.works_ownership_confirm(works=[copy], actor=StaffFactory())
    assert list(selectors.works_shown(artist=other_artist)) == [copy]
    assert client.get(public_file).status_code == 200


def test_staff_who_may_only_view_works_cannot_release_one(client, artist, other_artist):
    from django.contrib.auth.models import Permission

    make_work(artist, seed=22)
    copy = upload(other_artist, images.good_png(22)).work
    viewer = StaffFactory(is_superuser=False)
    viewer.user_permissions.add(Permission.objects.get(codename="view_work"))
    client.force_login(viewer)
    client.post(reverse("admin:licensing_work_changelist"),
                {"action": "confirm_ownership", "_selected_action": [copy.pk], "post": "yes"})
    assert Work.objects.get(pk=copy.pk).ownership_held


def test_staff_are_mailed_about_a_hold_once_it_is_committed(settings, monkeypatch, artist, other_artist,
                                                            django_capture_on_commit_callbacks, mailoutbox):
    from licensing import tasks

    settings.ADMINS = [("", "staff@example.test")]
    queued = []
    monkeypatch.setattr(tasks.tell_staff_of_held_work, "delay", queued.append)  # the broker's side is Celery's
    monkeypatch.setattr(tasks.tell_artist_of_copied_work, "delay", lambda work_id: None)
    original = make_work(artist, seed=23)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        copy = upload(other_artist, images.good_png(23)).work
        make_work(other_artist, seed=24)  # not held: no mail
    assert queued == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert queued == [copy.pk]

    settings.SITE_URL = "https://illustration.example"
    assert tasks.tell_staff_of_held_work(copy.pk) == "mailed"
    assert tasks.tell_staff_of_held_work(copy.pk) == "not mailed"  # delivered twice: one mail
    (mail,) = mailoutbox
    assert mail.to == ["staff@example.test"]
    assert f"Work #{copy.pk} is held for review: the same image as work #{original.pk}" in mail.subject
    assert f"https://illustration.example/admin/licensing/work/{copy.pk}/change/" in mail.body
    assert other_artist.slug in mail.body and artist.slug in mail.body


def test_no_mail_goes_for_a_hold_released_or_deleted_before_it_is_sent(settings, artist, other_artist, mailoutbox):
    from licensing import tasks

    settings.ADMINS = [("", "staff@example.test")]
    make_work(artist, seed=26)
    released = upload(other_artist, images.good_png(26)).work
    services.works_ownership_confirm(works=[released], actor=StaffFactory())
    deleted = upload(other_artist, images.good_jpeg(26), name="again.jpg").work
    assert deleted.ownership_held
    services.work_delete(work=deleted, actor=other_artist.user)
    assert tasks.tell_staff_of_held_work(released.pk) == "not mailed"
    assert tasks.tell_staff_of_held_work(deleted.pk) == "not mailed"
    assert mailoutbox == []
    assert not Work.objects.get(pk=deleted.pk).ownership_held
    assert list(Work.objects.held_for_review()) == []


def test_without_admins_only_the_copied_artist_is_told_and_a_broker_that_refuses_loses_no_upload(
        settings, monkeypatch, artist, other_artist, django_capture_on_commit_callbacks):
    from licensing import tasks

    queued = []

    def refuse(work_id):
        queued.append(("refused", work_id))
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(tasks.tell_staff_of_held_work, "delay", queued.append)
    monkeypatch.setattr(tasks.tell_artist_of_copied_work, "delay", lambda work_id: queued.append(("artist", work_id)))
    make_work(artist, seed=25)
    settings.ADMINS = []
    with django_capture_on_commit_callbacks(execute=True):
        first = upload(other_artist, images.good_png(25), name="a.png").work
    assert queued == [("artist", first.pk)]  # no staff to mail; the copied artist is told all the same
    queued.clear()
    monkeypatch.setattr(tasks.tell_staff_of_held_work, "delay", refuse)
    monkeypatch.setattr(tasks.tell_artist_of_copied_work, "delay", refuse)
    settings.ADMINS = [("", "staff@example.test")]
    with django_capture_on_commit_callbacks(execute=True):
        copy = upload(other_artist, images.good_jpeg(25), name="b.jpg").work
    assert queued == [("refused", copy.pk), ("refused", copy.pk)]  # the staff's refusal does not skip the artist's
    assert Work.objects.get(pk=copy.pk).ownership_held


def test_the_copied_artist_is_mailed_once_without_being_told_whose_upload_it_is(
        settings, monkeypatch, artist, other_artist, django_capture_on_commit_callbacks, mailoutbox):
    from licensing import tasks

    settings.ADMINS = []
    settings.SITE_URL = "https://illustration.example"
    queued = []
    monkeypatch.setattr(tasks.tell_artist_of_copied_work, "delay", queued.append)
    original = make_work(artist, seed=27)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        copy = upload(other_artist, images.good_png(27)).work
    assert queued == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert queued == [copy.pk]
    assert tasks.tell_artist_of_copied_work(copy.pk) == "mailed"
    assert tasks.tell_artist_of_copied_work(copy.pk) == "not mailed"  # delivered twice: one mail
    (mail,) = mailoutbox
    assert mail.to == [artist.user.email]
    assert mail.subject == f"A copy of your work #{original.pk} was uploaded to another account"
    assert f"https://illustration.example/studio/#work-{original.pk}" in mail.body
    # It takes no side: the earlier upload is not always the real artist's.
    assert "review which account's artist made it" in mail.body and "that upload is held" in mail.body
    for told in (other_artist.slug, other_artist.display_name, other_artist.user.email, copy.original_name):
        assert told not in mail.subject and told not in mail.body
    assert Work.objects.get(pk=copy.pk).copied_artist_told_at is not None


def test_the_copied_artist_gets_at_most_one_mail_a_day_however_many_copies(settings, artist, other_artist,
                                                                           mailoutbox):
    from datetime import timedelta

    from licensing import tasks

    first, second = make_work(artist, seed=33), make_work(artist, seed=34)
    copies = [upload(other_artist, images.good_png(33)).work, upload(other_artist, images.good_jpeg(33), name="b.jpg").work,
              upload(other_artist, images.good_png(34), name="c.png").work]
    assert [copy.same_image_as for copy in copies] == [first, first, second]
    assert [tasks.tell_artist_of_copied_work(copy.pk) for copy in copies] == ["mailed", "not mailed", "not mailed"]
    assert len(mailoutbox) == 1
    Work.objects.filter(pk=copies[0].pk).update(copied_artist_told_at=copies[0].created_at - timedelta(days=1, seconds=1))
    assert tasks.tell_artist_of_copied_work(copies[2].pk) == "mailed"  # a day on, the next copy is told
    assert f"#{second.pk}" in mailoutbox[1].subject


def test_the_copied_artist_is_not_mailed_once_the_hold_is_over_or_when_they_cannot_be(
        settings, artist, other_artist, mailoutbox):
    from licensing import tasks

    make_work(artist, seed=28)
    released = upload(other_artist, images.good_png(28)).work
    deleted = upload(other_artist, images.good_jpeg(28), name="again.jpg").work
    assert released.ownership_held and deleted.ownership_held
    services.works_ownership_confirm(works=[released], actor=StaffFactory())
    services.work_delete(work=deleted, actor=other_artist.user)
    original = make_work(artist, seed=29)
    copy = upload(other_artist, images.good_png(29)).work
    assert copy.ownership_held
    for work in (released, deleted):
        assert tasks.tell_artist_of_copied_work(work.pk) == "not mailed"
    user = artist.user
    for unreachable in ({"is_active": False}, {"email": ""}):
        saved = {name: getattr(user, name) for name in unreachable}
        type(user).objects.filter(pk=user.pk).update(**unreachable)
        assert tasks.tell_artist_of_copied_work(copy.pk) == "not mailed"
        type(user).objects.filter(pk=user.pk).update(**saved)
    services.work_delete(work=original, actor=artist.user)  # the copy stays held for staff, but nothing is left to tell
    assert Work.objects.get(pk=copy.pk).ownership_held
    assert tasks.tell_artist_of_copied_work(copy.pk) == "not mailed"
    assert mailoutbox == []
    left = make_work(artist, seed=35)
    copy_of_left = upload(other_artist, images.good_png(35), name="d.png").work
    assert copy_of_left.same_image_as == left
    services.artist_leave(artist=artist, actor=artist.user)
    assert tasks.tell_artist_of_copied_work(copy_of_left.pk) == "not mailed"
    assert mailoutbox == []


def test_the_mail_to_the_copied_artist_is_in_the_sites_language(settings, artist, other_artist, mailoutbox):
    from licensing import tasks

    settings.LANGUAGE_CODE = "ja"
    original = make_work(artist, seed=30)
    copy = upload(other_artist, images.good_png(30)).work
    assert tasks.tell_artist_of_copied_work(copy.pk) == "mailed"
    (mail,) = mailoutbox
    assert f"#{original.pk}" in mail.subject and "作品" in mail.subject and "copy" not in mail.subject
    assert "別のアカウント" in mail.body and "uploaded" not in mail.body and f"#work-{original.pk}" in mail.body


def test_the_copied_artist_sees_in_the_studio_and_the_api_that_a_copy_is_held(
        client_for, api_client_for, artist, other_artist):
    original = make_work(artist, seed=31)
    untouched = make_work(artist, seed=32)
    copy = upload(other_artist, images.good_png(31)).work
    page = client_for(artist.user).get(reverse("licensing:studio")).content.decode()
    assert "1 of your works has a copy on another account." in page
    row = page[page.index(f'id="work-{original.pk}"'):]
    assert "A copy on another account is held for review." in row[:row.index("</tr>")]
    row = page[page.index(f'id="work-{untouched.pk}"'):]
    assert "A copy on another account" not in row[:row.index("</tr>")]
    client = api_client_for(artist.user)
    listed = client.get(reverse("works-list"))
    assert {work["id"]: work["copy_held_for_review"] for work in listed.json()["results"]} == {
        original.pk: True, untouched.pk: False}
    detail = client.get(reverse("works-detail", args=[original.pk]))
    assert detail.json()["copy_held_for_review"] is True
    for told in (other_artist.slug, other_artist.display_name, f"#{copy.pk}", f'"id":{copy.pk}', copy.original_name):
        assert told not in page and told not in listed.content.decode() and told not in detail.content.decode()
    # Once staff release the copy (its artist made it too), it is no longer held, and no longer said to be.
    services.works_ownership_confirm(works=[copy], actor=StaffFactory())
    assert client.get(reverse("works-detail", args=[original.pk])).json()["copy_held_for_review"] is False
    assert "has a copy on another account" not in client_for(artist.user).get(reverse("licensing:studio")).content.decode()


@pytest.mark.parametrize("page", ["licensing:studio", "works-list"])
def test_whether_a_copy_is_held_costs_no_query_per_work(client_for, artist, other_artist, page):
    """Read in the list's own query: a query per work would grow with the studio."""
    def queries_with(count, seed):
        for offset in range(count):
            make_work(artist, seed=seed + offset)
            upload(other_artist, images.good_png(seed + offset), name=f"{seed + offset}.png")
        client = client_for(artist.user)
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse(page)).status_code == 200
        return len(captured)

    assert queries_with(1, 40) == queries_with(3, 41)

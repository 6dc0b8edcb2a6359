"""Staff can look at everything and take things down, but cannot edit around consent or publishing."""

import pytest
from django.urls import reverse

from generation.models import AdapterVersion
from generation.selectors import usable_adapter_versions
from licensing.models import Artist, ConsentEvent, ConsentTerms, Work
from tests.factories import StaffFactory

from .conftest import opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


@pytest.fixture
def staff_client(client):
    client.force_login(StaffFactory())
    return client


def test_adapter_versions_are_read_only_in_the_admin(staff_client):
    artist, works = opted_in_artist(4)
    version = ready_version(artist, publish=False)
    AdapterVersion.objects.filter(pk=version.pk).update(status=AdapterVersion.Status.RETIRED)
    change = reverse("admin:generation_adapterversion_change", args=[version.pk])
    assert staff_client.get(change).status_code == 200  # viewing is fine
    assert staff_client.post(change, {"status": "ready"}).status_code == 403
    assert staff_client.get(reverse("admin:generation_adapterversion_add")).status_code == 403
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.RETIRED


def test_staff_take_a_style_down_but_cannot_publish_one(staff_client):
    artist, _works = opted_in_artist(4)
    published = ready_version(artist)
    other = ready_version(artist, publish=False)
    style = published.style
    staff_client.post(reverse("admin:generation_style_change", args=[style.pk]),
                      {"name": style.name, "slug": style.slug, "description": "", "published_version": other.pk,
                       "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"})
    style.refresh_from_db()
    assert style.published_version_id == published.pk
    response = staff_client.post(reverse("admin:generation_style_changelist"),
                                 {"action": "take_down_styles", "_selected_action": [style.pk]})
    assert response.status_code == 302
    style.refresh_from_db()
    assert style.published_version_id is None and not usable_adapter_versions().exists()


def test_a_work_is_removed_in_the_admin_only_through_the_withdrawal(staff_client, django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(4)
    version = ready_version(artist)
    work = works[0]
    staff_client.post(reverse("admin:licensing_work_change", args=[work.pk]),
                      {"caption": work.caption, "status": "deleted", "do_not_train": "on"})
    work.refresh_from_db()
    assert work.status == Work.Status.ACTIVE and not work.do_not_train
    assert staff_client.post(reverse("admin:licensing_work_delete", args=[work.pk])).status_code == 403

    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(reverse("admin:licensing_work_changelist"),
                                     {"action": "delete_works", "_selected_action": [work.pk]})
    assert response.status_code == 302
    work.refresh_from_db()
    version.refresh_from_db()
    assert work.status == Work.Status.DELETED
    assert ConsentEvent.objects.filter(work=work, kind=ConsentEvent.Kind.WITHDRAWN).exists()
    assert version.status == AdapterVersion.Status.RETIRED


def test_deleting_several_works_in_the_admin_is_one_withdrawal_and_one_retrain(staff_client, django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(8)
    version = ready_version(artist)
    chosen = [work.pk for work in works[:3]]
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(reverse("admin:licensing_work_changelist"), {"action": "delete_works", "_selected_action": chosen})
    assert sorted(AdapterVersion.objects.values_list("number", "status")) == [(1, "retired"), (2, "queued")]
    retrain = AdapterVersion.objects.get(number=2)
    assert retrain.snapshot.work_count == 5 and retrain.publish_when_ready
    assert Work.objects.filter(pk__in=chosen, status=Work.Status.DELETED).count() == 3
    version.refresh_from_db()
    assert all(f"#{pk}" in version.retired_reason_shown for pk in chosen)


def test_staff_who_may_only_view_cannot_run_the_actions(client):
    from django.contrib.auth.models import Permission

    artist, works = opted_in_artist(4)
    version = ready_version(artist)
    viewer = StaffFactory(is_superuser=False)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_work", "view_style"]))
    draft = ConsentTerms.objects.create(kind=ConsentTerms.Kind.TRAINING, version=99, title="Draft", text="Draft.", is_active=False)
    viewer.user_permissions.add(Permission.objects.get(codename="view_consentterms"))
    client.force_login(viewer)
    client.post(reverse("admin:licensing_consentterms_delete", args=[draft.pk]), {"post": "yes"})
    assert ConsentTerms.objects.filter(pk=draft.pk).exists()
    client.post(reverse("admin:licensing_work_changelist"), {"action": "delete_works", "_selected_action": [works[0].pk]})
    client.post(reverse("admin:generation_style_changelist"), {"action": "take_down_styles", "_selected_action": [version.style_id]})
    works[0].refresh_from_db()
    version.style.refresh_from_db()
    assert works[0].status == Work.Status.ACTIVE and version.style.published_version_id == version.pk


def test_the_words_of_accepted_consent_terms_cannot_change(staff_client):
    artist, _works = opted_in_artist(1)  # accepts the current training terms
    accepted = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    original = (accepted.title, accepted.text)
    staff_client.post(reverse("admin:licensing_consentterms_change", args=[accepted.pk]), {
        "kind": accepted.kind, "version": accepted.version, "title": "Softer terms", "text": "Anything goes.", "is_active": "on",
    })
    accepted.refresh_from_db()
    assert (accepted.title, accepted.text) == original
    assert staff_client.post(reverse("admin:licensing_consentterms_delete", args=[accepted.pk]), {"post": "yes"}).status_code == 403
    draft = ConsentTerms.objects.create(kind=accepted.kind, version=accepted.version + 1, title="Draft", text="Draft.", is_active=False)
    staff_client.post(reverse("admin:licensing_consentterms_change", args=[draft.pk]), {
        "kind": draft.kind, "version": draft.version, "title": "Draft, corrected", "text": "Draft.",
        "translations-TOTAL_FORMS": "1", "translations-INITIAL_FORMS": "0",
        "translations-0-language": "ja", "translations-0-title": "下書き", "translations-0-text": "下書き。",
    })
    draft.refresh_from_db()
    assert draft.title == "Draft, corrected"  # nobody has accepted it yet, nor seen it
    assert draft.translation_for("ja").title == "下書き"
    # Its translation is part of the words shown: fixed once the version is active, as the original is.
    ConsentTerms.objects.filter(pk=draft.pk).update(is_active=True)
    translation = draft.translation_for("ja")
    staff_client.post(reverse("admin:licensing_consentterms_change", args=[draft.pk]), {
        "is_active": "on", "translations-TOTAL_FORMS": "1", "translations-INITIAL_FORMS": "1",
        "translations-0-id": translation.pk, "translations-0-terms": draft.pk, "translations-0-language": "ja",
        "translations-0-title": "和らげた下書き", "translations-0-text": "何でもあり。",
    })
    assert draft.translation_for("ja").title == "下書き"
    # Active, it is shown to artists, who accept it by its number: its words are fixed though nobody accepted it yet.
    shown = ConsentTerms.objects.create(kind=accepted.kind, version=accepted.version + 2, title="Shown", text="Shown.")
    staff_client.post(reverse("admin:licensing_consentterms_change", args=[shown.pk]), {
        "kind": shown.kind, "version": shown.version, "title": "Shown, softened", "text": "Anything goes.", "is_active": "on",
    })
    shown.refresh_from_db()
    assert (shown.title, shown.text) == ("Shown", "Shown.")
    assert staff_client.post(reverse("admin:licensing_consentterms_delete", args=[shown.pk]), {"post": "yes"}).status_code == 403


def test_staff_cannot_undo_an_artists_departure_or_forge_an_acceptance(staff_client):
    from django.utils import timezone

    artist, _works = opted_in_artist(4)
    left_at = timezone.now()
    Artist.objects.filter(pk=artist.pk).update(left_at=left_at)
    other_terms = ConsentTerms.objects.create(kind=ConsentTerms.Kind.ARTIST_AGREEMENT, version=98, title="Other",
                                              text="Other.", is_active=False)
    response = staff_client.post(reverse("admin:licensing_artist_change", args=[artist.pk]), {
        "user": artist.user_id, "display_name": "Renamed", "slug": artist.slug, "bio": "", "links": "",
        "payout_contact": "", "agreement": other_terms.pk, "agreement_accepted_at_0": "", "agreement_accepted_at_1": "",
        "left_at_0": "", "left_at_1": "",
    })
    assert response.status_code == 302  # saved: the editable fields are taken, the others ignored
    artist_before, artist = artist, Artist.objects.get(pk=artist.pk)
    assert artist.display_name == "Renamed"
    assert artist.left_at == left_at
    assert artist.agreement_id == artist_before.agreement_id != other_terms.pk
    assert artist.agreement_accepted_at == artist_before.agreement_accepted_at


def test_base_model_rows_are_read_only_in_the_admin(staff_client, settings):
    from generation.base_models import base_model_current

    base = base_model_current()
    change = reverse("admin:generation_basemodel_change", args=[base.pk])
    assert staff_client.get(change).status_code == 200
    assert staff_client.post(change, {"name": "x", "kind": base.kind, "path": "/elsewhere"}).status_code == 403
    assert staff_client.post(reverse("admin:generation_basemodel_add"),
                             {"name": "x", "kind": base.kind, "path": str(settings.BASE_MODEL)}).status_code == 403
    base.refresh_from_db()
    assert base.path != "/elsewhere"


def test_a_caption_edit_does_not_undo_a_withdrawal_committed_while_the_page_was_open(staff_client, monkeypatch):
    from licensing import admin as licensing_admin
    from licensing.services import work_withdraw

    artist, works = opted_in_artist(4)
    work = works[0]
    get_object = licensing_admin.WorkAdmin.get_object

    def withdrawn_meanwhile(self, request, object_id, from_field=None):
        read = get_object(self, request, object_id, from_field)
        work_withdraw(work=work, actor=artist.user)  # the artist, in another tab
        return read

    monkeypatch.setattr(licensing_admin.WorkAdmin, "get_object", withdrawn_meanwhile)
    staff_client.post(reverse("admin:licensing_work_change", args=[work.pk]), {"caption": "a corrected caption"})
    work.refresh_from_db()
    assert work.caption == "a corrected caption"
    assert not work.is_opted_in and work.current_consent.kind == ConsentEvent.Kind.WITHDRAWN


def test_a_deleted_work_cannot_be_edited_in_the_admin(staff_client):
    from licensing.services import work_delete

    artist, works = opted_in_artist(4)
    work_delete(work=works[0], actor=artist.user)
    response = staff_client.post(reverse("admin:licensing_work_change", args=[works[0].pk]), {"caption": "new words"})
    assert response.status_code == 200 and "The work has been deleted." in response.content.decode()
    works[0].refresh_from_db()
    assert works[0].caption != "new words"


def test_a_style_rename_does_not_put_back_a_version_taken_down_meanwhile(staff_client, monkeypatch):
    from generation import admin as generation_admin
    from generation.services import style_unpublish

    artist, _works = opted_in_artist(4)
    style = ready_version(artist).style
    get_object = generation_admin.StyleAdmin.get_object

    def taken_down_meanwhile(self, request, object_id, from_field=None):
        read = get_object(self, request, object_id, from_field)
        style_unpublish(style=style)
        return read

    monkeypatch.setattr(generation_admin.StyleAdmin, "get_object", taken_down_meanwhile)
    staff_client.post(reverse("admin:generation_style_change", args=[style.pk]),
                      {"name": "Renamed", "slug": style.slug, "description": "",
                       "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"})
    style.refresh_from_db()
    assert style.name == "Renamed" and style.published_version_id is None


def test_an_artist_profile_cannot_be_moved_to_another_account(staff_client):
    from tests.factories import UserFactory

    artist, _works = opted_in_artist(4)
    owner = artist.user
    staff_client.post(reverse("admin:licensing_artist_change", args=[artist.pk]),
                      {"display_name": artist.display_name, "slug": artist.slug, "user": UserFactory().pk})
    artist.refresh_from_db()
    assert artist.user == owner


def test_the_takedown_counts_only_the_styles_it_took_down(staff_client):
    published = ready_version(opted_in_artist(4)[0]).style
    not_published = ready_version(opted_in_artist(4, first_seed=100)[0], publish=False).style
    response = staff_client.post(reverse("admin:generation_style_changelist"),
                                 {"action": "take_down_styles", "_selected_action": [published.pk, not_published.pk]},
                                 follow=True)
    shown = [str(message) for message in response.context["messages"]]
    assert shown == ["Took down 2 styles; their artists cannot publish them until you lift the takedown.",
                     "1 selected style was not published; a training of it under way will not go live.",
                     "2 styles taken down have no reason yet: write the one each artist reads in the style's form."]


def test_a_versions_page_shows_its_reasons_as_sentences(staff_client):
    artist, works = opted_in_artist(6)
    version = ready_version(artist)
    from licensing.services import work_withdraw

    work_withdraw(work=works[0], actor=artist.user)
    page = staff_client.get(reverse("admin:generation_adapterversion_change", args=[version.pk])).content.decode()
    assert f"#{works[0].pk}" in page and "%(works)s" not in page

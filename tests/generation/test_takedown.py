"""Staff's takedown holds: the artist cannot publish, a training does not go live, generation cannot use the
style, until staff lift it."""

import pytest
from django.test import Client
from django.urls import reverse

from generation import services
from generation.models import AdapterVersion, Style
from generation.selectors import usable_adapter_versions
from generation.storage import adapter_dir
from tests.factories import StaffFactory

from .conftest import finished_result, opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]

REFUSAL = "Staff took this style down on {date} UTC; no version of it can be published until they lift the takedown."


@pytest.fixture
def staff_client():
    client = Client()  # its own: the artist's client_for shares pytest-django's `client`
    client.force_login(StaffFactory())
    return client


def admin_action(staff_client, action, *styles):
    response = staff_client.post(reverse("admin:generation_style_changelist"),
                                 {"action": action, "_selected_action": [style.pk for style in styles]}, follow=True)
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def test_a_takedown_holds_until_staff_lift_it(staff_client, api_client_for, client_for):
    artist, _works = opted_in_artist(4)
    earlier = ready_version(artist, publish=False)
    style = ready_version(artist).style
    assert admin_action(staff_client, "take_down_styles", style) == [
        "Took down 1 style; its artist cannot publish it until you lift the takedown.",
        "1 style taken down has no reason yet: write the one its artist reads in the style's form."]
    style.refresh_from_db()
    assert style.published_version_id is None and style.taken_down_at is not None
    assert not usable_adapter_versions().exists()
    refusal = REFUSAL.format(date=f"{style.taken_down_at:%Y-%m-%d %H:%M}")

    api = api_client_for(artist.user)
    response = api.post(reverse("api-adapter-version-publish", args=[earlier.pk]))  # a rollback is a publish too
    assert response.status_code == 400 and response.json()["error"]["message"] == refusal
    (listed,) = api.get(reverse("api-styles")).json()
    assert listed["taken_down_at"] is not None and listed["takedown_reason"] == ""

    page_client = client_for(artist.user)
    response = page_client.post(reverse("generation:publish", args=[earlier.pk]), follow=True)
    assert [str(message) for message in response.context["messages"]] == [refusal]
    page = response.content.decode()
    assert "Taken down by staff" in page and 'aria-label="Publish v1"' not in page
    assert 'name="publish_when_ready"' not in page  # nothing the artist starts can go live either
    assert "You can still train it." in page

    change = reverse("admin:generation_style_change", args=[style.pk])
    staff_client.post(change, {"name": style.name, "slug": style.slug, "description": "",
                               "takedown_reason": "A complaint about\nwork #4 is being looked at.",
                               "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"}, follow=True)
    page = page_client.get(reverse("generation:style")).content.decode()
    assert "Their reason: A complaint about<br>work #4 is being looked at." in page
    assert admin_action(staff_client, "take_down_styles", style) == [  # again, with its reason written: no reminder
        "Took down 1 style; its artist cannot publish it until you lift the takedown.",
        "1 selected style was not published; a training of it under way will not go live."]

    assert admin_action(staff_client, "lift_takedowns", style) == [
        "Lifted the takedown of 1 style; its artist can publish it again."]
    style.refresh_from_db()
    assert style.taken_down_at is None and style.takedown_reason == "" and style.published_version_id is None
    # The artist is told, on the page and through the API, until they publish again.
    lifted = f"Staff lifted their takedown of this style on {style.takedown_lifted_at:%Y-%m-%d %H:%M} UTC: you can publish a version again."
    page = page_client.get(reverse("generation:style")).content.decode()
    assert lifted in page and "Taken down by staff" not in page
    assert api.get(reverse("api-styles")).json()[0]["takedown_lifted_at"] is not None
    assert api.post(reverse("api-adapter-version-publish", args=[earlier.pk])).status_code == 200
    assert list(usable_adapter_versions()) == [earlier]
    assert "Staff lifted their takedown" not in page_client.get(reverse("generation:style")).content.decode()
    # The artist's own unpublish later does not bring the old note back.
    assert api.post(reverse("api-style-unpublish", args=[style.pk])).status_code == 200
    assert "Staff lifted their takedown" not in page_client.get(reverse("generation:style")).content.decode()
    # A new takedown is not shown as lifted.
    admin_action(staff_client, "take_down_styles", style)
    assert api.get(reverse("api-styles")).json()[0]["takedown_lifted_at"] is None


def test_the_reason_is_written_only_while_a_style_is_down(staff_client):
    style = ready_version(opted_in_artist(4)[0]).style
    change = reverse("admin:generation_style_change", args=[style.pk])
    staff_client.post(change, {"name": style.name, "slug": style.slug, "description": "", "takedown_reason": "early",
                               "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"})
    style.refresh_from_db()
    assert style.takedown_reason == "" and style.published_version_id is not None


def test_taking_down_again_keeps_the_date_and_the_reason(staff_client):
    style = ready_version(opted_in_artist(4)[0]).style
    first = services.style_take_down(style=style, reason="a complaint").taken_down_at
    again = services.style_take_down(style=style)
    assert again.taken_down_at == first and again.takedown_reason == "a complaint"
    assert services.style_take_down(style=style, reason="confirmed").takedown_reason == "confirmed"


def test_a_training_does_not_go_live_on_a_style_taken_down(settings):
    artist, _works = opted_in_artist(4)
    style = services.style_take_down(style=ready_version(artist).style)
    version = services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    assert version.publish_when_ready is False  # started while down
    job = services.training_job_claim(adapter_version_id=version.pk, worker="test")
    finished = services.training_job_finish(job=job, result=finished_result(adapter_dir(version)),
                                            adapter_root=settings.ADAPTER_ROOT)
    assert finished.status == AdapterVersion.Status.READY
    assert Style.objects.get(pk=style.pk).published_version_id is None


def test_a_training_under_way_when_the_style_is_taken_down_does_not_go_live(settings, staff_client):
    artist, _works = opted_in_artist(4)
    version = services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    job = services.training_job_claim(adapter_version_id=version.pk, worker="test")
    assert admin_action(staff_client, "take_down_styles", version.style) == [
        "Took down 1 style; its artist cannot publish it until you lift the takedown.",
        "1 selected style was not published; a training of it under way will not go live.",
        "1 style taken down has no reason yet: write the one its artist reads in the style's form."]
    # Should a wish to go live slip past the takedown, the finish still stands and the takedown holds.
    AdapterVersion.objects.filter(pk=version.pk).update(publish_when_ready=True)
    finished = services.training_job_finish(job=job, result=finished_result(adapter_dir(version)),
                                            adapter_root=settings.ADAPTER_ROOT)
    assert finished.status == AdapterVersion.Status.READY and finished.weights_sha256
    assert Style.objects.get(pk=version.style_id).published_version_id is None


def test_generation_never_uses_a_style_taken_down():
    version = ready_version(opted_in_artist(4)[0])
    Style.objects.filter(pk=version.style_id).update(taken_down_at="2026-12-01T00:00:00Z")  # published left in place
    assert not usable_adapter_versions().exists()


def test_the_takedown_actions_need_the_change_permission(client):
    from django.contrib.auth.models import Permission

    style = ready_version(opted_in_artist(4)[0]).style
    viewer = StaffFactory(is_superuser=False)
    viewer.user_permissions.add(Permission.objects.get(codename="view_style"))
    client.force_login(viewer)
    client.post(reverse("admin:generation_style_changelist"),
                {"action": "take_down_styles", "_selected_action": [style.pk]})
    style.refresh_from_db()
    assert style.taken_down_at is None and style.published_version_id is not None


def test_a_reason_written_as_the_takedown_is_lifted_is_not_kept(rf):
    """The form was built while the style was down; the lift committed before it saved."""
    from django.contrib.admin.sites import site

    from generation.admin import StyleAdmin

    style = services.style_take_down(style=ready_version(opted_in_artist(4)[0]).style)
    services.style_takedown_lift(style=style)
    edited = Style.objects.get(pk=style.pk)
    edited.takedown_reason = "written on the page opened while it was down"

    class Form:
        changed_data = ["takedown_reason"]

    StyleAdmin(Style, site).save_model(rf.post("/"), edited, Form(), change=True)
    assert Style.objects.get(pk=style.pk).takedown_reason == ""


def test_an_artist_who_left_is_not_told_a_taken_down_style_can_still_be_trained(staff_client, client_for):
    from licensing.services import artist_leave

    artist, _works = opted_in_artist(4)
    style = ready_version(artist).style
    admin_action(staff_client, "take_down_styles", style)
    artist_leave(artist=artist, actor=artist.user)
    artist.user.refresh_from_db()
    client = Client()
    client.force_login(artist.user)
    page = client.get(reverse("generation:style")).content.decode()
    assert "Taken down by staff" in page and "no style of yours can be trained" in page
    assert "You can still train it." not in page


def test_the_takedown_notice_reads_as_one_japanese_paragraph(staff_client):
    artist, _works = opted_in_artist(4)
    style = ready_version(artist).style
    admin_action(staff_client, "take_down_styles", style)
    client = Client()
    client.force_login(artist.user)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    page = client.get(reverse("generation:style")).content.decode()
    assert "どのバージョンも公開できません。学習は引き続き行えます。" in page  # no space between Japanese sentences

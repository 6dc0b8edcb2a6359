"""The artist's public page says whether their style can be used to make images, and on what it was trained."""

import pytest
from django.urls import reverse

from generation.models import Style
from generation.services import style_take_down, style_unpublish
from licensing.services import work_withdraw

from .conftest import opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]

NOT_AVAILABLE = "This artist's style is not available for making images at the moment."


def public_page(client, artist):
    response = client.get(reverse("licensing:artist_page", args=[artist.slug]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_public_page_says_the_style_is_in_use_and_under_which_consent_terms(client):
    artist, works = opted_in_artist(5)
    ready_version(artist, publish=False)
    version = ready_version(artist)
    Style.objects.filter(pk=version.style_id).update(description="soft pastel shapes with a dark outline")
    page = public_page(client, artist)
    assert "soft pastel shapes with a dark outline" in page
    assert ("It was trained only on works the artist opted in, under consent terms version "
            f"{version.snapshot.terms.version}, and it is taken out of use at once") in page
    assert NOT_AVAILABLE not in page
    # What the artist did not choose to show stays private: how many works they opted in, how many versions.
    assert "5 works" not in page and f"version {version.number}" not in page
    # The style's name was the artist's name when it was made: a name they changed since is not shown again.
    type(artist).objects.filter(pk=artist.pk).update(display_name="Renamed Artist")
    page = public_page(client, artist)
    assert "Renamed Artist" in page and version.style.name not in page


def test_the_public_page_says_so_when_no_version_can_be_used(client):
    artist, works = opted_in_artist(5)
    assert NOT_AVAILABLE in public_page(client, artist)  # never trained
    version = ready_version(artist)
    style_unpublish(style=version.style)
    assert NOT_AVAILABLE in public_page(client, artist)
    ready_version(artist)
    style_take_down(style=version.style, reason="a complaint")
    assert NOT_AVAILABLE in public_page(client, artist)


def test_a_version_of_another_base_is_not_shown_as_in_use_nor_a_deactivated_artists_page(client, settings,
                                                                                     django_assert_max_num_queries):
    from generation.models import BaseModel

    artist, works = opted_in_artist(5)
    version = ready_version(artist)
    with django_assert_max_num_queries(8):  # the same few queries however many works or versions
        assert NOT_AVAILABLE not in public_page(client, artist)
    current = version.base_model
    version.base_model = BaseModel.objects.create(sha256="f" * 64, name="another base", path="/elsewhere", kind=current.kind)
    version.save(update_fields=["base_model"])
    assert NOT_AVAILABLE in public_page(client, artist)
    version.base_model = current
    version.save(update_fields=["base_model"])
    artist.user.is_active = False  # a deactivated account has no public page at all
    artist.user.save(update_fields=["is_active"])
    assert client.get(reverse("licensing:artist_page", args=[artist.slug])).status_code == 404


def test_a_withdrawal_takes_the_version_off_the_public_page_at_once(client):
    artist, works = opted_in_artist(5)
    ready_version(artist)
    assert NOT_AVAILABLE not in public_page(client, artist)
    work_withdraw(work=works[0], actor=artist.user, reason="")
    assert NOT_AVAILABLE in public_page(client, artist)


def test_the_home_page_lists_the_artists_whose_styles_can_be_used_now(client, django_assert_max_num_queries):
    in_use, works = opted_in_artist(5)
    version = ready_version(in_use)
    Style.objects.filter(pk=version.style_id).update(description="soft pastel shapes with a dark outline")
    unpublished, _ = opted_in_artist(5)
    ready_version(unpublished, publish=False)
    never_trained, _ = opted_in_artist(5)
    with django_assert_max_num_queries(8):  # the same few queries however many artists
        page = client.get("/").content.decode()
    assert f'<a href="{reverse("licensing:artist_page", args=[in_use.slug])}">{in_use.display_name}</a>' in page
    assert "soft pastel shapes with a dark outline" in page
    for hidden in (unpublished, never_trained):
        assert hidden.slug not in page and hidden.display_name not in page
    work_withdraw(work=works[0], actor=in_use.user, reason="")
    page = client.get("/").content.decode()
    assert f'href="{reverse("licensing:artist_page", args=[in_use.slug])}"' not in page
    assert "No artist's style can be used yet." in page

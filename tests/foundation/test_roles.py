"""Who reaches what: anonymous, subscriber, artist and staff, on pages and the API."""

import pytest
from django.urls import reverse

from illustration_platform.accounts.roles import Role, roles_of
from tests.factories import ArtistFactory, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db

AUDIENCES = ["anonymous", "subscriber", "artist", "staff"]


def make_user(audience):
    return {
        "anonymous": lambda: None,
        "subscriber": UserFactory,
        "artist": lambda: ArtistFactory().user,
        "staff": StaffFactory,
    }[audience]()


# (url name, {audience: expected status}); 302 for anonymous means "sent to log in".
PAGES = [
    ("site:home", {"anonymous": 200, "subscriber": 200, "artist": 200, "staff": 200}),
    ("accounts:account", {"anonymous": 302, "subscriber": 200, "artist": 200, "staff": 200}),
    ("licensing:studio", {"anonymous": 302, "subscriber": 404, "artist": 200, "staff": 404}),
    ("admin:index", {"anonymous": 302, "subscriber": 302, "artist": 302, "staff": 200}),
]


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("url_name,expected", PAGES, ids=[page[0] for page in PAGES])
def test_pages(client_for, audience, url_name, expected):
    response = client_for(make_user(audience)).get(reverse(url_name))
    assert response.status_code == expected[audience]
    if response.status_code == 302:
        assert "log" in response["Location"] or "login" in response["Location"]


def test_a_subscriber_at_a_studio_page_is_told_the_studio_is_for_artists(client_for):
    for url in (reverse("licensing:studio"), reverse("generation:style"), reverse("licensing:upload")):
        response = client_for(UserFactory()).get(url)
        page = response.content.decode()
        assert response.status_code == 404 and "The studio is for artists" in page
        assert f'href="{reverse("licensing:become_artist")}"' in page
    other = client_for(UserFactory()).get("/no-such-page/").content.decode()
    assert "The studio is for artists" not in other  # only where the page needs an artist profile


@pytest.mark.parametrize("audience", AUDIENCES)
def test_api_me(api_client_for, audience):
    user = make_user(audience)
    response = api_client_for(user).get(reverse("api-me"))
    if user is None:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "not_authenticated"
        return
    assert response.status_code == 200
    expected = {"subscriber": ["subscriber"], "artist": ["artist", "subscriber"], "staff": ["staff", "subscriber"]}
    assert response.json()["roles"] == expected[audience]


def test_navigation_shows_each_audience_its_own_links(client_for):
    artist, staff = ArtistFactory().user, StaffFactory()
    artist_page = client_for(artist).get("/").content.decode()
    assert reverse("licensing:studio") in artist_page and reverse("admin:index") not in artist_page
    staff_page = client_for(staff).get("/").content.decode()
    assert reverse("admin:index") in staff_page and reverse("licensing:studio") not in staff_page


def test_inactive_users_have_no_roles():
    user = UserFactory(is_active=False, is_staff=True)
    assert roles_of(user) == frozenset()
    assert roles_of(StaffFactory()) == {Role.SUBSCRIBER, Role.STAFF}

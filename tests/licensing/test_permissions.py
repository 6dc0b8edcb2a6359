"""Who reaches which works/consent/snapshot endpoint: anonymous, subscriber, another artist, the owner, staff.

Another person's work always answers 404 (never 403). A signed-in user without the artist role gets 403 from
the API's role check for every id alike (so nothing leaks) and 404 on pages; anonymous API calls get 403
with code not_authenticated; anonymous page visits go to the log-in page.
"""

import pytest
from django.urls import reverse

from licensing import services
from licensing.models import ConsentEvent, Work
from tests.factories import ArtistFactory, StaffFactory, UserFactory, make_work

pytestmark = pytest.mark.django_db

AUDIENCES = ["anonymous", "subscriber", "other_artist", "owner", "staff"]


@pytest.fixture
def world(artist, withdrawal_receiver):
    work = make_work(artist, seed=1)
    services.work_opt_in(work=work, actor=artist.user)
    users = {
        "anonymous": None,
        "subscriber": UserFactory(),
        "other_artist": ArtistFactory().user,
        "owner": artist.user,
        "staff": StaffFactory(),
    }
    return work, users


# (name, method, url maker, body, expected status per audience for the owner's work)
DENIED = {"anonymous": 403, "subscriber": 403, "other_artist": 404, "staff": 403}
ENDPOINTS = [
    ("detail", "get", lambda w: reverse("works-detail", args=[w.pk]), None, {**DENIED, "owner": 200}),
    ("update", "patch", lambda w: reverse("works-detail", args=[w.pk]), {"caption": "changed"}, {**DENIED, "owner": 200}),
    ("opt-out", "post", lambda w: reverse("works-opt-out", args=[w.pk]), {}, {**DENIED, "owner": 201}),
    ("opt-in", "post", lambda w: reverse("works-opt-in", args=[w.pk]), None, {**DENIED, "owner": 201}),
    ("consent", "get", lambda w: reverse("works-consent", args=[w.pk]), None, {**DENIED, "owner": 200}),
    ("delete", "delete", lambda w: reverse("works-detail", args=[w.pk]), None, {**DENIED, "owner": 204}),
]
COLLECTIONS = [
    ("list", "get", "works-list"),
    ("consent-events", "get", "consent-events-list"),
    ("snapshots", "get", "snapshots-list"),
    ("opt-in-eligible", "post", "works-opt-in-eligible"),
    ("snapshot-create", "post", "snapshots-list"),
]


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("name,method,url,body,expected", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_work_endpoints(api_client_for, world, audience, name, method, url, body, expected):
    work, users = world
    before = (Work.objects.get(pk=work.pk).caption, ConsentEvent.objects.count(), Work.objects.get(pk=work.pk).status)
    response = getattr(api_client_for(users[audience]), method)(url(work), body, format="json")
    assert response.status_code == expected[audience], response.content
    if audience != "owner":
        assert set(response.json()["error"]) >= {"code", "message"}
        if audience == "anonymous":
            assert response.json()["error"]["code"] == "not_authenticated"
        after = (Work.objects.get(pk=work.pk).caption, ConsentEvent.objects.count(), Work.objects.get(pk=work.pk).status)
        assert after == before  # nothing changed


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("name,method,url_name", COLLECTIONS, ids=[c[0] for c in COLLECTIONS])
def test_collections_show_only_ones_own(api_client_for, world, audience, name, method, url_name):
    work, users = world
    response = getattr(api_client_for(users[audience]), method)(reverse(url_name), format="json")
    if audience in ("anonymous", "subscriber", "staff"):
        assert response.status_code == 403
        return
    assert response.status_code in (200, 201, 400)
    text = response.content.decode()
    mine = audience == "owner"
    if name == "list":
        ids = [item["id"] for item in response.json()["results"]]
        assert ids == ([work.pk] if mine else [])
    if name == "consent-events":
        assert len(response.json()["results"]) == (1 if mine else 0)
    if name == "snapshot-create":
        assert response.status_code == (201 if mine else 400)
        if not mine:
            assert "No works are opted in" in text


def test_snapshots_of_others_are_404(api_client_for, world):
    work, users = world
    snapshot = services.dataset_snapshot_create(artist=work.artist)
    assert api_client_for(users["owner"]).get(reverse("snapshots-detail", args=[snapshot.pk])).status_code == 200
    assert api_client_for(users["other_artist"]).get(reverse("snapshots-detail", args=[snapshot.pk])).status_code == 404


def test_bulk_captions_touch_only_ones_own_works(api_client_for, world):
    work, users = world
    client = api_client_for(users["other_artist"])
    assert client.post(reverse("works-captions-apply"), {"work_ids": [work.pk], "caption": "mine now"}, format="json").json() == {"changed": 0}
    assert client.post(reverse("works-captions-replace"), {"find": "a", "replace": "b"}, format="json").json() == {"changed": 0}
    assert Work.objects.get(pk=work.pk).caption == "a drawing"
    owner = api_client_for(users["owner"])
    assert owner.post(reverse("works-captions-replace"), {"find": "drawing", "replace": "sketch"}, format="json").json() == {"changed": 1}
    assert Work.objects.get(pk=work.pk).caption == "a sketch"


@pytest.mark.parametrize("audience", AUDIENCES)
def test_pages(client_for, world, audience):
    work, users = world
    client = client_for(users[audience])
    pages = {
        "studio": client.get(reverse("licensing:studio")),
        "history": client.get(reverse("licensing:history") + f"?work={work.pk}"),
        "file": client.get(reverse("licensing:work_file", args=[work.pk, "training"])),
        "opt-out": client.post(reverse("licensing:work_consent", args=[work.pk, "opt-out"])),
        "delete": client.post(reverse("licensing:work_delete", args=[work.pk])),
    }
    for name, response in pages.items():
        if audience == "anonymous":
            assert response.status_code in (302, 404), name  # files answer 404, pages send to log in
        elif audience == "owner":
            assert response.status_code in (200, 302), name
        elif audience == "staff" and name == "file":
            assert response.status_code == 200
        elif audience == "other_artist" and name == "studio":
            assert response.status_code == 200 and f'id="work-{work.pk}"' not in response.content.decode()
        else:
            assert response.status_code == 404, (name, audience)
    if audience != "owner":
        assert Work.objects.get(pk=work.pk).status == "active"


def test_public_artist_page_shows_only_works_chosen_for_it(client, api_client, artist):
    shown = make_work(artist, seed=1, caption="shown one", shown_on_profile=True)
    hidden = make_work(artist, seed=2, caption="hidden one")
    page = client.get(reverse("licensing:artist_page", args=[artist.slug])).content.decode()
    assert "shown one" in page and "hidden one" not in page
    data = api_client.get(reverse("artist-public", args=[artist.slug])).json()
    assert [w["id"] for w in data["works"]] == [shown.pk]
    assert client.get(reverse("licensing:work_file", args=[shown.pk, "original"])).status_code == 200
    assert client.get(reverse("licensing:work_file", args=[hidden.pk, "original"])).status_code == 404
    assert client.get(reverse("licensing:work_file", args=[shown.pk, "training"])).status_code == 404



def test_a_deactivated_artists_page_and_files_are_not_public(client, client_for, api_client, artist):
    """Staff deactivating an account takes the artist off the platform, as generation already treats them."""
    shown = make_work(artist, seed=3, caption="shown one", shown_on_profile=True)
    artist.user.is_active = False
    artist.user.save(update_fields=["is_active"])
    assert client.get(reverse("licensing:artist_page", args=[artist.slug])).status_code == 404
    assert api_client.get(reverse("artist-public", args=[artist.slug])).status_code == 404
    assert client.get(reverse("licensing:work_file", args=[shown.pk, "original"])).status_code == 404
    staff = StaffFactory()
    assert client_for(staff).get(reverse("licensing:work_file", args=[shown.pk, "original"])).status_code == 200
    artist.user.is_active = True  # staff reactivating the account brings the page back
    artist.user.save(update_fields=["is_active"])
    assert client_for(None).get(reverse("licensing:artist_page", args=[artist.slug])).status_code == 200

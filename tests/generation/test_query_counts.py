"""The style page, the versions API and the styles' admin pages cost the same number of queries however many
versions and styles there are."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from .conftest import opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


def _queries(client, url):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("url", [reverse("generation:style"), reverse("api-styles")])
def test_queries_do_not_grow_with_the_versions(client_for, url):
    artist, _works = opted_in_artist(3)
    client = client_for(artist.user)
    ready_version(artist)
    few = _queries(client, url)
    for _ in range(8):
        ready_version(artist)
    assert _queries(client, url) == few


def test_the_styles_admin_pages_do_not_grow_with_the_styles_and_versions(client_for):
    from tests.factories import StaffFactory

    staff = client_for(StaffFactory())
    artist, _works = opted_in_artist(3)
    style = ready_version(artist).style
    listing, change = reverse("admin:generation_style_changelist"), reverse("admin:generation_style_change", args=[style.pk])
    _queries(staff, listing), _queries(staff, change)  # the first visit also fills the content-type cache
    few = _queries(staff, listing), _queries(staff, change)
    for seed in range(1, 4):
        other, _works = opted_in_artist(3, first_seed=10 * seed)
        ready_version(other)
        ready_version(artist)
    assert (_queries(staff, listing), _queries(staff, change)) == few


def test_the_works_and_consent_events_admin_lists_do_not_grow_with_the_works(client_for):
    from tests.factories import StaffFactory

    staff = client_for(StaffFactory())
    opted_in_artist(2)
    urls = reverse("admin:licensing_work_changelist"), reverse("admin:licensing_consentevent_changelist")
    [_queries(staff, url) for url in urls]  # the first visit also fills the content-type cache
    few = [_queries(staff, url) for url in urls]
    opted_in_artist(6, first_seed=100)
    assert [_queries(staff, url) for url in urls] == few

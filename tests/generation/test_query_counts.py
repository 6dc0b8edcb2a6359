"""The style page and the versions API cost the same number of queries however many versions a style has."""

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

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_language_switcher_turns_the_site_japanese_and_back(client):
    english = client.get("/").content.decode()
    assert "Log in" in english
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    japanese = client.get("/").content.decode()
    assert 'lang="ja"' in japanese
    assert "ログイン" in japanese and "Log in" not in japanese
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert "Log in" in client.get("/").content.decode()


def test_custom_404_page(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()

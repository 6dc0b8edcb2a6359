import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_schema_lists_the_api_and_docs_page_loads_offline(client):
    schema = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/me/" in schema["paths"]
    docs = client.get(reverse("api-docs")).content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower() and "https://" not in docs


def test_errors_have_one_shape(api_client, subscriber):
    missing = api_client.post(reverse("api-token"), {"username": "nobody@example.test"})
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"] == "password: This field is required."
    assert error["fields"]["password"] == ["This field is required."]
    anonymous = api_client.get(reverse("api-me")).json()["error"]
    assert set(anonymous) == {"code", "message"}


def test_pages_send_a_content_security_policy_without_inline_scripts(client):
    response = client.get("/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in response.content.decode()

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


def _documented(schema, path, method, response):
    """The answer's status is in the schema for that operation, and an error answer has the Error shape."""
    import jsonschema

    responses = schema["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, (path, method, response.status_code, sorted(responses))
    if response.status_code >= 400:
        jsonschema.validate(response.json(), schema["components"]["schemas"]["Error"])


def test_the_schema_documents_the_error_answers_the_api_gives(client, api_client, subscriber):
    from tests.factories import ArtistFactory

    artist = ArtistFactory()
    schema = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if {} not in operation["security"]:
                assert {"401", "403"} <= codes, (method, path)
                assert "token" in operation["responses"]["401"]["description"], (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method in ("post", "patch"):
                assert "400" in codes, (method, path)

    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    bad_token = api_client.get("/api/works/")
    assert bad_token.status_code == 401 and bad_token["WWW-Authenticate"] == "Token"
    _documented(schema, "/api/works/", "get", bad_token)
    api_client.credentials()
    _documented(schema, "/api/me/", "get", api_client.get("/api/me/"))  # 403: no session
    api_client.force_login(artist.user)
    _documented(schema, "/api/works/{id}/", "get", api_client.get("/api/works/abc/"))  # 404
    _documented(schema, "/api/works/", "get", api_client.get("/api/works/?page=99"))  # 404: no such page
    _documented(schema, "/api/styles/train/", "post", api_client.post("/api/styles/train/", {"preset": "x"}))  # 400
    _documented(schema, "/api/works/{id}/opt-in/", "post", api_client.post("/api/works/1/opt-in/"))  # 404
    api_client.force_login(subscriber)
    _documented(schema, "/api/works/", "get", api_client.get("/api/works/"))  # 403: not an artist
    _documented(schema, "/api/styles/", "get", api_client.get("/api/styles/"))  # 404: not an artist, as the pages answer
    _documented(schema, "/api/styles/train/", "post", api_client.post("/api/styles/train/"))  # 404


def test_an_api_path_no_route_matches_answers_json_and_a_page_path_html(client):
    api = client.get("/api/no-such-thing/")
    assert api.status_code == 404 and api.json() == {"error": {"code": "not_found", "message": "Not found."}}
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_with_debug_on_an_api_path_no_route_matches_still_answers_json(client, settings):
    settings.DEBUG = True  # as the README's local run has it: Django would list its URL patterns in HTML
    for path in ("/api/no-such-thing/", "/api/adapter-versions/-1/", "/api/adapter-versions/abc/"):
        response = client.get(path)
        assert response.status_code == 404 and response.json() == {"error": {"code": "not_found", "message": "Not found."}}, path
    assert client.get("/api/me").status_code == 301  # a missing slash is still redirected first
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_server_error_in_the_api_answers_json_without_the_traceback(client, monkeypatch):
    from illustration_platform.api.views import ApiRootView

    def broken(self, request):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(ApiRootView, "get", broken)
    client.raise_request_exception = False
    response = client.get("/api/")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "error", "message": "A server error occurred."}}
    assert b"secret detail" not in response.content


def test_a_bad_token_is_told_apart_from_no_sign_in(api_client, subscriber):
    """A token client re-authenticates on 401; with no credentials at all the answer stays 403, as for sessions."""
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = api_client.get(reverse("api-me"))
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json()["error"] == {"code": "authentication_failed", "message": "Invalid token."}
    api_client.credentials()
    anonymous = api_client.get(reverse("api-me"))
    assert anonymous.status_code == 403 and anonymous.json()["error"]["code"] == "not_authenticated"
    api_client.force_login(subscriber)
    assert api_client.get(reverse("api-me")).status_code == 200

    from rest_framework.authtoken.models import Token

    api_client.logout()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=subscriber).key}")
    assert api_client.get(reverse("api-me")).status_code == 200
    subscriber.is_active = False
    subscriber.save()
    assert api_client.get(reverse("api-me")).status_code == 401  # as README says: the key of an inactive account


def test_a_deeply_nested_json_body_is_refused_as_a_parse_error(api_client):
    from tests.factories import ArtistFactory

    api_client.force_login(ArtistFactory().user)
    body = '{"preset": ' + "[" * 100000 + "]" * 100000 + "}"
    response = api_client.post("/api/styles/train/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"
    assert len(response.content) < 500  # the message does not echo the body back

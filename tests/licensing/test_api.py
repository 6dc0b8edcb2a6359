"""The works API contract: multipart `image` + `caption`, duplicates, updates, snapshots and the schema."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from licensing.models import DatasetSnapshot, Work
from tests.licensing import images

pytestmark = pytest.mark.django_db


def upload(client, name, data, caption=""):
    return client.post(reverse("works-list"), {"image": SimpleUploadedFile(name, data), "caption": caption}, format="multipart")


def test_upload_update_opt_in_snapshot_and_delete(api_client_for, artist, withdrawal_receiver, media_root):
    client = api_client_for(artist.user)
    created = upload(client, "cat.png", images.good_png(1), caption="  a cat  ")
    assert created.status_code == 201
    body = created.json()
    assert body["caption"] == "a cat" and body["consent"] == "none" and body["eligible"] and body["warnings"] == []
    duplicate = upload(client, "again.png", images.good_png(1))
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == {"code": "duplicate", "message": f"This image is already among your works (work #{body['id']})."}
    patched = client.patch(reverse("works-detail", args=[body["id"]]), {"caption": "a black cat", "sha256": "forged"}, format="json")
    assert patched.status_code == 200 and patched.json()["caption"] == "a black cat"
    assert Work.objects.get().sha256 != "forged"
    assert client.put(reverse("works-detail", args=[body["id"]]), {"caption": "x"}, format="json").status_code == 405
    assert client.post(reverse("works-opt-in", args=[body["id"]])).json()["terms_version"] == 1
    snapshot = client.post(reverse("snapshots-list")).json()
    assert snapshot["work_count"] == 1 and snapshot["entries"][0]["caption"] == "a black cat"
    assert client.get(reverse("works-consent", args=[body["id"]])).json()[0]["kind"] == "granted"
    assert client.delete(reverse("works-detail", args=[body["id"]])).status_code == 204
    assert client.get(reverse("works-detail", args=[body["id"]])).status_code == 404
    assert [e["kind"] for e in client.get(reverse("consent-events-list")).json()["results"]] == ["withdrawn", "granted"]
    assert DatasetSnapshot.objects.get().work_count == 1  # history is not rewritten
    assert len(withdrawal_receiver.calls) == 1


def test_a_field_the_endpoint_does_not_know_is_refused_not_dropped(api_client_for, artist, media_root):
    client = api_client_for(artist.user)
    work = upload(client, "cat.png", images.good_png(1), caption="a cat").json()
    refused = {
        "captoin": client.patch(reverse("works-detail", args=[work["id"]]), {"captoin": "a dog"}, format="json"),
        "why": client.post(reverse("works-opt-out", args=[work["id"]]), {"why": "no"}, format="json"),
        "ids": client.post(reverse("works-captions-apply"), {"work_ids": [work["id"]], "caption": "x", "ids": [1]}, format="json"),
        "with": client.post(reverse("works-captions-replace"), {"find": "cat", "replace": "dog", "with": "x"}, format="json"),
    }
    for field, response in refused.items():
        assert response.status_code == 400, field
        assert response.json()["error"]["message"] == f"{field}: This field is not known here."
    assert Work.objects.get().caption == "a cat"  # nothing was changed
    assert Work.objects.get().current_consent is None


def test_missing_image_field_is_a_clear_error(api_client_for, artist):
    response = api_client_for(artist.user).post(reverse("works-list"), {"caption": "x"}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["message"] == "image: No file was submitted."


@pytest.mark.parametrize("method, suffix", [("get", ""), ("patch", ""), ("delete", ""), ("get", "consent/"),
                                           ("post", "opt-in/"), ("post", "opt-out/")])
def test_a_work_id_that_is_not_a_number_is_a_404(api_client_for, artist, method, suffix):
    response = getattr(api_client_for(artist.user), method)(f"/api/works/null,null/{suffix}")
    assert response.status_code == 404


@pytest.mark.parametrize("action, body", [("works-captions-apply", {"caption": "a cat"}),
                                          ("works-captions-replace", {"find": "cat", "replace": "dog"})])
def test_work_ids_beyond_a_database_integer_are_refused_not_a_server_error(api_client_for, artist, action, body):
    response = api_client_for(artist.user).post(reverse(action), body | {"work_ids": [1, 2**70]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["work_ids"] == {"1": ["Ensure this value is less than or equal to 9223372036854775807."]}


def test_a_snapshot_id_that_is_not_a_number_is_a_404(api_client_for, artist):
    assert api_client_for(artist.user).get("/api/snapshots/abc/").status_code == 404


def test_schema_validates_and_names_the_upload_contract():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    import json

    schema = json.loads(out.getvalue())
    for path in ["/api/works/", "/api/works/{id}/", "/api/works/{id}/opt-in/", "/api/works/{id}/opt-out/",
                 "/api/works/opt-in-eligible/", "/api/works/{id}/consent/", "/api/consent-events/", "/api/snapshots/",
                 "/api/artists/{slug}/", "/api/works/captions/apply/", "/api/works/captions/replace/"]:
        assert path in schema["paths"], path
    body = schema["paths"]["/api/works/"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][ref]["properties"]) == {"image", "caption"}
    # a work's consent history is answered whole, as a list, and the schema must say so
    consent = schema["paths"]["/api/works/{id}/consent/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert consent["schema"]["type"] == "array"

"""Publishing, rolling back and unpublishing versions; only the owner may act, others get 404."""

import pytest
from django.urls import reverse

from generation.models import AdapterVersion
from generation.selectors import usable_adapter_versions
from tests.factories import ArtistFactory, StaffFactory, UserFactory

from .conftest import opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


@pytest.fixture
def owned():
    artist, _works = opted_in_artist(4)
    first = ready_version(artist, publish=False)
    second = ready_version(artist)
    return artist, first, second


def test_publish_rolls_back_and_unpublish(api_client_for, owned):
    artist, first, second = owned
    client = api_client_for(artist.user)
    assert list(usable_adapter_versions()) == [second]
    response = client.post(reverse("api-adapter-version-publish", args=[first.pk]))
    assert response.status_code == 200 and response.json()["published_version"] == first.pk
    assert list(usable_adapter_versions()) == [first]
    response = client.post(reverse("api-style-unpublish", args=[first.style_id]))
    assert response.json()["published_version"] is None
    assert not usable_adapter_versions().exists()
    (style,) = client.get(reverse("api-styles")).json()
    assert style["versions"] == [second.pk, first.pk] and style["published_version"] is None  # newest first


def test_only_ready_versions_can_be_published(api_client_for, owned):
    artist, first, _second = owned
    AdapterVersion.objects.filter(pk=first.pk).update(status=AdapterVersion.Status.RETIRED)
    response = api_client_for(artist.user).post(reverse("api-adapter-version-publish", args=[first.pk]))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Only a ready version can be published; this one is Retired."


def test_training_needs_enough_opted_in_works(api_client_for, settings):
    settings.STYLE_MIN_WORKS = 6
    artist, _works = opted_in_artist(4)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "At least 6 opted-in works are needed to train a style; 4 are usable for training."
    assert not AdapterVersion.objects.exists()


def test_works_awaiting_consent_to_new_terms_are_named_where_training_is_refused(api_client_for, client_for):
    from licensing.models import ConsentTerms

    artist, _works = opted_in_artist(5)
    current = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    ConsentTerms.objects.create(kind=current.kind, version=current.version + 1, title="New", text="New.", is_active=True)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "At least 4 opted-in works are needed to train a style; 0 are usable for training. "
        "5 more works await your consent to the current terms, in your studio."
    )
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert "5 works were opted in under older terms and need your consent again" in page


def test_opted_in_works_that_cannot_be_trained_on_are_named_where_training_is_refused(api_client_for):
    from licensing.models import Work

    artist, works = opted_in_artist(5)
    Work.objects.filter(pk=works[0].pk).update(caption="")
    Work.objects.filter(pk=works[1].pk).update(do_not_train=True)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "At least 4 opted-in works are needed to train a style; 3 are usable for training. "
        "2 more opted-in works are held back, having no caption or a do-not-train signal; see your studio."
    )


def test_training_on_a_host_without_the_base_model_is_refused_in_a_sentence(api_client_for, settings, tmp_path):
    settings.BASE_MODEL = tmp_path / "gone"
    artist, _works = opted_in_artist(4)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Training is unavailable at the moment: the platform's base model is missing. Try again later."
    )
    assert not AdapterVersion.objects.exists()


def test_unknown_preset_is_refused(api_client_for):
    artist, _works = opted_in_artist(4)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "fastest"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["preset"] == ['"fastest" is not a valid choice.']


def test_a_training_setting_the_api_does_not_take_is_refused(api_client_for):
    artist, _works = opted_in_artist(4)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick", "steps": 999999}, format="json")
    assert response.status_code == 400 and response.json()["error"]["message"] == "steps: This field is not known here."
    assert not AdapterVersion.objects.exists()


def test_one_training_at_a_time(api_client_for, django_capture_on_commit_callbacks):
    artist, _works = opted_in_artist(4)
    client = api_client_for(artist.user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert client.post(reverse("api-style-train"), {"preset": "quick"}, format="json").status_code == 201
        second = client.post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert second.status_code == 400
    assert second.json()["error"]["message"] == "A training of this style is already under way."
    assert len(callbacks) == 1


def test_cancelling_twice_is_one_cancel_and_an_ended_training_cannot_be_cancelled(api_client_for, owned, django_capture_on_commit_callbacks):
    artist, _first, ready = owned
    client = api_client_for(artist.user)
    with django_capture_on_commit_callbacks(execute=False):
        version = client.post(reverse("api-style-train"), {"preset": "quick"}, format="json").json()
    for _click in range(2):  # a double click
        response = client.post(reverse("api-adapter-version-cancel", args=[version["id"]]))
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
    response = client.post(reverse("api-adapter-version-cancel", args=[ready.pk]))
    assert response.status_code == 400 and response.json()["error"]["message"] == "This training has already ended."


def audiences(owner):
    return {
        "anonymous": None,
        "subscriber": UserFactory(),
        "other artist": ArtistFactory().user,
        "staff": StaffFactory(),
        "owner": owner.user,
    }


API_ACTIONS = [
    ("get", "api-adapter-version", "version"),
    ("post", "api-adapter-version-cancel", "version"),
    ("post", "api-adapter-version-publish", "version"),
    ("post", "api-style-unpublish", "style"),
]
EXPECTED_API = {"anonymous": 403, "subscriber": 404, "other artist": 404, "staff": 404}


@pytest.mark.parametrize("method,url_name,target", API_ACTIONS)
def test_api_permission_matrix(api_client_for, owned, method, url_name, target):
    artist, _first, second = owned
    object_id = second.pk if target == "version" else second.style_id
    for audience, user in audiences(artist).items():
        response = getattr(api_client_for(user), method)(reverse(url_name, args=[object_id]))
        if audience == "owner":
            assert response.status_code in {200, 400}, (audience, response.content)  # 400: cancel of a finished one
        else:
            assert response.status_code == EXPECTED_API[audience], (audience, response.status_code)
    second.refresh_from_db()
    assert second.status == AdapterVersion.Status.READY


PAGE_ACTIONS = [
    ("get", "generation:job_panel", "version"),
    ("post", "generation:cancel", "version"),
    ("post", "generation:publish", "version"),
    ("post", "generation:unpublish", "style"),
]


@pytest.mark.parametrize("method,url_name,target", PAGE_ACTIONS)
def test_page_permission_matrix(client_for, owned, method, url_name, target):
    artist, first, second = owned
    object_id = first.pk if target == "version" else first.style_id
    for audience, user in audiences(artist).items():
        if audience == "owner":
            continue
        response = getattr(client_for(user), method)(reverse(url_name, args=[object_id]))
        assert response.status_code == (302 if user is None else 404), (audience, response.status_code)
    first.style.refresh_from_db()
    assert first.style.published_version_id == second.pk  # nobody else published the first version


def test_previews_reach_their_owner_by_session_and_token_and_nobody_else(client_for, api_client, owned):
    artist, _first, second = owned
    from generation.storage import preview_path
    from rest_framework.authtoken.models import Token

    from generation.models import TrainingJob

    path = preview_path(second, "step-000001-0.png")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG preview")
    TrainingJob.objects.filter(adapter_version=second).update(
        previews=[{"step": 1, "prompt": "a red house", "seed": 0, "file": path.name}]
    )
    url = reverse("api-adapter-version-preview", args=[second.pk, path.name])
    page = client_for(artist.user).get(url, HTTP_ACCEPT="image/avif,image/webp,image/*,*/*;q=0.8")  # an <img> on the page
    assert page.status_code == 200 and b"".join(page.streaming_content) == b"\x89PNG preview"
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=artist.user).key}")
    token = api_client.get(url, HTTP_ACCEPT="image/png")
    assert token.status_code == 200 and token["Content-Type"] == "image/png"
    for user in (ArtistFactory().user, UserFactory(), StaffFactory()):
        assert client_for(user).get(url).status_code == 404
    assert client_for(None).get(url).status_code == 403
    traversal = reverse("api-adapter-version-preview", args=[second.pk, "..%2Fsecret"])
    assert client_for(artist.user).get(traversal).status_code == 404


def test_the_api_hands_out_preview_urls_that_work_with_a_token(api_client, client_for, owned):
    artist, _first, second = owned
    from generation.models import TrainingJob
    from generation.storage import preview_path
    from rest_framework.authtoken.models import Token

    preview_path(second, "step-000002-0.png").parent.mkdir(parents=True)
    preview_path(second, "step-000002-0.png").write_bytes(b"\x89PNG")
    TrainingJob.objects.filter(adapter_version=second).update(
        previews=[{"step": 2, "prompt": "a red house", "seed": 0, "file": "step-000002-0.png"}]
    )
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=artist.user).key}")
    preview = api_client.get(reverse("api-adapter-version", args=[second.pk])).json()["previews"][0]
    assert api_client.get(preview["url"]).status_code == 200
    # The page tells the prompt's two seeds apart.
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert 'alt="a red house (step 2, seed 0)"' in page and "<small>step 2, seed 0<br>a red house</small>" in page


def test_the_api_gives_the_loss_curve_as_whole_steps_and_float_losses(api_client_for, owned):
    from generation.models import TrainingJob

    artist, _first, second = owned
    TrainingJob.objects.filter(adapter_version=second).update(losses=[[1, 0.5], [2, 0.25]])
    state = api_client_for(artist.user).get(reverse("api-adapter-version", args=[second.pk])).json()
    assert state["losses"] == [[1, 0.5], [2, 0.25]]
    assert [type(value) for point in state["losses"] for value in point] == [int, float, int, float]


def test_the_loss_curve_says_what_its_edges_stand_for(client_for, owned):
    from generation.models import TrainingJob

    artist, _first, second = owned
    TrainingJob.objects.filter(adapter_version=second).update(losses=[[1, 0.9], [50, 0.2], [100, 0.25]])
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert '<div class="loss-y" aria-hidden="true"><span>0.900</span><span>0.200</span></div>' in page
    assert '<span>step 1</span><span>step 100</span>' in page
    assert 'aria-label="Training loss from step 1 to step 100, between 0.200 and 0.900"' in page


def test_the_polled_panel_reloads_the_page_once_the_training_ends(client_for, owned):
    artist, _first, second = owned
    client = client_for(artist.user)
    panel = reverse("generation:job_panel", args=[second.pk])
    assert client.get(panel, HTTP_HX_REQUEST="true")["HX-Refresh"] == "true"  # second is ready
    AdapterVersion.objects.filter(pk=second.pk).update(status=AdapterVersion.Status.TRAINING)
    assert "HX-Refresh" not in client.get(panel, HTTP_HX_REQUEST="true")


def test_the_polled_panel_also_updates_the_status_in_the_versions_table(client_for, owned):
    artist, _first, second = owned
    client = client_for(artist.user)
    AdapterVersion.objects.filter(pk=second.pk).update(status=AdapterVersion.Status.QUEUED)
    page = client.get(reverse("generation:style")).content.decode()
    assert f'<span id="version-status-{second.pk}">Queued</span>' in page
    AdapterVersion.objects.filter(pk=second.pk).update(status=AdapterVersion.Status.TRAINING)
    poll = client.get(reverse("generation:job_panel", args=[second.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert f'<span id="version-status-{second.pk}" hx-swap-oob="true">Training</span>' in poll


def test_style_page_shows_versions_and_the_train_form(client_for, owned):
    artist, first, second = owned
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert "Train my style" in page and "v1" in page and "v2" in page
    assert page.count('class="version-row" data-status="ready"') == 2
    assert 'class="job-panel" data-status="ready"' in page and "Latest training" in page
    assert page.count(" UTC</td>") == 2  # each version's creation time says its zone
    # Each version says its preset, which sets how long a training takes (a retrain keeps the replaced version's).
    AdapterVersion.objects.filter(pk=first.pk).update(preset="thorough")
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert page.count("<small>Quick preset</small>") == 1 and page.count("<small>Thorough preset</small>") == 1
    assert "<strong>v2</strong> · Ready · Quick preset" in page


def test_a_refused_training_keeps_the_choices_of_the_form(client_for, settings):
    settings.STYLE_MIN_WORKS = 6
    artist, _works = opted_in_artist(4)
    client = client_for(artist.user)
    response = client.post(reverse("generation:train"), {"preset": "thorough"}, follow=True)  # publishing unticked
    page = response.content.decode()
    assert "At least 6 opted-in works are needed" in page
    assert '<option value="thorough" selected>' in page and '<option value="standard">' in page
    assert '<input type="checkbox" name="publish_when_ready">' in page
    fresh = client.get(reverse("generation:style")).content.decode()
    assert '<option value="standard" selected>' in fresh and 'name="publish_when_ready" checked>' in fresh
    odd = client.get(reverse("generation:style"), {"preset": "<script>"}).content.decode()
    assert '<option value="standard" selected>' in odd


def test_a_poll_after_the_session_ended_sends_the_whole_page_to_log_in(client, owned):
    _artist, _first, second = owned
    panel = reverse("generation:job_panel", args=[second.pk])
    response = client.get(panel, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/studio/style/")
    assert response.status_code == 204 and response.content == b""
    assert response["HX-Redirect"] == reverse("accounts:login") + "?next=/studio/style/"
    assert client.get(panel).status_code == 302  # a plain visit still goes to log in


@pytest.fixture(scope="module")
def another_base(tmp_path_factory):
    """A base of the same shape with other weights: what BASE_MODEL points at after the operator changes it."""
    import torch

    from generation.ml.architecture import TINY_CONFIG, build_pipeline

    folder = tmp_path_factory.mktemp("another-base")
    torch.manual_seed(1)
    build_pipeline(TINY_CONFIG).save_pretrained(folder)
    return folder


def test_versions_of_an_earlier_base_leave_generation_and_cannot_be_published(
    api_client_for, client_for, owned, settings, another_base, tiny_base_model
):
    artist, first, second = owned
    earlier_base = settings.BASE_MODEL
    settings.BASE_MODEL = another_base
    assert not usable_adapter_versions().exists()

    client = api_client_for(artist.user)
    response = client.post(reverse("api-adapter-version-publish", args=[first.pk]))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "This version was trained on an earlier base model than the one images are made with now; "
        "train your style again to publish it."
    )
    state = client.get(reverse("api-adapter-version", args=[second.pk])).json()
    assert state["on_current_base"] is False and state["base_model_sha256"] == second.base_model.sha256

    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert "Not in use: trained on an earlier base model" in page  # the published one
    assert reverse("generation:publish", args=[first.pk]) not in page

    third = ready_version(artist)  # trained again, on the base of now
    assert list(usable_adapter_versions()) == [third]
    assert client.get(reverse("api-adapter-version", args=[third.pk])).json()["on_current_base"] is True

    settings.BASE_MODEL = earlier_base  # changed back: the earlier versions fit again
    assert client.post(reverse("api-adapter-version-publish", args=[first.pk])).status_code == 200
    assert list(usable_adapter_versions()) == [first]


def test_a_training_meant_to_go_live_stays_unpublished_when_the_base_changed_while_it_ran(settings, another_base):
    from generation.services import training_job_claim, training_job_finish
    from generation.storage import adapter_dir

    from .conftest import finished_result

    artist, _works = opted_in_artist(4)
    published = ready_version(artist)
    version = ready_version(artist, publish=False)
    AdapterVersion.objects.filter(pk=version.pk).update(
        status=AdapterVersion.Status.QUEUED, weights_sha256="", weights_path="", publish_when_ready=True
    )
    job = training_job_claim(adapter_version_id=version.pk, worker="test")
    settings.BASE_MODEL = another_base
    finished = training_job_finish(job=job, result=finished_result(adapter_dir(version)), adapter_root=settings.ADAPTER_ROOT)
    assert finished.status == AdapterVersion.Status.READY
    finished.style.refresh_from_db()
    assert finished.style.published_version_id == published.pk


def test_a_host_without_the_base_folder_judges_versions_by_the_base_last_recorded(
    api_client_for, client_for, settings, tmp_path, tiny_base_model
):
    import shutil

    settings.BASE_MODEL = shutil.copytree(tiny_base_model, tmp_path / "base")
    artist, _works = opted_in_artist(4)
    version = ready_version(artist)
    shutil.move(settings.BASE_MODEL, tmp_path / "elsewhere")  # a web host has no copy of the model
    assert list(usable_adapter_versions()) == [version]
    assert client_for(artist.user).get(reverse("generation:style")).status_code == 200
    assert api_client_for(artist.user).get(reverse("api-adapter-version", args=[version.pk])).json()["on_current_base"] is True
    settings.BASE_MODEL = tmp_path / "never-recorded"
    assert not usable_adapter_versions().exists()


def test_only_the_previews_a_training_lists_are_served_and_any_other_name_is_not_found(client_for, owned):
    from generation.models import TrainingJob
    from generation.storage import preview_path

    artist, _first, second = owned
    client = client_for(artist.user)
    for name in ("step-000002-0.png", "step-000002-1.png"):
        preview_path(second, name).parent.mkdir(parents=True, exist_ok=True)
        preview_path(second, name).write_bytes(b"\x89PNG")
    TrainingJob.objects.filter(adapter_version=second).update(
        previews=[{"step": 2, "prompt": "a red house", "seed": 0, "file": "step-000002-0.png"}]
    )
    assert client.get(reverse("api-adapter-version-preview", args=[second.pk, "step-000002-0.png"])).status_code == 200
    for name in ("step-000002-1.png", "x" * 256, "x" * 5000, ".", "step-000002-0.png%00"):
        response = client.get(reverse("api-adapter-version-preview", args=[second.pk, name]))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", name


@pytest.mark.parametrize("url_name,target", [
    ("api-adapter-version-cancel", "version"), ("api-adapter-version-publish", "version"), ("api-style-unpublish", "style"),
])
def test_an_action_without_a_body_refuses_fields_rather_than_dropping_them(api_client_for, owned, url_name, target):
    artist, first, second = owned
    client = api_client_for(artist.user)
    object_id = first.pk if target == "version" else first.style_id
    response = client.post(reverse(url_name, args=[object_id]), {"version": second.pk}, format="json")
    assert response.status_code == 400 and response.json()["error"]["message"] == "version: This field is not known here."
    first.style.refresh_from_db()
    assert first.style.published_version_id == second.pk  # nothing was changed
    assert client.post(reverse(url_name, args=[object_id]), {}, format="json").status_code in {200, 400}


def test_the_schema_names_the_training_states_and_presets_and_describes_the_train_request(client):
    from generation.models import AdapterVersion

    schema = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    schemas = schema["components"]["schemas"]

    def enum_of(component, field):
        reference = schemas[component]["properties"][field]
        while "$ref" in reference or "allOf" in reference:
            reference = schemas[(reference.get("allOf") or [reference])[0]["$ref"].rsplit("/", 1)[1]]
        return set(reference["enum"])

    assert enum_of("TrainingState", "status") == set(AdapterVersion.Status.values)
    assert enum_of("TrainingState", "preset") == set(AdapterVersion.Preset.values)
    assert "Mixed into" not in schemas["TrainRequest"].get("description", "")
    assert "preset" in schemas["TrainRequest"]["description"]


def test_a_stale_unpublish_changes_nothing_and_each_message_names_the_version(
        client_for, owned, django_capture_on_commit_callbacks):
    """Unpublish acts on the version its page showed as published: a click on a page opened before a rollback, or
    before a withdrawal took that version offline, takes down neither the version published since nor a retrain
    that is to go live."""
    artist, first, second = owned
    stale, current = client_for(artist.user), client_for(artist.user)
    page = stale.get(reverse("generation:style")).content.decode()
    assert f'name="version" value="{second.pk}"' in page
    rolled_back = current.post(reverse("generation:publish", args=[first.pk]), follow=True).content.decode()
    assert "Version 1 is published: subscribers now generate with it." in rolled_back
    refused = stale.post(reverse("generation:unpublish", args=[second.style_id]), {"version": second.pk}, follow=True)
    assert "Version 2 is no longer the published version: version 1 is" in refused.content.decode()
    assert list(usable_adapter_versions()) == [first]

    with django_capture_on_commit_callbacks(execute=False):  # a training to go live, left queued
        current.post(reverse("generation:train"), {"preset": "quick", "publish_when_ready": "on"})
    training = AdapterVersion.objects.get(number=3)
    assert training.publish_when_ready
    gone = current.post(reverse("generation:unpublish", args=[first.style_id]), {"version": first.pk}, follow=True)
    assert ("Version 1 is unpublished: subscribers can no longer use this style. The training of version 3 will no "
            "longer go live when it is ready.") in gone.content.decode()
    AdapterVersion.objects.filter(pk=training.pk).update(publish_when_ready=True)  # as a withdrawal's retrain queues it
    again = stale.post(reverse("generation:unpublish", args=[first.style_id]), {"version": first.pk}, follow=True)
    assert "Version 1 is no longer published: the style is already offline." in again.content.decode()
    assert AdapterVersion.objects.get(pk=training.pk).publish_when_ready  # the retrain still goes live
    # Publishing by hand says so too; a version of another style is not found.
    published = current.post(reverse("generation:publish", args=[second.pk]), follow=True).content.decode()
    assert "Version 2 is published" in published and "version 3 will no longer go live" in published
    other = ready_version(opted_in_artist(4)[0])
    assert current.post(reverse("generation:unpublish", args=[first.style_id]), {"version": other.pk}).status_code == 404
    for unreadable in ("²", "two", ""):
        answer = current.post(reverse("generation:unpublish", args=[first.style_id]), {"version": unreadable}, follow=True)
        assert "The page sent an unreadable version; reload it. Nothing was changed." in answer.content.decode()
    assert AdapterVersion.objects.get(pk=second.pk).style.published_version_id == second.pk

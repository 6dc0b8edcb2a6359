"""C2PA and XMP do-not-train signals: such works are stored as portfolio but can never be opted in."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from licensing.models import ConsentEvent, Work
from tests.licensing import images

pytestmark = pytest.mark.django_db

REFUSING = [
    ("cawg-not-allowed.png", lambda: images.signed("png", 30, ai_training="notAllowed", ai_generative_training="notAllowed"), "AI training is notAllowed (cawg.training-mining: cawg.ai_training)"),
    ("cawg-generative-constrained.jpg", lambda: images.signed("jpg", 31, ai_training="allowed", ai_generative_training="constrained"), "AI training is constrained (cawg.training-mining: cawg.ai_generative_training)"),
    ("c2pa-older-label.png", lambda: images.signed("png", 32, label="c2pa.training-mining", ai_training="notAllowed"), "AI training is notAllowed (c2pa.training-mining: c2pa.ai_training)"),
    ("xmp-prohibited.png", lambda: images.png_with_xmp("DMI-PROHIBITED", 33), "plus:DataMining DMI-PROHIBITED)"),
    ("xmp-aiml.jpg", lambda: images.jpeg_with_xmp("DMI-PROHIBITED-AIMLTRAINING", 34), "DMI-PROHIBITED-AIMLTRAINING"),
    ("xmp-genai.png", lambda: images.png_with_xmp("DMI-PROHIBITED-GENAIMLTRAINING", 35), "DMI-PROHIBITED-GENAIMLTRAINING"),
    ("xmp-except-search.jpg", lambda: images.jpeg_with_xmp("DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING", 36), "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING"),
]
ALLOWING = [
    ("cawg-allowed.png", lambda: images.signed("png", 40, ai_training="allowed", ai_generative_training="allowed")),
    ("signed-no-assertion.jpg", lambda: images.signed("jpg", 41)),
    ("xmp-allowed.png", lambda: images.png_with_xmp("DMI-ALLOWED", 42)),
    ("xmp-unspecified.jpg", lambda: images.jpeg_with_xmp("DMI-UNSPECIFIED", 43)),
    ("plain.png", lambda: images.good_png(44)),
]


def upload(client, name, data):
    return client.post(reverse("works-list"), {"image": SimpleUploadedFile(name, data), "caption": "a cat"}, format="multipart")


@pytest.mark.parametrize("name,make,reason", REFUSING, ids=[case[0] for case in REFUSING])
def test_do_not_train_signal_blocks_opt_in(api_client_for, artist, name, make, reason):
    client = api_client_for(artist.user)
    created = upload(client, name, make())
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["do_not_train"] is True and reason in body["do_not_train_reason"] and not body["eligible"]
    refused = client.post(reverse("works-opt-in", args=[body["id"]]))
    assert refused.status_code == 400 and reason in refused.json()["error"]["message"]
    everything = client.post(reverse("works-opt-in-eligible"))
    assert everything.json()["opted_in"] == []
    assert ConsentEvent.objects.count() == 0
    # stored as portfolio: it can still be shown on the profile
    assert client.patch(reverse("works-detail", args=[body["id"]]), {"shown_on_profile": True}, format="json").status_code == 200


@pytest.mark.parametrize("name,make", ALLOWING, ids=[case[0] for case in ALLOWING])
def test_allowed_or_silent_files_can_be_opted_in(api_client_for, artist, name, make):
    client = api_client_for(artist.user)
    created = upload(client, name, make())
    assert created.status_code == 201 and created.json()["do_not_train"] is False
    opted = client.post(reverse("works-opt-in", args=[created.json()["id"]]))
    assert opted.status_code == 201 and opted.json()["kind"] == "granted"
    assert Work.objects.get().is_opted_in


@pytest.mark.parametrize("name,make,reason", REFUSING[:1] + REFUSING[3:4], ids=["c2pa", "xmp"])
def test_the_reason_reads_in_the_readers_language(api_client_for, client_for, artist, name, make, reason):
    from django.utils import translation

    created = upload(api_client_for(artist.user), name, make()).json()
    work = Work.objects.get(pk=created["id"])
    assert "%(" in work.do_not_train_reason and work.do_not_train_params  # stored apart, translated when shown
    with translation.override("ja"):
        shown = work.do_not_train_reason_shown
    assert reason.split(" (")[-1].split(")")[0].split(": ")[-1] in shown and "AI training" not in shown
    assert "data mining" not in shown
    japanese = api_client_for(artist.user).get(reverse("works-detail", args=[work.pk]), HTTP_ACCEPT_LANGUAGE="ja").json()
    assert japanese["do_not_train_reason"] == shown and japanese["ineligible_reason"] == shown


@pytest.mark.django_db(transaction=True)
def test_reasons_written_before_are_split_into_their_values(artist):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import translation

    before, after = [("licensing", "0004_verbose_names")], [("licensing", "0005_do_not_train_reason_values")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    OldWork = executor.loader.project_state(before).apps.get_model("licensing", "Work")
    written = {
        "Its Content Credentials say AI training is notAllowed (cawg.training-mining: cawg.ai_training).":
            ("Its Content Credentials say AI training is %(use)s (%(label)s: %(key)s).",
             {"use": "notAllowed", "label": "cawg.training-mining", "key": "cawg.ai_training"}),
        "Its XMP metadata says data mining is prohibited (plus:DataMining DMI-PROHIBITED).":
            ("Its XMP metadata says data mining is prohibited (plus:DataMining %(value)s).", {"value": "DMI-PROHIBITED"}),
        "": ("", {}),
    }
    ids = {text: OldWork.objects.create(artist_id=artist.pk, original_format="PNG", sha256=f"{n:064d}", phash="0" * 16,
                                        width=1, height=1, do_not_train=bool(text), do_not_train_reason=text).pk
           for n, text in enumerate(written)}
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    for text, (reason, params) in written.items():
        work = Work.objects.get(pk=ids[text])
        assert (work.do_not_train_reason, work.do_not_train_params) == (reason, params)
        with translation.override("en"):
            assert work.do_not_train_reason_shown == text  # in English, as it read before

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

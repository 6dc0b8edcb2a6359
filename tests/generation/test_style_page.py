"""What the style page says of a training: readable times, bounded numbers, and buttons a screen reader can tell apart."""

import pytest
from django.urls import reverse
from django.utils import translation

from generation.models import TrainingJob
from generation.presentation import eta_display

from .conftest import opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "about 0 s left"), (59, "about 59 s left"), (60, "about 1\xa0minute left"),
    (5400, "about 1\xa0hour, 30\xa0minutes left"), (None, ""),
])
def test_an_eta_reads_in_seconds_under_a_minute_and_in_hours_and_minutes_above(seconds, shown):
    assert eta_display(seconds) == shown


def test_an_eta_reads_in_the_readers_language():
    with translation.override("ja"):
        assert eta_display(5400) == "残り約1時間, 30分"


def test_progress_never_passes_the_whole():
    assert TrainingJob(step=130, total_steps=100).progress_percent == 100
    assert TrainingJob(step=1, total_steps=3).progress_percent == 33
    assert TrainingJob(step=0, total_steps=0).progress_percent == 0


def test_each_versions_buttons_name_their_version_and_the_curve_its_latest_loss(client_for):
    artist, _works = opted_in_artist(4)
    first = ready_version(artist)
    ready_version(artist, publish=False)
    TrainingJob.objects.filter(adapter_version=first).update(losses=[[1, 0.5], [40, 0.12345]])
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert 'aria-label="Unpublish v1"' in page and 'aria-label="Publish v2"' in page
    assert "Loss (latest 0.1235, at step 40)" not in page  # the panel shows the latest version, v2, with no losses
    TrainingJob.objects.filter(adapter_version__number=2).update(losses=[[1, 0.5], [40, 0.12345]])
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert "Loss (latest 0.1235, at step 40)" in page


def test_cancel_sits_beside_the_running_trainings_progress_once(client_for, django_capture_on_commit_callbacks):
    from generation import services

    artist, _works = opted_in_artist(4)
    ready_version(artist)
    client = client_for(artist.user)
    assert 'aria-label="Cancel' not in client.get(reverse("generation:style")).content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    page = client.get(reverse("generation:style")).content.decode()
    assert page.count('aria-label="Cancel v2"') == 1
    job_section, versions_section = page.split('id="versions-heading"')
    assert 'aria-label="Cancel v2"' in job_section and f'action="{reverse("generation:cancel", args=[version.pk])}"' in job_section


def test_the_page_says_when_the_style_is_offline_and_how_many_works_a_training_needs(client_for, settings):
    from generation.models import Style

    settings.STYLE_MIN_WORKS = 5
    artist, _works = opted_in_artist(4)
    client = client_for(artist.user)
    page = client.get(reverse("generation:style")).content.decode()
    assert "A training needs at least 5: opt in more of your works first." in page
    assert "No versions yet: opt in your works, then train." in page
    assert '<button type="submit" data-send-once disabled aria-describedby="too-few-works">Train my style</button>' in page
    settings.STYLE_MIN_WORKS = 4
    page = client.get(reverse("generation:style")).content.decode()
    assert "A training needs at least" not in page and "No versions yet: train your style above." in page
    assert '<button type="submit" data-send-once>Train my style</button>' in page

    offline = "No version of your style is published: image generation does not use it."
    version = ready_version(artist)
    assert offline not in client.get(reverse("generation:style")).content.decode()
    Style.objects.filter(pk=version.style_id).update(published_version=None)  # as a withdrawal or an unpublish leaves it
    assert offline in client.get(reverse("generation:style")).content.decode()


def test_the_final_loss_says_what_it_is_in_both_languages(client_for):
    artist, _works = opted_in_artist(4)
    ready_version(artist)
    client = client_for(artist.user)
    assert "mean over the last tenth of the steps" in client.get(reverse("generation:style")).content.decode()
    japanese = client.get(reverse("generation:style"), HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "最後の 1 割のステップの平均" in japanese

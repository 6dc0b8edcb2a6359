"""Done when: an artist clicks "Train my style" and watches progress and previews to a published style."""

import pytest
from django.urls import reverse

from generation.models import AdapterVersion
from tests.factories import PASSWORD
from tests.support.contrast import badge_contrasts

from .conftest import opted_in_artist

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("generation_roots")]


def test_artist_trains_watches_progress_and_gets_a_published_style(live_server, page, start_training_worker, settings):
    settings.TRAINING_PRESET_OVERRIDES = {"standard": {"steps": 16, "checkpoint_every": 8, "preview_every": 8}}
    artist, _works = opted_in_artist(5)
    start_training_worker()

    page.goto(live_server.url + reverse("accounts:login"))
    page.get_by_label("Email address").fill(artist.user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(live_server.url + reverse("generation:style"))
    assert page.get_by_text("5 works are opted in and ready for training.").is_visible()
    page.get_by_label("Preset").select_option("standard")
    page.get_by_role("button", name="Train my style").click()

    panel = page.locator(".job-panel")
    panel.wait_for()
    assert page.locator("progress").is_visible()
    # htmx replaces the panel every 2 s while the training runs: the preview grid fills, then it finishes.
    page.locator(".preview-grid img").first.wait_for(timeout=180_000)
    # The versions table below follows the panel (each poll updates both), never "Queued" beside a running training.
    version = AdapterVersion.objects.get()
    panel_status, row_status = page.evaluate(
        f"() => [document.querySelector('.job-panel').dataset.status, "
        f"document.getElementById('version-status-{version.pk}').textContent.trim()]"
    )
    assert row_status == str(AdapterVersion.Status(panel_status).label)
    page.locator('.job-panel[data-status="ready"]').wait_for(timeout=180_000)
    page.reload()
    assert page.locator(".version-row .badge").inner_text() == "published"
    contrasts = badge_contrasts(page)
    assert all(ratio >= 4.5 for _text, ratio in contrasts), contrasts  # WCAG AA
    assert page.locator('.version-row[data-status="ready"]').count() == 1
    version.refresh_from_db()
    assert version.style.published_version_id == version.pk
    assert page.failed == [], page.failed
    assert page.errors == [], page.errors


def test_the_live_panel_says_when_a_refresh_fails_and_recovers(live_server, page, monkeypatch, django_capture_on_commit_callbacks):
    from django.http import Http404

    from generation import presentation, services, views

    artist, _works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):  # no worker: it stays queued, and the panel polls
        services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    page.goto(live_server.url + reverse("accounts:login"))
    page.get_by_label("Email address").fill(artist.user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(live_server.url + reverse("generation:style"))
    page.locator(".job-panel").wait_for()
    note = page.locator(".job-panel .job-connection")

    job_state = presentation.job_state

    def broken(version):
        raise RuntimeError("the database is away")

    monkeypatch.setattr(presentation, "job_state", broken)
    note.wait_for(timeout=10_000)
    assert note.inner_text() == "The progress could not be refreshed (a server error); trying again every 2 seconds."
    monkeypatch.setattr(presentation, "job_state", job_state)
    note.wait_for(state="detached", timeout=10_000)  # the next refresh replaced the panel, note and all

    def gone(request, version_id):
        raise Http404

    monkeypatch.setattr(views, "_own_version", gone)
    note.wait_for(timeout=10_000)
    assert note.inner_text() == "This training is no longer shown to this account; reload the page."
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "/job/" in request.url else None)
    page.wait_for_timeout(5_000)
    assert polls == []  # not asked for again
    # Only the failed loads and htmx's own report of them, no script error.
    script_errors = [error for error in page.errors if "responded with a status of" not in error and "Response Status Error" not in error]
    assert script_errors == [], page.errors

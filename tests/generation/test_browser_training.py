"""Done when: an artist clicks "Train my style" and watches progress and previews to a published style."""

import pytest
from django.urls import reverse

from generation.models import AdapterVersion
from tests.factories import PASSWORD
from tests.support.contrast import badge_contrasts

from .conftest import opted_in_artist

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("generation_roots")]


def open_style_page(page, live_server, artist):
    page.goto(live_server.url + reverse("accounts:login"))
    page.get_by_label("Email address").fill(artist.user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(live_server.url + reverse("generation:style"))


def test_artist_trains_watches_progress_and_gets_a_published_style(live_server, page, start_training_worker, settings):
    settings.TRAINING_PRESET_OVERRIDES = {"standard": {"steps": 16, "checkpoint_every": 8, "preview_every": 8}}
    artist, _works = opted_in_artist(5)
    start_training_worker()

    open_style_page(page, live_server, artist)
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
    open_style_page(page, live_server, artist)
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


def test_an_opened_log_stays_open_and_focused_while_the_panel_refreshes(live_server, page, django_capture_on_commit_callbacks):
    from generation import services
    from generation.models import TrainingJob

    artist, _works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):  # no worker: it stays queued, and the panel polls
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    TrainingJob.objects.filter(adapter_version=version).update(log="\n".join(f"line {number}" for number in range(50)))
    open_style_page(page, live_server, artist)
    page.locator(".job-panel summary").click()
    polls = []
    page.on("requestfinished", lambda request: polls.append(request.url) if "/job/" in request.url else None)
    page.wait_for_timeout(5_000)
    assert len(polls) >= 2  # the panel was replaced meanwhile
    assert page.evaluate("() => [document.querySelector('.job-panel details').open, document.activeElement.tagName]") == [True, "SUMMARY"]
    assert page.locator(".job-panel .log").is_visible()

    def log_place():
        return page.evaluate("() => { const log = document.querySelector('.job-panel .log'); "
                             "return [log.scrollTop, log.scrollHeight - log.clientHeight]; }")

    def after_two_refreshes():
        seen = len(polls)
        while len(polls) < seen + 2:
            page.wait_for_timeout(250)

    top, end = log_place()
    assert end > 100 and top == end  # opened on its newest lines
    # Scrolled just after a refresh has settled: a scroll while a slow refresh is mid-swap lands on the panel
    # being replaced, which would make this test fail on a loaded machine.
    page.evaluate("() => new Promise(resolve => document.addEventListener('htmx:load', () => setTimeout(() => {"
                  " document.querySelector('.job-panel .log').scrollTop = 60; resolve(); }, 0), { once: true }))")
    after_two_refreshes()
    assert log_place()[0] == 60  # where the reader left it
    page.evaluate("() => { const log = document.querySelector('.job-panel .log'); log.scrollTop = log.scrollHeight; }")
    TrainingJob.objects.filter(adapter_version=version).update(log="\n".join(f"line {number}" for number in range(70)))
    after_two_refreshes()
    top, end = log_place()
    assert top == end and page.locator(".job-panel .log").inner_text().endswith("line 69")  # following the end


def test_a_second_click_on_train_sends_nothing(live_server, page, monkeypatch):
    import time

    from generation import services, views

    start = services.style_training_start

    def slow_start(**kwargs):
        time.sleep(1)  # the first request still on its way when the second click comes
        return start(**kwargs)

    monkeypatch.setattr(views.services, "style_training_start", slow_start)
    artist, _works = opted_in_artist(4)
    open_style_page(page, live_server, artist)
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.evaluate("() => { const button = document.querySelector('#train-heading ~ form button[type=submit]'); button.click(); setTimeout(() => button.click(), 300); }")
    page.locator(".job-panel").wait_for()
    assert len(posts) == 1, posts
    assert page.get_by_text("A training of this style is already under way.").count() == 0
    assert AdapterVersion.objects.filter(style__artist=artist).count() == 1


def test_choosing_quick_unticks_publishing_unless_the_artist_chose_it(live_server, page, client):
    """Quick is a first look: published by default, it would replace the artist's style with a rough one."""
    artist, _works = opted_in_artist(4)
    open_style_page(page, live_server, artist)
    publish = page.get_by_label("Publish this version when it is ready")
    assert publish.is_checked()  # standard, the default preset, is published when ready
    page.get_by_label("Preset").select_option("quick")
    assert not publish.is_checked()
    page.get_by_label("Preset").select_option("thorough")
    assert publish.is_checked()
    page.get_by_label("Preset").select_option("quick")
    publish.check()  # the artist's own choice stands whatever preset follows
    page.get_by_label("Preset").select_option("standard")
    page.get_by_label("Preset").select_option("quick")
    assert publish.is_checked()
    publish.uncheck()
    page.get_by_role("button", name="Train my style").click()
    page.locator(".job-panel").wait_for()
    version = AdapterVersion.objects.get(style__artist=artist)
    assert version.preset == "quick" and not version.publish_when_ready
    # Without the script, a page asked for with quick chosen (a refused start comes back so) has the box unticked.
    client.force_login(artist.user)
    quick = client.get(reverse("generation:style") + "?preset=quick").content.decode()
    box = quick[quick.index('name="publish_when_ready"') - 40:quick.index('name="publish_when_ready"') + 40]
    assert "checked" not in box
    standard = client.get(reverse("generation:style")).content.decode()
    assert 'name="publish_when_ready" checked' in standard

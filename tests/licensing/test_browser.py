"""Done when: an artist uploads 20 images with captions in the browser, opts them in, withdraws one, sees the history."""

import pytest
from django.urls import reverse

from licensing.models import ConsentEvent, Work
from tests.factories import PASSWORD, ArtistFactory, ConsentTermsFactory
from tests.licensing import images

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    from django.db import connections

    # Playwright's sync API runs an event loop in this thread; the test's own ORM checks are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.errors = errors
        failed = []
        page.on("response", lambda response: failed.append((response.status, response.url)) if response.status >= 400 else None)
        page.failed = failed
        yield page
        browser.close()
    if connections["default"].vendor == "postgresql":
        # The live server's request threads keep their connections (CONN_MAX_AGE); end them so the test
        # database can be dropped when the run ends.
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def test_artist_uploads_twenty_captioned_works_opts_in_withdraws_one_and_sees_history(live_server, page, tmp_path):
    from licensing.hooks import replaced_withdrawal_receiver
    from tests.licensing.conftest import Receiver

    receiver = Receiver()
    with replaced_withdrawal_receiver(receiver):
        run_flow(live_server, page, tmp_path)
    assert len(receiver.calls) == 1 and receiver.calls[0]["in_atomic_block"]


def run_flow(live_server, page, tmp_path):
    ConsentTermsFactory(kind="training", version=1)
    artist = ArtistFactory()
    files = []
    for n in range(20):
        image = tmp_path / f"work-{n:02d}.png"
        image.write_bytes(images.good_png(100 + n))
        caption = tmp_path / f"work-{n:02d}.txt"
        caption.write_text(f"drawing number {n}")
        files += [str(image), str(caption)]
    (tmp_path / "evil.png").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    files.append(str(tmp_path / "evil.png"))

    page.goto(live_server.url + reverse("accounts:login"))
    page.fill("input[name=username]", artist.user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form.stacked button[type=submit]")
    page.wait_for_load_state()
    page.goto(live_server.url + reverse("licensing:upload"))
    page.set_input_files("#file-input", files)
    page.wait_for_selector("#upload-summary[data-done=true]", timeout=60_000)
    assert page.locator(".upload-created").count() == 20
    refused = page.locator(".upload-refused")
    assert refused.count() == 1 and "SVG drawing" in refused.inner_text()
    assert Work.objects.count() == 20
    assert set(Work.objects.values_list("caption", flat=True)) == {f"drawing number {n}" for n in range(20)}

    page.goto(live_server.url + reverse("licensing:studio"))
    page.click("text=Opt in all eligible works")
    assert "20 works opted in." in page.inner_text(".messages")
    one = Work.objects.get(caption="drawing number 7")
    page.click(f"#work-{one.pk} button:has-text('Withdraw')")
    assert f"Consent for work #{one.pk} is withdrawn." in page.inner_text(".messages")
    page.click("text=Consent history")
    rows = page.locator("table.history tbody tr")
    assert rows.count() == 21
    assert "Withdrawn" in rows.first.inner_text() and f"#{one.pk}" in rows.first.inner_text()
    assert ConsentEvent.objects.filter(kind="withdrawn").count() == 1
    # the only failed request is the refused SVG (and the browser's favicon probe); no CSP violation, no script error
    assert [url for status, url in page.failed if not url.endswith("/favicon.ico")] == [live_server.url + "/api/works/"]
    assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []

"""Done when: an artist uploads 20 images with captions in the browser, opts them in, withdraws one, sees the history."""

import pytest
from django.urls import reverse

from licensing.models import ConsentEvent, Work
from tests.factories import PASSWORD, ArtistFactory, ConsentTermsFactory
from tests.licensing import images
from tests.support.contrast import badge_contrasts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

def test_artist_uploads_twenty_captioned_works_opts_in_withdraws_one_and_sees_history(live_server, page, tmp_path):
    from licensing.hooks import replaced_withdrawal_receiver
    from tests.licensing.conftest import Receiver

    receiver = Receiver()
    with replaced_withdrawal_receiver(receiver):
        run_flow(live_server, page, tmp_path)
    assert len(receiver.calls) == 1 and receiver.calls[0]["in_atomic_block"]


def log_in(page, live_server, artist):
    page.goto(live_server.url + reverse("accounts:login"))
    page.fill("input[name=username]", artist.user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form.stacked button[type=submit]")
    page.wait_for_load_state()


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

    log_in(page, live_server, artist)
    page.goto(live_server.url + reverse("licensing:upload"))
    page.set_input_files("#file-input", files)
    page.wait_for_selector("#upload-summary[data-done=true]", timeout=60_000)
    assert page.inner_text("#upload-summary") == ("All files processed: 20 uploaded, 0 already among your works, "
                                                  "1 refused.")
    assert page.locator(".upload-created").count() == 20
    refused = page.locator(".upload-refused")
    assert refused.count() == 1 and "SVG drawing" in refused.inner_text()
    assert Work.objects.count() == 20
    assert set(Work.objects.values_list("caption", flat=True)) == {f"drawing number {n}" for n in range(20)}

    page.goto(live_server.url + reverse("licensing:studio"))
    page.click("text=Opt in all eligible works")
    assert "20 works opted in." in page.inner_text(".messages")
    contrasts = badge_contrasts(page)  # the consent state of each work must be readable (WCAG AA)
    assert len(contrasts) == 20 and all(ratio >= 4.5 for _text, ratio in contrasts), contrasts
    one = Work.objects.get(caption="drawing number 7")
    # Each row's buttons sit in a real table cell, so the row's borders line up; a phone does not scroll sideways.
    assert page.locator(f"#work-{one.pk} td.actions").evaluate("cell => getComputedStyle(cell).display") == "table-cell"
    # A caption box grows to show a long caption whole, rather than a two-line window onto it.
    box = page.locator(f"#caption-{one.pk}")
    short_height = box.evaluate("box => box.clientHeight")
    box.fill("a long caption that goes on " * 12)
    assert box.evaluate("box => box.clientHeight") > 2 * short_height
    assert box.evaluate("box => box.scrollHeight <= box.clientHeight + 1")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 800})
    # Withdrawing asks first, saying what it does to the style; cancelled, nothing is withdrawn.
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click(f"#work-{one.pk} button:has-text('Withdraw')")
    assert asked and "Every version of your style trained on it is retired" in asked[0]
    assert not ConsentEvent.objects.filter(kind="withdrawn").exists()
    page.once("dialog", lambda dialog: dialog.accept())
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


def test_each_upload_warning_is_a_line_of_its_own(live_server, page, tmp_path):
    """Run together, two warnings read as one sentence (in Japanese with no space between them at all)."""
    ConsentTermsFactory(kind="training", version=1)
    artist = ArtistFactory()
    first = tmp_path / "first.png"
    first.write_bytes(images.good_png(20))
    # The same picture again, re-encoded and marked do-not-train: a near-duplicate with a marker.
    marked = tmp_path / "marked.png"
    marked.write_bytes(images.png_with_xmp("DMI-PROHIBITED", 20))
    log_in(page, live_server, artist)
    page.goto(live_server.url + reverse("licensing:upload"))
    page.set_input_files("#file-input", [str(first), str(marked)])
    page.wait_for_selector("#upload-summary[data-done=true]", timeout=60_000)
    first_work, marked_work = Work.objects.order_by("pk")
    assert marked_work.near_duplicate_of == first_work and marked_work.do_not_train
    rows = page.locator(".upload-created")
    assert rows.count() == 2 and rows.nth(0).locator(".upload-warning").count() == 0
    lines = rows.nth(1).locator(".upload-warning")
    assert lines.all_inner_texts() == [f"This image looks very like work #{first_work.pk}.",
                                       marked_work.do_not_train_reason_shown]
    # each on a line of its own, under the upload's own status
    boxes = [lines.nth(i).bounding_box() for i in range(2)]
    assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"] - 1
    assert rows.nth(1).locator(".upload-status").inner_text().startswith(f"Uploaded (#{marked_work.pk})")

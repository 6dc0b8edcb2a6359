"""A failed training tells the artist its cause in one sentence, without the server's paths or traceback."""

import re

import pytest
from django.utils import translation

from generation import services
from generation.models import AdapterVersion
from generation.presentation import job_state, one_sentence
from generation.training import run_training_job

from .conftest import opted_in_artist

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/\w")


def test_one_sentence_keeps_a_files_name_but_not_its_folders():
    error = FileNotFoundError(2, "No such file or directory", "/srv/platform/media/works/7/abc-train.png")
    assert one_sentence(error) == "[Errno 2] No such file or directory: 'abc-train.png'."
    assert one_sentence(RuntimeError("first line\nsecond line")) == "first line."


def test_a_failed_training_shows_a_sentence_and_keeps_the_traceback_for_staff(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    with open(works[1].training_image.path, "wb") as damaged:
        damaged.write(b"not an image any more")

    failed = run_training_job(adapter_version_id=version.pk, worker="training@host-7")
    assert failed.status == AdapterVersion.Status.FAILED
    shown = failed.failure_reason_shown
    assert shown.startswith("The training stopped on an error; start it again") and shown.endswith(").") and "\n" not in shown
    assert not ABSOLUTE_PATH.search(shown), shown
    state = job_state(AdapterVersion.objects.select_related("job", "snapshot").get(pk=version.pk))
    assert state["log_tail"] and not ABSOLUTE_PATH.search(state["log_tail"]), state["log_tail"]
    assert "Traceback" not in state["log_tail"] and "host-7" not in state["log_tail"]
    assert f"failed: {failed.failure_params['error']}." in state["log_tail"]
    with translation.override("ja"):  # the frame in the reader's language, the error's own line inside it
        assert failed.failure_reason_shown.startswith("学習はエラーで停止しました")
        assert failed.failure_params["error"] in failed.failure_reason_shown
    detail = failed.job.error_detail
    assert detail.startswith("Traceback") and works[1].training_image.path in detail


def test_the_platforms_own_folders_go_even_when_their_names_hold_spaces(settings, tmp_path):
    from generation.presentation import without_server_paths

    settings.TRAINING_WORK_ROOT = tmp_path / "Application Support" / "training"
    line = f"cancelled at step 7; checkpoint kept in {settings.TRAINING_WORK_ROOT}/version-3/state"
    assert without_server_paths(line) == "cancelled at step 7; checkpoint kept in version-3/state"
    assert without_server_paths("1/2 of the works, see https://example.org/a/b on 2026/11/30") == (
        "1/2 of the works, see https://example.org/a/b on 2026/11/30"
    )


def test_a_folder_counts_only_where_a_path_starts(settings):
    from generation.presentation import without_server_paths

    settings.DATA_DIR = "/data"
    assert without_server_paths("cannot read /mnt/data/x.png") == "cannot read x.png"
    assert without_server_paths("cannot read '/data/media/x.png'") == "cannot read 'media/x.png'"  # inside: relative


def test_a_folder_goes_after_any_character_that_cannot_be_part_of_a_path(settings):
    from generation.presentation import without_server_paths

    settings.DATA_DIR = "/srv/my data"
    assert without_server_paths("could not load [/srv/my data/adapters/x.png]") == "could not load [adapters/x.png]"


def test_the_platforms_reasons_are_shown_in_the_readers_language_whoever_wrote_them(client_for, settings, django_capture_on_commit_callbacks):
    from django.urls import reverse
    from django.utils import translation

    from licensing.services import work_withdraw

    artist, works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    services.training_job_claim(adapter_version_id=version.pk, worker="w")
    settings.TRAINING_MAX_ATTEMPTS = 1
    AdapterVersion.objects.filter(pk=version.pk).update(status=AdapterVersion.Status.QUEUED)
    with translation.override("en"):  # the worker's language
        services.training_job_claim(adapter_version_id=version.pk, worker="w")  # fails: past its tries
    with translation.override("ja"), django_capture_on_commit_callbacks(execute=False):  # a withdrawal on the Japanese pages
        work_withdraw(work=works[0], actor=artist.user)

    client = client_for(artist.user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ja"
    japanese = client.get(reverse("generation:style")).content.decode()
    assert "学習が予期せず 1 回停止しました" in japanese and "stopped unexpectedly" not in japanese
    assert f"同意が撤回された作品 #{works[0].pk}" in japanese
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    english = client.get(reverse("generation:style")).content.decode()
    assert "The training stopped unexpectedly 1 times" in english
    assert f"Trained on withdrawn work(s) #{works[0].pk}" in english and "撤回" not in english
    state = client.get(reverse("api-adapter-version", args=[version.pk]), HTTP_ACCEPT_LANGUAGE="en").json()
    assert state["retired_reason"].startswith(f"Trained on withdrawn work(s) #{works[0].pk}")


def test_running_out_of_memory_tells_the_artist_to_try_again_later(monkeypatch, django_capture_on_commit_callbacks):
    from generation import training

    def out_of_memory(**_kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total capacity)\nlines of advice")

    monkeypatch.setattr(training, "train_lora", out_of_memory)
    artist, _works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    failed = run_training_job(adapter_version_id=version.pk, worker="test")
    assert failed.status == AdapterVersion.Status.FAILED
    assert failed.failure_reason == (
        "The platform's training machine ran out of memory; try again later, and tell the platform's team if it happens again."
    )
    assert "failed: CUDA out of memory. Tried to allocate 2.00 GiB" in failed.job.log

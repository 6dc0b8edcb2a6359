"""Withdrawal retires every adapter trained on the work, unpublishes it, and queues a retrain."""

import re

import pytest
from generation.models import AdapterVersion, TrainingJob
from generation.selectors import usable_adapter_versions
from generation.services import (
    adapter_versions_retire_for_works, style_training_start, training_job_claim, training_job_finish, training_job_stop,
)
from generation.storage import adapter_dir, training_work_dir
from licensing.hooks import replaced_withdrawal_receiver
from licensing.services import artist_leave, work_delete, work_opt_in, work_update, work_withdraw
from tests.factories import StaffFactory

from .conftest import finished_result, opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


def trainings_sent(callbacks):
    """The on-commit callbacks that send a training task (others remove files)."""
    return [callback for callback in callbacks if callback.__qualname__ == "_enqueue_training.<locals>.enqueue"]


def test_withdrawing_a_work_retires_unpublishes_and_queues_a_retrain(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(6)
    version = ready_version(artist)
    assert list(usable_adapter_versions()) == [version]

    with django_capture_on_commit_callbacks() as callbacks:
        work_withdraw(work=works[2], actor=artist.user, reason="changed my mind")

    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.RETIRED
    assert f"#{works[2].pk}" in version.retired_reason_shown
    assert version.style.published_version_id is None
    assert version.pk not in usable_adapter_versions().values_list("pk", flat=True)
    retrain = AdapterVersion.objects.get(style=version.style, number=2)
    assert retrain.status == AdapterVersion.Status.QUEUED
    assert retrain.publish_when_ready is True  # it replaces a published version
    assert works[2].pk not in retrain.snapshot.work_ids
    assert sorted(retrain.snapshot.work_ids) == sorted(work.pk for work in works if work.pk != works[2].pk)
    assert len(trainings_sent(callbacks)) == 1  # the retrain's task is enqueued once, after commit


def test_a_version_without_the_work_stays_usable(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    other_artist, _other_works = opted_in_artist(5, style="pixel-art", first_seed=100)
    version = ready_version(artist)
    untouched = ready_version(other_artist)
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)
    assert list(usable_adapter_versions()) == [untouched]
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.RETIRED


def test_no_retrain_when_too_few_works_remain(settings, django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(4)
    settings.STYLE_MIN_WORKS = 4
    version = ready_version(artist)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        work_withdraw(work=works[1], actor=artist.user)
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.RETIRED
    assert AdapterVersion.objects.filter(style=version.style).count() == 1
    assert trainings_sent(callbacks) == []


def test_deleting_a_work_and_leaving_retire_too(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    first = ready_version(artist)
    with django_capture_on_commit_callbacks(execute=False):
        work_delete(work=works[0], actor=artist.user)
    first.refresh_from_db()
    assert first.status == AdapterVersion.Status.RETIRED
    retrain = AdapterVersion.objects.get(style=first.style, number=2)
    with django_capture_on_commit_callbacks(execute=False):
        artist_leave(artist=artist, actor=artist.user)
    retrain.refresh_from_db()
    assert retrain.status == AdapterVersion.Status.RETIRED
    assert not usable_adapter_versions().exists()


def test_an_artist_who_left_keeps_the_record_of_their_versions_and_trains_no_more(
    api_client_for, client_for, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    artist, _works = opted_in_artist(5)
    ready_version(artist)
    with django_capture_on_commit_callbacks(execute=False):
        artist_leave(artist=artist, actor=artist.user)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "You have left the platform, so no style of yours can be trained."
    page = client_for(artist.user).get(reverse("generation:style")).content.decode()
    assert "You have left the platform: your versions stay listed here as a record" in page
    assert 'id="train-heading"' not in page and "v1" in page
    for gone in (reverse("licensing:upload"), reverse("licensing:profile")):  # 404 for them: not offered
        assert f'href="{gone}"' not in page


def test_withdrawal_during_training_finishes_retired_never_published(django_capture_on_commit_callbacks, settings):
    artist, works = opted_in_artist(5)
    version = ready_version(artist, publish=False)
    AdapterVersion.objects.filter(pk=version.pk).update(status=AdapterVersion.Status.QUEUED, weights_sha256="", weights_path="")
    version.refresh_from_db()
    version.publish_when_ready = True
    version.save()
    job = training_job_claim(adapter_version_id=version.pk, worker="test")
    assert job is not None

    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[3], actor=artist.user)

    finished = training_job_finish(job=job, result=finished_result(settings.ADAPTER_ROOT / "late"), adapter_root=settings.ADAPTER_ROOT)
    assert finished.status == AdapterVersion.Status.RETIRED
    finished.style.refresh_from_db()
    assert finished.style.published_version_id is None


def test_a_run_stopped_by_a_withdrawal_logs_its_retirement_not_a_cancel_or_a_kept_checkpoint(
        django_capture_on_commit_callbacks, settings):
    from generation.services import training_job_stop
    from generation.training import JobReporter

    artist, works = opted_in_artist(5)
    version = ready_version(artist, publish=False)
    AdapterVersion.objects.filter(pk=version.pk).update(status=AdapterVersion.Status.QUEUED, weights_sha256="", weights_path="")
    job = training_job_claim(adapter_version_id=version.pk, worker="test")
    checkpoint = training_work_dir(version) / "state" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"checkpoint")
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[3], actor=artist.user)
    reporter = JobReporter(job)
    assert reporter.should_cancel()  # the loop stops at its next step, logging where its checkpoint is
    reporter.on_log(f"stopped at step 7; checkpoint kept in {checkpoint.parent}")
    with django_capture_on_commit_callbacks(execute=True):
        stopped = training_job_stop(job=job)
    assert stopped.status == AdapterVersion.Status.RETIRED and not checkpoint.exists()
    log = stopped.job.log.splitlines()
    assert log[-1].endswith("retired: a work it was training on was withdrawn; its checkpoint is removed, as a "
                            "retired training never resumes")
    assert "cancel" not in "\n".join(log[-2:])


def test_retired_weights_are_deleted_when_configured(settings, django_capture_on_commit_callbacks):
    settings.RETIRED_ADAPTER_FILES = "delete"
    artist, works = opted_in_artist(4)
    version = ready_version(artist)
    weights = settings.ADAPTER_ROOT / version.weights_path
    assert weights.exists()
    with django_capture_on_commit_callbacks(execute=True):
        work_withdraw(work=works[0], actor=artist.user)
    assert not weights.exists()


def test_deleting_retired_weights_takes_what_a_killed_save_left_beside_them(settings, django_capture_on_commit_callbacks):
    import os

    from generation.ml.lora_training import _this_machine

    settings.RETIRED_ADAPTER_FILES = "delete"
    artist, works = opted_in_artist(4)
    version = ready_version(artist)
    folder = adapter_dir(version)
    saver = f"{_this_machine()}-{os.getpid()}"  # a process still running: only the version's end allows this
    leftovers = [folder.parent / f".{folder.name}.{saver}-x1.tmp", folder.parent / f".{folder.name}.old-{saver}-12"]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
    other = folder.parent / f".{folder.name}.notes"
    other.mkdir()
    with django_capture_on_commit_callbacks(execute=True):
        work_withdraw(work=works[0], actor=artist.user)
    assert not folder.exists() and not any(leftover.exists() for leftover in leftovers)
    assert other.exists()  # not a name a save makes


def test_the_selector_refuses_an_adapter_even_when_retirement_was_missed():
    artist, works = opted_in_artist(4)
    version = ready_version(artist)
    with replaced_withdrawal_receiver(lambda work_ids, event_ids: None):
        work_withdraw(work=works[0], actor=artist.user)
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.READY  # the hook was bypassed on purpose
    assert not usable_adapter_versions().exists()


def test_a_failing_receiver_rolls_the_withdrawal_back():
    artist, works = opted_in_artist(4)
    ready_version(artist)

    def broken(work_ids, event_ids):
        raise RuntimeError("generation is down")

    with replaced_withdrawal_receiver(broken), pytest.raises(RuntimeError):
        work_withdraw(work=works[0], actor=artist.user)
    works[0].refresh_from_db()
    assert works[0].is_opted_in


def test_the_selector_refuses_it_still_when_the_work_is_opted_in_again():
    artist, works = opted_in_artist(4)
    version = ready_version(artist)
    with replaced_withdrawal_receiver(lambda work_ids, event_ids: None):
        work_withdraw(work=works[0], actor=artist.user)
    work_opt_in(work=works[0], actor=artist.user)
    works[0].refresh_from_db()
    assert works[0].is_opted_in
    assert not usable_adapter_versions().exists()  # the new grant is not the one the snapshot froze
    later = ready_version(artist)  # a snapshot taken under the new grant
    assert list(usable_adapter_versions()) == [later]


def test_no_retrain_for_an_older_version_the_artist_passed_over(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    older = ready_version(artist, publish=False)
    work_update(work=works[0], caption="")  # out of the next snapshot
    newer = ready_version(artist)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        work_withdraw(work=works[0], actor=artist.user)
    older.refresh_from_db()
    assert older.status == AdapterVersion.Status.RETIRED
    assert trainings_sent(callbacks) == [] and AdapterVersion.objects.count() == 2
    assert list(usable_adapter_versions()) == [newer]


def test_the_retrain_takes_the_preset_of_the_newest_version_it_replaces(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    ready_version(artist, publish=False)  # quick
    published = ready_version(artist)
    AdapterVersion.objects.filter(pk=published.pk).update(preset="thorough")
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)
    retrain = AdapterVersion.objects.get(status=AdapterVersion.Status.QUEUED)
    assert retrain.preset == "thorough" and retrain.publish_when_ready


def test_failed_and_cancelled_versions_holding_the_work_are_retired_too(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    failed = ready_version(artist, publish=False)
    cancelled = ready_version(artist, publish=False)
    AdapterVersion.objects.filter(pk=failed.pk).update(status=AdapterVersion.Status.FAILED, weights_sha256="")
    AdapterVersion.objects.filter(pk=cancelled.pk).update(status=AdapterVersion.Status.CANCELLED, weights_sha256="")
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[1], actor=artist.user)
    for version in (failed, cancelled):
        version.refresh_from_db()
        assert version.status == AdapterVersion.Status.RETIRED
        assert f"#{works[1].pk}" in version.retired_reason_shown


def test_the_retrain_of_a_training_meant_to_go_live_goes_live_too(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    in_flight = style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)
    in_flight.refresh_from_db()
    assert in_flight.status == AdapterVersion.Status.RETIRED
    retrain = AdapterVersion.objects.get(style=in_flight.style, number=in_flight.number + 1)
    assert retrain.publish_when_ready is True


def test_the_reason_names_only_the_works_a_version_held_and_fits_however_many(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(12)
    late_work = opted_in_artist(1, first_seed=50)[1][0]
    version = ready_version(artist)
    # Event ids as a large platform has them: the reason outgrows any short column.
    event_ids = [10**15 + index for index in range(len(works) + 1)]
    with django_capture_on_commit_callbacks(execute=False):
        retired = adapter_versions_retire_for_works(work_ids=[w.pk for w in works] + [late_work.pk], event_ids=event_ids)
    assert retired == [version]
    version.refresh_from_db()
    assert len(version.retired_reason_shown) > 300
    named_works, named_events = version.retired_reason_shown.split("(consent")
    assert {int(pk) for pk in re.findall(r"#(\d+)", named_works)} == {work.pk for work in works}
    assert {int(pk) for pk in re.findall(r"#(\d+)", named_events)} == set(event_ids[:-1])


def test_a_withdrawal_stands_when_the_retrain_cannot_be_queued(settings, tmp_path, django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    version = ready_version(artist)
    settings.BASE_MODEL = tmp_path / "no-such-base"  # e.g. a web host without the model
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        work_withdraw(work=works[0], actor=artist.user)
    works[0].refresh_from_db()
    version.refresh_from_db()
    assert not works[0].is_opted_in
    assert version.status == AdapterVersion.Status.RETIRED
    assert AdapterVersion.objects.filter(style=version.style).count() == 1
    assert trainings_sent(callbacks) == []


def test_a_late_checksum_mismatch_does_not_undo_a_retirement(settings, django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    version = style_training_start(artist=artist, actor=artist.user, preset="quick")
    job = training_job_claim(adapter_version_id=version.pk, worker="test")
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)
    result = finished_result(settings.ADAPTER_ROOT / "late")
    result.sha256 = "0" * 64
    finished = training_job_finish(job=job, result=result, adapter_root=settings.ADAPTER_ROOT)
    assert finished.status == AdapterVersion.Status.RETIRED
    assert finished.weights_path == "late/pytorch_lora_weights.safetensors"  # the audit copy stays tied to its row


def test_deleting_retired_files_takes_the_checkpoint_cache_and_previews(settings, django_capture_on_commit_callbacks):
    settings.RETIRED_ADAPTER_FILES = "delete"
    artist, works = opted_in_artist(5)
    version = style_training_start(artist=artist, actor=artist.user, preset="quick")
    job = training_job_claim(adapter_version_id=version.pk, worker="test")
    state = training_work_dir(version)
    (state / "state").mkdir(parents=True)
    (state / "state" / "checkpoint.pt").write_bytes(b"lora")
    TrainingJob.objects.filter(pk=job.pk).update(previews=[{"step": 3, "prompt": "a cat", "seed": 0, "file": "step-000003-0.png"}])
    with django_capture_on_commit_callbacks(execute=True):
        work_withdraw(work=works[0], actor=artist.user)
    assert not state.exists()
    assert TrainingJob.objects.get(pk=job.pk).previews == []  # the page and API list no image that is gone
    # The worker notices the retirement a moment later; what it wrote meanwhile goes too.
    (state / "previews").mkdir(parents=True)
    (state / "previews" / "step-000006-0.png").write_bytes(b"png")
    TrainingJob.objects.filter(pk=job.pk).update(previews=[{"step": 6, "prompt": "a cat", "seed": 0, "file": "step-000006-0.png"}])
    with django_capture_on_commit_callbacks(execute=True):
        training_job_stop(job=job)
    assert not state.exists()
    assert TrainingJob.objects.get(pk=job.pk).previews == []


def test_a_retired_training_loses_its_checkpoint_and_cache_but_keeps_weights_and_previews_for_audit(
    settings, django_capture_on_commit_callbacks
):
    assert settings.RETIRED_ADAPTER_FILES == "keep"
    artist, works = opted_in_artist(5)
    published = ready_version(artist)
    version = style_training_start(artist=artist, actor=artist.user, preset="quick")
    training_job_claim(adapter_version_id=version.pk, worker="test")
    folder = training_work_dir(version)
    for name in ("state/cache.pt", "state/checkpoint.pt", "previews/step-000006-0.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"bytes")
    with django_capture_on_commit_callbacks(execute=True):
        work_delete(work=works[0], actor=artist.user)
    assert not (folder / "state").exists()  # the deleted work's latents are gone with it
    assert (folder / "previews" / "step-000006-0.png").exists()
    assert (settings.ADAPTER_ROOT / published.weights_path).exists()
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.RETIRED and version.finished_at == version.retired_at


def test_a_changed_slug_keeps_the_artists_one_style(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    first = ready_version(artist)
    artist.slug = "a-new-name"
    artist.save()
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)
    retrain = AdapterVersion.objects.get(snapshot__artist=artist, status=AdapterVersion.Status.QUEUED)
    assert retrain.style_id == first.style_id and retrain.number == 2


def test_the_selector_drops_the_styles_of_a_deactivated_account():
    artist, _works = opted_in_artist(4)
    version = ready_version(artist)
    assert list(usable_adapter_versions()) == [version]
    artist.user.is_active = False
    artist.user.save()
    assert not usable_adapter_versions().exists()


def test_a_work_held_only_by_a_cancelled_training_retires_it_without_a_retrain(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    cancelled = ready_version(artist, publish=False)
    AdapterVersion.objects.filter(pk=cancelled.pk).update(status=AdapterVersion.Status.CANCELLED, weights_sha256="")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        work_withdraw(work=works[0], actor=artist.user)
    assert dict(AdapterVersion.objects.values_list("number", "status")) == {1: "retired"}
    assert trainings_sent(callbacks) == []  # nobody asked for that training again


def test_no_retrain_for_an_account_staff_deactivated(django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    ready_version(artist)
    artist.user.is_active = False
    artist.user.save()
    with django_capture_on_commit_callbacks(execute=False):
        work_delete(work=works[0], actor=StaffFactory())
    # no retrain queued: no training time spent on a style generation would refuse
    assert dict(AdapterVersion.objects.values_list("number", "status")) == {1: "retired"}


def test_a_training_under_way_takes_over_the_wish_to_go_live_of_the_version_it_replaces(
        settings, django_capture_on_commit_callbacks):
    artist, works = opted_in_artist(5)
    published = ready_version(artist)  # holds works[0]
    work_update(work=works[0], caption="")  # still opted in, no longer trainable
    running = style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=False)
    assert works[0].pk not in running.snapshot.work_ids
    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)
    published.refresh_from_db()
    assert published.status == AdapterVersion.Status.RETIRED
    assert AdapterVersion.objects.count() == 2  # no second retrain beside the one under way
    job = training_job_claim(adapter_version_id=running.pk, worker="w")
    training_job_finish(job=job, result=finished_result(adapter_dir(running)), adapter_root=settings.ADAPTER_ROOT)
    running.refresh_from_db()
    assert running.style.published_version_id == running.pk


@pytest.mark.parametrize("action", ["withdraw", "delete"])
def test_the_studio_tells_an_artist_what_a_withdrawal_did_to_their_style(client, action, django_capture_on_commit_callbacks):
    """Withdrawing or deleting a work the style was trained on takes the published style offline: the artist is
    told so where they acted, and not told it for a work no training used."""
    from django.urls import reverse

    from licensing.services import work_upload
    from .conftest import drawing_png

    artist, works = opted_in_artist(6)
    ready_version(artist)
    untrained = work_upload(artist=artist, data=drawing_png(99)[0], filename="late.png", caption="a late addition").work
    work_opt_in(work=untrained, actor=artist.user)
    client.force_login(artist.user)

    def act(work):
        url = (reverse("licensing:work_consent", args=[work.pk, "opt-out"]) if action == "withdraw"
               else reverse("licensing:work_delete", args=[work.pk]))
        with django_capture_on_commit_callbacks(execute=False):
            return client.post(url, follow=True).content.decode()

    assert "was among the works a training of your style used" not in act(untrained)
    told = f"Work #{works[1].pk} was among the works a training of your style used: every version trained on it is retired"
    assert told in act(works[1])

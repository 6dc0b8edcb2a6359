"""A training job has one owner at a time: claims, takeovers, late cancels, resumes and recovery."""

import hashlib
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError
from PIL import Image

from generation import services
from generation.ml.lora_training import CHECKPOINT_NAME, LoraTrainingConfig, TrainingAbandoned, train_lora
from generation.models import AdapterVersion, TrainingJob
from generation.storage import adapter_dir, preview_path, training_work_dir
from generation.tasks import train_adapter_version
from generation.training import JobReporter, training_examples

from .conftest import finished_result, opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("generation_roots", "training_terms")]


@pytest.fixture
def queued(django_capture_on_commit_callbacks):
    artist, _works = opted_in_artist(4)
    with django_capture_on_commit_callbacks(execute=False):
        return services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)


def test_a_training_whose_worker_stopped_says_so_instead_of_its_last_eta(settings, api_client_for, client_for, queued):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    TrainingJob.objects.filter(pk=job.pk).update(step=4, eta_seconds=12.0)
    user = queued.style.artist.user
    url = reverse("api-adapter-version", args=[queued.pk])
    state = api_client_for(user).get(url).json()
    assert state["status"] == "training" and state["eta_seconds"] == 12 and state["waiting_for_worker"] is False

    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)  # killed, its machine gone: nothing takes it on yet
    state = api_client_for(user).get(url).json()
    assert state["status"] == "training" and state["eta_seconds"] is None and state["waiting_for_worker"] is True
    page = client_for(user).get(reverse("generation:style")).content.decode()
    assert "its worker stopped; it goes on from its last checkpoint" in page and "s left" not in page


def backdate(version, seconds):
    AdapterVersion.objects.filter(pk=version.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def another_training_claimed_by(worker, capture_on_commit):
    """Another artist's training, claimed by `worker`: its job."""
    artist, _works = opted_in_artist(4)
    with capture_on_commit(execute=False):
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    return services.training_job_claim(adapter_version_id=version.pk, worker=worker)


def trainings_waiting(count, capture_on_commit):
    """`count` artists' trainings, started in turn and left waiting (their messages never sent)."""
    queue = []
    for _ in range(count):
        artist, _works = opted_in_artist(4)
        with capture_on_commit(execute=False):
            queue.append(services.style_training_start(artist=artist, actor=artist.user, preset="quick"))
    return queue


def go_silent(job, seconds):
    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def test_a_cancel_asked_during_the_last_steps_wins_over_publishing(settings, queued, django_capture_on_commit_callbacks):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    services.training_cancel(adapter_version=queued)
    result = finished_result(adapter_dir(queued))
    with django_capture_on_commit_callbacks(execute=True):
        finished = services.training_job_finish(job=job, result=result, adapter_root=settings.ADAPTER_ROOT)
    finished.style.refresh_from_db()
    assert finished.status == AdapterVersion.Status.CANCELLED
    assert finished.style.published_version_id is None and finished.weights_path == ""
    assert not adapter_dir(queued).exists()


def test_cancelling_a_training_whose_worker_is_gone_ends_it_at_once(settings, queued):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
    services.training_cancel(adapter_version=queued)
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.CANCELLED
    assert queued.job.log.endswith("Z cancelled: its checkpoint is removed, as an ended training does not resume\n")
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is None


def test_a_cancel_request_beats_the_retry_bound(settings, queued):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    services.training_cancel(adapter_version=queued)  # asked while alive; then the worker dies
    TrainingJob.objects.filter(pk=job.pk).update(attempts=settings.TRAINING_MAX_ATTEMPTS)
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is None
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.CANCELLED and queued.failure_reason == ""


def test_a_live_training_is_not_claimed_twice_even_under_its_own_worker_name(queued):
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="a") is not None
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="a") is None
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is None
    assert TrainingJob.objects.get(adapter_version=queued).attempts == 1


def test_a_run_taken_over_writes_nothing_more_and_cannot_finish(settings, queued, django_capture_on_commit_callbacks):
    first = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    first_run = JobReporter(first)
    first_run.on_progress(1, 12, 0.5, 10.0)
    go_silent(first, settings.TRAINING_STALE_SECONDS + 1)  # e.g. a machine that froze, then woke up
    second = services.training_job_claim(adapter_version_id=queued.pk, worker="b")
    assert second is not None and second.claim_token != first.claim_token

    first_run.on_progress(2, 12, 0.4, 9.0)  # written within the report interval: not yet told
    with pytest.raises(TrainingAbandoned):
        first_run.should_cancel()
    with pytest.raises(TrainingAbandoned):
        first_run.on_progress(3, 12, 0.3, 8.0)
    assert TrainingJob.objects.get(pk=first.pk).step == 0  # the second run starts again from no checkpoint
    services.training_job_finish(job=first, result=finished_result(adapter_dir(queued), b"first"), adapter_root=settings.ADAPTER_ROOT)
    services.training_job_stop(job=first)
    services.training_job_fail(job=first, reason="late failure.")
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.TRAINING and queued.failure_reason == ""

    with django_capture_on_commit_callbacks(execute=True):
        finished = services.training_job_finish(job=second, result=finished_result(adapter_dir(queued), b"second"), adapter_root=settings.ADAPTER_ROOT)
    assert finished.status == AdapterVersion.Status.READY
    assert finished.weights_sha256 == hashlib.sha256(b"second").hexdigest()


@pytest.mark.parametrize("taken_over_at, checkpoint_every", [(3, 2), (2, 2), (6, 100)],
                         ids=["between-checkpoints", "at-a-checkpoint", "at-the-last-step"])
def test_a_run_taken_over_mid_training_leaves_the_new_owners_files_alone(settings, queued, taken_over_at,
                                                                         checkpoint_every):
    """The run that lost its claim used to stop like a cancel, saving its own (older) checkpoint over the
    new owner's in the work folder they share, and at the last step it saved the adapter too."""
    first = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    checkpoint = training_work_dir(queued) / "state" / CHECKPOINT_NAME

    class TakenOver(JobReporter):
        def on_progress(self, step, total, loss, eta_seconds):
            if step == taken_over_at:  # the worker froze; another took the job over and resumed it
                go_silent(first, settings.TRAINING_STALE_SECONDS + 1)
                assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is not None
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.write_bytes(b"the new owner's checkpoint")
            super().on_progress(step, total, loss, eta_seconds)

    config = LoraTrainingConfig.from_dict({**queued.hyperparameters, "steps": 6, "checkpoint_every": checkpoint_every,
                                           "preview_every": 0, "batch_size": 2})
    with pytest.raises(TrainingAbandoned):
        train_lora(base_path=queued.base_model.path, examples=training_examples(queued.snapshot),
                   out_dir=adapter_dir(queued), config=config, work_dir=checkpoint.parent,
                   callbacks=TakenOver(first), threads=1)
    assert checkpoint.read_bytes() == b"the new owner's checkpoint"
    assert not adapter_dir(queued).exists()
    services.training_job_stop(job=first)  # what the task does next: the version stays the new owner's
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.TRAINING and checkpoint.is_file()


def test_a_run_taken_over_while_encoding_the_works_leaves_their_cache_alone(settings, queued, monkeypatch):
    from generation.ml import lora_training

    first = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    cache = training_work_dir(queued) / "state" / "cache.pt"
    encode_text = lora_training.encode_text

    def taken_over_while_encoding(*args, **kwargs):  # the captions' encoding asks nothing: freeze there
        if not cache.exists():
            go_silent(first, settings.TRAINING_STALE_SECONDS + 1)
            assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is not None
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(b"the new owner's cache")
        return encode_text(*args, **kwargs)

    monkeypatch.setattr(lora_training, "encode_text", taken_over_while_encoding)
    config = LoraTrainingConfig.from_dict({**queued.hyperparameters, "steps": 2, "preview_every": 0})
    with pytest.raises(TrainingAbandoned):
        train_lora(base_path=queued.base_model.path, examples=training_examples(queued.snapshot),
                   out_dir=adapter_dir(queued), config=config, work_dir=cache.parent, callbacks=JobReporter(first),
                   threads=1)
    assert cache.read_bytes() == b"the new owner's cache"


def test_a_run_taken_over_while_drawing_previews_writes_none(settings, queued):
    first = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    run = JobReporter(first)
    go_silent(first, settings.TRAINING_STALE_SECONDS + 1)
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is not None
    with pytest.raises(TrainingAbandoned):
        run.on_preview(4, [("a red star", 0, Image.new("RGB", (8, 8)))])
    assert not preview_path(queued, "x").parent.exists()


def test_a_database_that_drops_out_before_the_claim_is_retried_not_lost(queued, monkeypatch):
    from django.db import OperationalError

    claims = []

    def claim_after_an_outage(**kwargs):
        claims.append(kwargs)
        if len(claims) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return None  # the retry gets through (and here finds nothing to do)

    monkeypatch.setattr(services, "training_job_claim", claim_after_an_outage)
    train_adapter_version.apply(args=[queued.pk])  # eager: a retry runs at once
    assert [claim["adapter_version_id"] for claim in claims] == [queued.pk, queued.pk]


def test_a_resumed_job_drops_what_was_recorded_after_its_checkpoint(settings, queued):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    run = JobReporter(job)
    for step in range(1, 8):
        run.last_report = 0.0  # write every step
        run.on_progress(step, 12, 1.0 / step, 5.0)
        if step == 4:
            run.on_checkpoint(4)
    TrainingJob.objects.filter(pk=job.pk).update(previews=[
        {"step": 3, "prompt": "p", "seed": 0, "file": "step-000003-0.png"},
        {"step": 6, "prompt": "p", "seed": 0, "file": "step-000006-0.png"},
    ])
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
    resumed = services.training_job_claim(adapter_version_id=queued.pk, worker="b")
    assert [step for step, _loss in resumed.losses] == [1, 2, 3, 4]
    assert [preview["step"] for preview in resumed.previews] == [3]
    assert resumed.step == resumed.resumed_from_step == 4
    assert resumed.eta_seconds is None  # the dead run's estimate is no guide; the new run reports its own


def test_recovery_requeues_a_silent_training_once_per_stale_period(settings, queued, django_capture_on_commit_callbacks):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.training_jobs_recover() == []  # alive
        assert services.training_jobs_recover(worker="a", restarted_at=timezone.now()) == [queued.pk]  # its run died
        go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
        assert services.training_jobs_recover() == []  # queued again a moment ago
        TrainingJob.objects.filter(pk=job.pk).update(requeued_at=timezone.now() - timedelta(seconds=settings.TRAINING_STALE_SECONDS + 1))
        assert services.training_jobs_recover() == [queued.pk]
    assert len(callbacks) == 2
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is not None


def test_recovery_requeues_a_waiting_training_whose_message_is_lost(settings, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.training_jobs_recover(worker="w") == []  # queued a moment ago: its message may still be on the way
        backdate(queued, settings.TRAINING_STALE_SECONDS + 1)
        # A worker just up has not yet had the time to take what waits.
        assert services.training_jobs_recover(worker="w", restarted_at=timezone.now()) == []
        assert services.training_jobs_recover(worker="w") == [queued.pk]
        assert services.training_jobs_recover(worker="w") == []  # queued again a moment ago
    assert len(callbacks) == 1
    assert TrainingJob.objects.get(adapter_version=queued).lost_message_resends == 1
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="w") is not None


def test_a_waiting_training_is_taken_for_lost_only_by_a_worker_that_trained_nothing_for_a_period(settings, queued, django_capture_on_commit_callbacks):
    job = another_training_claimed_by("busy", django_capture_on_commit_callbacks)
    stale = settings.TRAINING_STALE_SECONDS + 1
    backdate(queued, stale)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.training_jobs_recover(worker="busy") == []  # it trains: what waits may be waiting behind it
        AdapterVersion.objects.filter(pk=job.adapter_version_id).update(status=AdapterVersion.Status.CANCELLED, finished_at=timezone.now())
        assert services.training_jobs_recover(worker="busy") == []  # it trained a moment ago: the next message is on its way
        go_silent(job, stale)
        assert services.training_jobs_recover(worker="busy") == [queued.pk]
    assert len(callbacks) == 1


def test_a_worker_held_by_a_stuck_run_takes_nothing_waiting_for_lost(settings, queued, django_capture_on_commit_callbacks):
    stuck = another_training_claimed_by("w", django_capture_on_commit_callbacks)
    stale = settings.TRAINING_STALE_SECONDS + 1
    go_silent(stuck, stale)  # its loop hung: the heartbeat stopped, the worker's only slot is still taken
    backdate(queued, stale)
    with django_capture_on_commit_callbacks(execute=False):
        assert services.training_jobs_recover(worker="w") == [stuck.adapter_version_id]  # the stuck one is queued again, not what waits


def test_a_worker_idle_beside_a_busy_one_finds_the_lost_message(settings, queued, django_capture_on_commit_callbacks):
    another_training_claimed_by("busy", django_capture_on_commit_callbacks)
    backdate(queued, settings.TRAINING_STALE_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=False):
        assert services.training_jobs_recover(worker="idle") == [queued.pk]


def test_a_lost_message_is_sent_again_a_bounded_number_of_times_then_the_training_fails(settings, queued, django_capture_on_commit_callbacks):
    settings.TRAINING_MAX_ATTEMPTS = 2
    stale = settings.TRAINING_STALE_SECONDS + 1
    backdate(queued, stale)
    for _send in range(2):
        with django_capture_on_commit_callbacks(execute=False):
            assert services.training_jobs_recover(worker="w") == [queued.pk]
        TrainingJob.objects.filter(adapter_version=queued).update(requeued_at=timezone.now() - timedelta(seconds=stale))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.training_jobs_recover(worker="w") == []
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.FAILED
    assert queued.failure_reason_shown.startswith("The training never reached a training worker, though it was sent 3 times")


def test_a_broker_that_refuses_a_lost_message_leaves_the_training_waiting(settings, queued, monkeypatch, django_capture_on_commit_callbacks):
    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(train_adapter_version, "delay", refuse)
    backdate(queued, settings.TRAINING_STALE_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.training_jobs_recover(worker="w") == [queued.pk]
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.QUEUED  # sent again on a later pass, once the broker answers
    assert TrainingJob.objects.get(adapter_version=queued).lost_message_resends == 0


def test_a_broker_that_refuses_the_task_fails_the_training_with_a_sentence(client, monkeypatch, django_capture_on_commit_callbacks):
    artist, _works = opted_in_artist(4)
    client.force_login(artist.user)

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(train_adapter_version, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("generation:train"), {"preset": "quick"})
    assert response.status_code == 302
    version = AdapterVersion.objects.get(style__artist=artist)
    assert version.status == AdapterVersion.Status.FAILED
    assert version.failure_reason_shown.startswith("The training could not be queued")
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(reverse("generation:train"), {"preset": "quick"}).status_code == 302
    assert AdapterVersion.objects.filter(style__artist=artist, status=AdapterVersion.Status.QUEUED).count() == 1


@pytest.mark.django_db(transaction=True)  # the task is sent on commit, as in production, before the answer is made
def test_a_training_the_queue_refused_is_answered_as_refused_by_the_api_and_the_page(api_client_for, client, monkeypatch):
    artist, _works = opted_in_artist(4)

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(train_adapter_version, "delay", refuse)
    sentence = "The training could not be queued (the task queue did not answer); start it again in a moment."
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"] == {"code": "not_queued", "message": sentence}
    assert AdapterVersion.objects.get(style__artist=artist).status == AdapterVersion.Status.FAILED

    client.force_login(artist.user)
    page = client.post(reverse("generation:train"), {"preset": "quick"}, follow=True).content.decode()
    assert sentence in page and "Training queued" not in page
    assert AdapterVersion.objects.filter(style__artist=artist, status=AdapterVersion.Status.FAILED).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_training_that_failed_at_once_for_another_cause_is_still_answered_as_started(api_client_for, monkeypatch):
    artist, _works = opted_in_artist(4)

    def taken_and_failed_at_once(version_id):  # a worker quicker than the answer, failing on its own cause
        job = services.training_job_claim(adapter_version_id=version_id, worker="quick")
        services.training_job_fail(job=job, reason="The dataset could not be read.")

    monkeypatch.setattr(train_adapter_version, "delay", taken_and_failed_at_once)
    response = api_client_for(artist.user).post(reverse("api-style-train"), {"preset": "quick"}, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "failed" and response.json()["failure_reason"] == "The dataset could not be read."


def test_the_queue_position_and_eta_count_every_training_ahead_in_a_fixed_number_of_queries(django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.selectors import DEFAULT_SECONDS_PER_STEP, training_queue_state

    queue = trainings_waiting(5, django_capture_on_commit_callbacks)
    services.training_job_claim(adapter_version_id=queue[0].pk, worker="a")
    TrainingJob.objects.filter(adapter_version=queue[0]).update(step=4)

    counts = []
    for position, version in enumerate(queue, start=1):
        with CaptureQueriesContext(connection) as queries:
            state = training_queue_state(adapter_version=AdapterVersion.objects.select_related("job").get(pk=version.pk))
        if position > 1:  # the waiting ones, whose page asks
            counts.append(len(queries))
        steps_left = 12 * position - 4  # quick is 12 steps here; the first has done 4
        assert state[:2] == (position, steps_left * DEFAULT_SECONDS_PER_STEP) and not state.no_worker_taking
    assert len(set(counts)) == 1, counts


def test_the_base_is_fingerprinted_before_a_training_start_takes_any_lock(monkeypatch, django_capture_on_commit_callbacks):
    from django.db import connection

    from generation import base_models

    artist, _works = opted_in_artist(4)
    depth_outside = len(connection.atomic_blocks)  # the test's own transaction
    depths = []
    fingerprint = base_models.folder_fingerprint

    def watched(path):
        depths.append(len(connection.atomic_blocks))
        return fingerprint(path)

    monkeypatch.setattr(services, "folder_fingerprint", watched)
    monkeypatch.setattr(base_models, "folder_fingerprint", watched)
    with django_capture_on_commit_callbacks(execute=False):
        services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    assert depths and depths[0] == depth_outside  # hashed outside; the call inside finds it cached


def test_the_eta_counts_as_many_trainings_at_a_time_as_are_running(settings, django_capture_on_commit_callbacks):
    from generation.selectors import DEFAULT_SECONDS_PER_STEP, training_queue_state

    queue = trainings_waiting(5, django_capture_on_commit_callbacks)
    for version, worker, step in ((queue[0], "a", 10), (queue[1], "b", 4)):  # two workers, 2 and 8 steps left
        services.training_job_claim(adapter_version_id=version.pk, worker=worker)
        TrainingJob.objects.filter(adapter_version=version).update(step=step)

    def state(version):
        return training_queue_state(adapter_version=AdapterVersion.objects.select_related("job").get(pk=version.pk))

    # The third goes to the worker free after 2 steps, the fourth to the other (8), the fifth after the third (14).
    assert [state(version)[:2] for version in queue[2:]] == [
        (3, (2 + 12) * DEFAULT_SECONDS_PER_STEP), (4, (8 + 12) * DEFAULT_SECONDS_PER_STEP), (5, (14 + 12) * DEFAULT_SECONDS_PER_STEP),
    ]
    # Worker "b" is gone: its training waits in its place in line, and one worker is left.
    go_silent(TrainingJob.objects.get(adapter_version=queue[1]), settings.TRAINING_STALE_SECONDS + 1)
    assert state(queue[2])[:2] == (3, (2 + 8 + 12) * DEFAULT_SECONDS_PER_STEP)


def test_the_queue_rate_leaves_out_resumed_trainings(django_capture_on_commit_callbacks):
    from generation.selectors import seconds_per_step_estimate

    artist, _works = opted_in_artist(4)
    whole, resumed = ready_version(artist), ready_version(artist)
    AdapterVersion.objects.filter(pk=whole.pk).update(
        metrics={"steps": 400, "seconds": 100.0, "resumed_from_step": 0}, finished_at=timezone.now() - timedelta(hours=1)
    )
    # Its seconds are the last run's alone: 4 steps after a resume at 396.
    AdapterVersion.objects.filter(pk=resumed.pk).update(
        metrics={"steps": 400, "seconds": 3.0, "resumed_from_step": 396}, finished_at=timezone.now()
    )
    assert seconds_per_step_estimate(base_model=whole.base_model) == 0.25


def test_a_training_running_out_of_turn_is_ahead_in_line(django_capture_on_commit_callbacks):
    from generation.selectors import DEFAULT_SECONDS_PER_STEP, training_queue_state

    queue = trainings_waiting(2, django_capture_on_commit_callbacks)
    services.training_job_claim(adapter_version_id=queue[1].pk, worker="a")  # the first one's message was lost

    assert training_queue_state(adapter_version=AdapterVersion.objects.select_related("job").get(pk=queue[0].pk))[:2] == (
        2, 24 * DEFAULT_SECONDS_PER_STEP
    )


@pytest.mark.parametrize("choice", ["unpublish", "roll back"])
def test_a_choice_made_during_a_training_stands_when_it_finishes(settings, client_for, django_capture_on_commit_callbacks, choice):
    artist, _works = opted_in_artist(4)
    older = ready_version(artist)  # published
    with django_capture_on_commit_callbacks(execute=False):
        version = services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    job = services.training_job_claim(adapter_version_id=version.pk, worker="a")
    panel = client_for(artist.user).get(reverse("generation:job_panel", args=[version.pk])).content.decode()
    assert "goes live when ready" in panel
    if choice == "unpublish":
        services.style_unpublish(style=older.style)
    else:
        services.adapter_version_publish(adapter_version=older)
    panel = client_for(artist.user).get(reverse("generation:job_panel", args=[version.pk])).content.decode()
    assert "goes live when ready" not in panel
    with django_capture_on_commit_callbacks(execute=True):
        services.training_job_finish(job=job, result=finished_result(adapter_dir(version)), adapter_root=settings.ADAPTER_ROOT)
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.READY and not version.publish_when_ready
    assert version.style.published_version_id == (None if choice == "unpublish" else older.pk)
    # The next training, started after the choice, goes live as asked.
    with django_capture_on_commit_callbacks(execute=False):
        later = services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    job = services.training_job_claim(adapter_version_id=later.pk, worker="a")
    with django_capture_on_commit_callbacks(execute=True):
        services.training_job_finish(job=job, result=finished_result(adapter_dir(later)), adapter_root=settings.ADAPTER_ROOT)
    assert AdapterVersion.objects.get(pk=later.pk).style.published_version_id == later.pk


def test_a_run_cancelled_while_silent_leaves_nothing_behind_when_it_ends(settings, queued, django_capture_on_commit_callbacks):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)  # alive, but its last save took longer than that
    with django_capture_on_commit_callbacks(execute=True):
        services.training_cancel(adapter_version=queued)
    result = finished_result(adapter_dir(queued))  # the run saves its adapter all the same
    with django_capture_on_commit_callbacks(execute=True):
        version = services.training_job_finish(job=job, result=result, adapter_root=settings.ADAPTER_ROOT)
    assert version.status == AdapterVersion.Status.CANCELLED and not adapter_dir(queued).exists()


def test_the_retry_bound_voids_the_last_runs_claim(settings, queued, django_capture_on_commit_callbacks):
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    TrainingJob.objects.filter(pk=job.pk).update(attempts=settings.TRAINING_MAX_ATTEMPTS)
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
    assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is None
    run = JobReporter(job)
    run.on_progress(5, 12, 0.3, 1.0)  # its write finds the claim void
    with pytest.raises(TrainingAbandoned):
        run.should_cancel()
    assert TrainingJob.objects.get(pk=job.pk).step == 0
    with django_capture_on_commit_callbacks(execute=True):
        version = services.training_job_finish(job=job, result=finished_result(adapter_dir(queued)), adapter_root=settings.ADAPTER_ROOT)
    assert version.status == AdapterVersion.Status.FAILED and version.weights_path == ""


def test_a_linked_adapter_root_finishes_like_any_other(settings, queued, tmp_path, django_capture_on_commit_callbacks):
    (tmp_path / "big-volume").mkdir()
    (tmp_path / "adapters-link").symlink_to(tmp_path / "big-volume")
    settings.ADAPTER_ROOT = tmp_path / "adapters-link"
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    result = finished_result(adapter_dir(queued).resolve())  # train_lora reports the resolved path
    with django_capture_on_commit_callbacks(execute=True):
        version = services.training_job_finish(job=job, result=result, adapter_root=settings.ADAPTER_ROOT)
    assert version.status == AdapterVersion.Status.READY
    assert version.weights_path == f"style-{queued.style_id}/v{queued.number}/pytorch_lora_weights.safetensors"


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_keeps_a_silent_run_alive(settings, queued):
    from generation.training import Heartbeat

    settings.TRAINING_STALE_SECONDS = 4  # a beat every second
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    go_silent(job, 3)
    run = JobReporter(job)
    with Heartbeat(run):
        time.sleep(1.5)  # the loop says nothing: loading a large base, say
    assert TrainingJob.objects.get(pk=job.pk).heartbeat_at > timezone.now() - timedelta(seconds=1)
    assert services.training_jobs_recover() == []

    settings.TRAINING_MAX_SILENCE_SECONDS = 1  # now the loop is stuck: the heartbeat stops, the run goes stale
    go_silent(job, 3)
    with Heartbeat(run):
        time.sleep(1.5)
    assert TrainingJob.objects.get(pk=job.pk).heartbeat_at < timezone.now() - timedelta(seconds=2)


@pytest.mark.django_db(transaction=True)
def test_a_restarted_worker_leaves_alone_what_it_claimed_since_it_started(settings, queued):
    started_at = timezone.now()
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")  # a redelivered task, say
    assert services.training_jobs_recover(worker="a", restarted_at=started_at) == []
    assert TrainingJob.objects.get(pk=job.pk).heartbeat_at is not None


def test_the_recovery_watch_tries_its_start_up_pass_again_after_a_failure(monkeypatch):
    from django.db import OperationalError as DatabaseDown

    from generation import tasks

    class Stop(Exception):
        pass

    passes = []

    def recover(worker, restarted_at=None):
        passes.append((worker, restarted_at is not None))
        if len(passes) == 1:
            raise DatabaseDown("the database is not up yet")
        return []

    def sleep(seconds):
        if len(passes) == 3:
            raise Stop

    monkeypatch.setattr(services, "training_jobs_recover", recover)
    monkeypatch.setattr(tasks.time, "sleep", sleep)
    with pytest.raises(Stop):
        tasks._watch_for_interrupted_trainings("training@host", timezone.now())
    assert passes == [("training@host", True), ("training@host", True), ("training@host", False)]


def test_what_a_run_writes_after_its_version_ended_without_it_is_removed(settings, queued, django_capture_on_commit_callbacks):
    settings.RETIRED_ADAPTER_FILES = "delete"
    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    TrainingJob.objects.filter(pk=job.pk).update(claim_token="")  # the retry bound voided the claim
    for status in (AdapterVersion.Status.FAILED, AdapterVersion.Status.RETIRED):
        AdapterVersion.objects.filter(pk=queued.pk).update(status=status)
        result = finished_result(adapter_dir(queued))
        with django_capture_on_commit_callbacks(execute=True):
            services.training_job_finish(job=job, result=result, adapter_root=settings.ADAPTER_ROOT)
        assert not adapter_dir(queued).exists(), status


def test_a_failure_removes_what_the_run_wrote_and_nothing_else(settings, queued, django_capture_on_commit_callbacks):
    from generation.training import run_training_job

    settings.TRAINING_PRESET_OVERRIDES = {"quick": {"steps": 2, "preview_every": 0}}
    adapter_dir(queued).mkdir(parents=True)
    (adapter_dir(queued) / "notes.txt").write_text("the operator's")  # the loop refuses to save over it
    with django_capture_on_commit_callbacks(execute=True):
        failed = run_training_job(adapter_version_id=queued.pk, worker="a")
    assert failed.status == AdapterVersion.Status.FAILED and "notes.txt" in failed.failure_reason_shown
    assert (adapter_dir(queued) / "notes.txt").read_text() == "the operator's"


def test_the_retry_bound_removes_the_dead_runs_checkpoint(settings, queued, django_capture_on_commit_callbacks):
    from generation.storage import training_work_dir

    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    state = training_work_dir(queued) / "state"
    state.mkdir(parents=True)
    (state / "checkpoint.pt").write_bytes(b"lora")
    TrainingJob.objects.filter(pk=job.pk).update(attempts=settings.TRAINING_MAX_ATTEMPTS)
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.training_job_claim(adapter_version_id=queued.pk, worker="b") is None
    assert not state.exists()


def test_a_resumed_job_whose_checkpoint_cannot_be_used_starts_its_record_afresh(settings, queued, monkeypatch, django_capture_on_commit_callbacks):
    from generation.training import run_training_job

    job = services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    run = JobReporter(job)
    for step in range(1, 8):
        run.last_report = 0.0
        run.on_progress(step, 12, 1.0 / step, 5.0)
    run.on_checkpoint(4)
    TrainingJob.objects.filter(pk=job.pk).update(previews=[{"step": 3, "prompt": "p", "seed": 0, "file": "step-000003-0.png"}])
    state = training_work_dir(queued) / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")  # the database says step 4; the file cannot say anything
    go_silent(job, settings.TRAINING_STALE_SECONDS + 1)
    seen = []
    on_progress = JobReporter.on_progress

    def record_first_report(reporter, step, total, loss, eta_seconds):
        if not seen:
            seen.append(TrainingJob.objects.values("step", "resumed_from_step", "losses", "previews").get(pk=job.pk))
        on_progress(reporter, step, total, loss, eta_seconds)

    monkeypatch.setattr(JobReporter, "on_progress", record_first_report)
    with django_capture_on_commit_callbacks(execute=True):
        finished = run_training_job(adapter_version_id=queued.pk, worker="b")
    assert seen[0] == {"step": 0, "resumed_from_step": 0, "losses": [], "previews": []}
    assert finished.status == AdapterVersion.Status.READY and finished.job.resumed_from_step == 0
    assert [step for step, _loss in finished.job.losses] == sorted({step for step, _loss in finished.job.losses})
    assert finished.metrics["resumed_from_step"] == 0


def test_a_database_that_drops_out_mid_run_keeps_the_checkpoint_and_the_job_resumes(settings, queued, monkeypatch, django_capture_on_commit_callbacks):
    from django.db import OperationalError as DatabaseDown

    from generation.training import run_training_job

    queued.hyperparameters.update(steps=8, checkpoint_every=4, preview_every=0)
    queued.save(update_fields=["hyperparameters"])
    on_progress = JobReporter.on_progress

    def outage_at_step_six(reporter, step, total, loss, eta_seconds):
        if step == 6:
            raise DatabaseDown("server closed the connection unexpectedly")
        on_progress(reporter, step, total, loss, eta_seconds)

    monkeypatch.setattr(JobReporter, "on_progress", outage_at_step_six)
    with pytest.raises(DatabaseDown):  # raised on, so that the task's autoretry applies
        run_training_job(adapter_version_id=queued.pk, worker="a")
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.TRAINING and queued.failure_reason == ""
    assert (training_work_dir(queued) / "state" / CHECKPOINT_NAME).is_file()

    monkeypatch.setattr(JobReporter, "on_progress", on_progress)
    go_silent(TrainingJob.objects.get(adapter_version=queued), settings.TRAINING_STALE_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        finished = run_training_job(adapter_version_id=queued.pk, worker="b")
    assert finished.status == AdapterVersion.Status.READY
    assert finished.job.resumed_from_step == 4


def test_a_training_no_worker_takes_says_so_instead_of_an_eta(settings, api_client_for, client_for, queued):
    user = queued.style.artist.user
    state = api_client_for(user).get(reverse("api-adapter-version", args=[queued.pk])).json()
    assert state["queue_position"] == 1 and state["eta_seconds"] > 0 and state["waiting_for_worker"] is False
    backdate(queued, 2 * settings.TRAINING_STALE_SECONDS + 1)
    state = api_client_for(user).get(reverse("api-adapter-version", args=[queued.pk])).json()
    assert state["queue_position"] == 1 and state["eta_seconds"] is None and state["waiting_for_worker"] is True
    page = client_for(user).get(reverse("generation:style")).content.decode()
    assert "no training worker has taken it yet" in page and "s left" not in page


def test_every_training_in_line_behind_one_no_worker_takes_says_so_instead_of_an_eta(settings, django_capture_on_commit_callbacks):
    from generation.presentation import job_state

    def state(version):
        return job_state(AdapterVersion.objects.select_related("job", "snapshot", "base_model").get(pk=version.pk))

    first, second = trainings_waiting(2, django_capture_on_commit_callbacks)
    assert [state(v)["waiting_for_worker"] for v in (first, second)] == [False, False]
    assert state(second)["queue_position"] == 2 and state(second)["eta_seconds"] > 0
    backdate(first, 2 * settings.TRAINING_STALE_SECONDS + 1)
    assert [state(v)["waiting_for_worker"] for v in (first, second)] == [True, True]
    assert state(second)["queue_position"] == 2 and state(second)["eta_seconds"] is None

    # The first is taken, then its worker dies: nothing takes it again, so the second still waits for a worker.
    services.training_job_claim(adapter_version_id=first.pk, worker="a")
    assert state(second)["waiting_for_worker"] is False and state(second)["eta_seconds"] > 0
    go_silent(TrainingJob.objects.get(adapter_version=first), 2 * settings.TRAINING_STALE_SECONDS + 1)
    assert state(second)["waiting_for_worker"] is True and state(second)["eta_seconds"] is None

    # A worker that has just finished a training is about to take the next, however long that one waited.
    third, fourth = trainings_waiting(2, django_capture_on_commit_callbacks)
    for version in (third, fourth):
        backdate(version, 2 * settings.TRAINING_STALE_SECONDS + 1)
    services.training_cancel(adapter_version=first)
    services.training_cancel(adapter_version=second)
    assert state(third)["waiting_for_worker"] is True
    job = services.training_job_claim(adapter_version_id=third.pk, worker="b")
    with django_capture_on_commit_callbacks(execute=True):
        services.training_job_finish(job=job, result=finished_result(adapter_dir(third)), adapter_root=settings.ADAPTER_ROOT)
    assert state(fourth)["waiting_for_worker"] is False and state(fourth)["eta_seconds"] > 0


def test_a_cancel_its_worker_died_before_hearing_is_not_promised_to_go_on(settings, client_for, queued):
    services.training_job_claim(adapter_version_id=queued.pk, worker="a")
    services.training_cancel(adapter_version=queued)  # asked while alive; then the worker dies
    go_silent(TrainingJob.objects.get(adapter_version=queued), settings.TRAINING_STALE_SECONDS + 1)
    client = client_for(queued.style.artist.user)
    panel = client.get(reverse("generation:job_panel", args=[queued.pk])).content.decode()
    assert "goes on from its last checkpoint" not in panel
    assert "its worker stopped before hearing the cancel; press Cancel again to end it now" in panel
    assert "goes live when ready" not in panel and "cancelling…" not in panel
    page = client.post(reverse("generation:cancel", args=[queued.pk]), follow=True).content.decode()
    assert "Cancelled." in page
    queued.refresh_from_db()
    assert queued.status == AdapterVersion.Status.CANCELLED

"""Withdrawals racing training starts and each other, on PostgreSQL (SQLite runs one writer at a time).

Each test holds one transaction open at the racy moment, starts the other in a thread, and checks that
no training is ever frozen with a withdrawn work and left unretired.
"""

import threading
import time
from contextlib import contextmanager
from unittest import mock

import pytest
from django.db import connection, connections

from generation import services
from generation.models import AdapterVersion, Style
from generation.storage import adapter_dir
from licensing import hooks
from licensing.services import work_withdraw

from .conftest import finished_result, opted_in_artist, ready_version

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("generation_roots", "training_terms")]


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks only race on PostgreSQL; CI runs these there")


def in_thread(function, name=None):
    box = {}

    def run():
        try:
            box["result"] = function()
        except BaseException as error:  # reported by the test's assertions
            box["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, box


@contextmanager
def held_open(action, *, pause_after, replace):
    """Run `action` in a thread that waits once it has called `pause_after` (its locks taken, nothing committed)
    until the block ends; `replace(wrapper)` is the context that puts the waiting wrapper in its place. Yields
    the thread's result box."""
    reached, release = threading.Event(), threading.Event()

    def run_and_wait(*args, **kwargs):
        result = pause_after(*args, **kwargs)
        reached.set()
        release.wait(20)
        return result

    with replace(run_and_wait):
        thread, box = in_thread(action)
        assert reached.wait(20)
        try:
            yield box
        finally:
            release.set()
            thread.join(20)


def withdrawal_held_open(work, actor):
    """Withdraw `work`, held open after its receiver has run (recorded, not yet committed)."""
    return held_open(lambda: work_withdraw(work=work, actor=actor), pause_after=hooks.withdrawal_receiver(),
                     replace=hooks.replaced_withdrawal_receiver)


def training_finish_held_open(settings, job, version, inside):
    """Finish `job`, held open once the services' `inside` has run (the version locked, nothing committed)."""
    return held_open(
        lambda: services.training_job_finish(job=job, result=finished_result(adapter_dir(version)), adapter_root=settings.ADAPTER_ROOT),
        pause_after=getattr(services, inside), replace=lambda wrapper: mock.patch.object(services, inside, wrapper),
    )


def test_a_training_started_during_a_withdrawal_never_holds_the_work():
    artist, works = opted_in_artist(5)
    with withdrawal_held_open(works[0], artist.user) as withdrawal_box:
        start, start_box = in_thread(lambda: services.style_training_start(artist=artist, actor=artist.user, preset="quick"))
        start.join(1.5)
        assert start.is_alive(), "the training start must wait for the withdrawal"
    start.join(20)
    assert "error" not in withdrawal_box and "error" not in start_box, (withdrawal_box, start_box)
    version = AdapterVersion.objects.get(pk=start_box["result"].pk)
    assert works[0].pk not in version.snapshot.work_ids
    assert version.status == AdapterVersion.Status.QUEUED


def test_two_withdrawals_at_once_leave_no_training_on_either_work():
    artist, works = opted_in_artist(6)
    ready_version(artist)
    receiver = hooks.withdrawal_receiver()
    first_done, release = threading.Event(), threading.Event()

    def receiver_holding_the_first(work_ids, event_ids):
        receiver(work_ids, event_ids)  # the first retires v1 and queues a retrain (v2)
        if work_ids == [works[0].pk]:
            first_done.set()
            release.wait(20)

    with hooks.replaced_withdrawal_receiver(receiver_holding_the_first):
        first, first_box = in_thread(lambda: work_withdraw(work=works[0], actor=artist.user))
        assert first_done.wait(20)
        second, second_box = in_thread(lambda: work_withdraw(work=works[1], actor=artist.user))
        time.sleep(1.5)
        release.set()
        first.join(20)
        second.join(20)
    assert "error" not in first_box and "error" not in second_box, (first_box, second_box)
    statuses = dict(AdapterVersion.objects.values_list("number", "status"))
    assert statuses == {1: "retired", 2: "retired", 3: "queued"}
    latest = AdapterVersion.objects.get(number=3)
    assert not {works[0].pk, works[1].pk} & set(latest.snapshot.work_ids)
    assert latest.publish_when_ready  # it replaces the published v1


def test_a_withdrawal_during_a_training_start_retires_it_without_a_deadlock(monkeypatch):
    artist, works = opted_in_artist(5)
    ready_version(artist)
    created, release = threading.Event(), threading.Event()

    def enqueue_slowly(version_id):
        created.set()
        release.wait(20)  # the new version exists, not yet committed

    monkeypatch.setattr(services, "_enqueue_training", enqueue_slowly)
    start, start_box = in_thread(lambda: services.style_training_start(artist=artist, actor=artist.user, preset="quick"))
    assert created.wait(20)
    withdrawal, withdrawal_box = in_thread(lambda: work_withdraw(work=works[0], actor=artist.user))
    withdrawal.join(1.5)
    release.set()
    start.join(20)
    withdrawal.join(20)
    assert "error" not in start_box and "error" not in withdrawal_box, (start_box, withdrawal_box)
    started = AdapterVersion.objects.get(pk=start_box["result"].pk)
    assert started.status == AdapterVersion.Status.RETIRED
    retrain = AdapterVersion.objects.get(number=started.number + 1)
    assert works[0].pk not in retrain.snapshot.work_ids


def test_deleting_a_work_while_it_is_withdrawn_elsewhere_does_not_deadlock(monkeypatch):
    from licensing import services as licensing_services

    artist, works = opted_in_artist(4)
    withdraw = licensing_services.works_withdraw
    locked, release = threading.Event(), threading.Event()

    def withdraw_after_a_pause(**kwargs):
        locked.set()  # work_delete holds its locks now
        release.wait(20)
        return withdraw(**kwargs)

    monkeypatch.setattr(licensing_services, "works_withdraw", withdraw_after_a_pause)
    deletion, deletion_box = in_thread(lambda: licensing_services.work_delete(work=works[0], actor=artist.user))
    assert locked.wait(20)
    withdrawal, withdrawal_box = in_thread(lambda: withdraw(works=[works[0]], actor=artist.user))
    time.sleep(1)
    release.set()
    deletion.join(20)
    withdrawal.join(20)
    assert "error" not in deletion_box and "error" not in withdrawal_box, (deletion_box, withdrawal_box)


def test_recovery_and_a_claim_take_their_locks_without_a_deadlock(monkeypatch, settings):
    from datetime import timedelta

    from django.utils import timezone

    from generation.models import TrainingJob

    artist, _works = opted_in_artist(4)
    monkeypatch.setattr(services, "_enqueue_training", lambda version_id: None)
    version = services.style_training_start(artist=artist, actor=artist.user, preset="quick")
    services.training_job_claim(adapter_version_id=version.pk, worker="a")
    TrainingJob.objects.filter(adapter_version=version).update(heartbeat_at=timezone.now() - timedelta(seconds=999))
    between, release = threading.Event(), threading.Event()
    is_active = AdapterVersion.is_active

    def pausing_is_active(self):  # the claim has locked the version and not yet the job
        if threading.current_thread().name == "claimer":
            between.set()
            release.wait(20)
        return is_active.fget(self)

    monkeypatch.setattr(AdapterVersion, "is_active", property(pausing_is_active))
    claimer, claim_box = in_thread(lambda: services.training_job_claim(adapter_version_id=version.pk, worker="b"), "claimer")
    assert between.wait(20)
    recovery, recovery_box = in_thread(services.training_jobs_recover)
    time.sleep(1)
    release.set()
    claimer.join(20)
    recovery.join(20)
    assert "error" not in claim_box and "error" not in recovery_box, (claim_box, recovery_box)
    assert claim_box["result"] is not None


def test_publishing_during_a_withdrawal_never_publishes_the_retired_version():
    artist, works = opted_in_artist(4)
    rollback_target = ready_version(artist, publish=False)
    with withdrawal_held_open(works[0], artist.user) as withdrawal_box:  # the version is retired, not yet committed
        publish, publish_box = in_thread(lambda: services.adapter_version_publish(adapter_version=rollback_target))
        publish.join(1.5)
        assert publish.is_alive(), "the publish must wait for the withdrawal"
    publish.join(20)
    assert "error" not in withdrawal_box, withdrawal_box
    assert "Only a ready version can be published" in str(publish_box.get("error")), publish_box
    rollback_target.refresh_from_db()
    assert rollback_target.status == AdapterVersion.Status.RETIRED
    assert Style.objects.get(pk=rollback_target.style_id).published_version_id is None


def test_a_training_that_goes_live_during_a_withdrawal_is_unpublished_and_its_retrain_goes_live(monkeypatch, settings):
    artist, works = opted_in_artist(5)
    monkeypatch.setattr(services, "_enqueue_training", lambda version_id: None)
    version = services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    job = services.training_job_claim(adapter_version_id=version.pk, worker="w")
    # Held once published, not yet committed.
    with training_finish_held_open(settings, job, version, inside="adapter_version_publish") as finish_box:
        withdrawal, withdrawal_box = in_thread(lambda: work_withdraw(work=works[0], actor=artist.user))
        withdrawal.join(1.5)  # waits for the finishing training's lock on the version
    withdrawal.join(20)
    assert "error" not in finish_box and "error" not in withdrawal_box, (finish_box, withdrawal_box)
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.RETIRED
    assert Style.objects.get(pk=version.style_id).published_version_id is None
    retrain = AdapterVersion.objects.get(number=version.number + 1)
    assert retrain.publish_when_ready  # it replaces a version that was live


@pytest.mark.parametrize("choice", ["unpublish", "roll back"])
def test_a_choice_made_while_a_training_finishes_stands_without_a_deadlock(monkeypatch, settings, choice):
    artist, _works = opted_in_artist(5)
    older = ready_version(artist)  # published
    monkeypatch.setattr(services, "_enqueue_training", lambda version_id: None)
    version = services.style_training_start(artist=artist, actor=artist.user, preset="quick", publish_when_ready=True)
    job = services.training_job_claim(adapter_version_id=version.pk, worker="w")
    # Held at its checksum, before it publishes.
    with training_finish_held_open(settings, job, version, inside="sha256_file") as finish_box:
        if choice == "unpublish":
            chosen, chosen_box = in_thread(lambda: services.style_unpublish(style=older.style))
        else:
            chosen, chosen_box = in_thread(lambda: services.adapter_version_publish(adapter_version=older))
        chosen.join(1.5)
        assert chosen.is_alive(), "the choice must wait for the finishing training's lock"
    chosen.join(20)
    assert "error" not in finish_box and "error" not in chosen_box, (finish_box, chosen_box)
    version.refresh_from_db()
    assert version.status == AdapterVersion.Status.READY
    expected = None if choice == "unpublish" else older.pk
    assert Style.objects.get(pk=version.style_id).published_version_id == expected


def test_a_training_started_during_a_takedown_does_not_go_live_once_it_is_lifted():
    from django.db import transaction

    artist, _works = opted_in_artist(5)
    style = ready_version(artist).style
    taken, release = threading.Event(), threading.Event()

    def take_down_and_hold():
        with transaction.atomic():
            services.style_take_down(style=style)
            taken.set()
            release.wait(20)

    takedown, takedown_box = in_thread(take_down_and_hold)
    assert taken.wait(20)
    start, start_box = in_thread(lambda: services.style_training_start(artist=artist, actor=artist.user, preset="quick"))
    start.join(1.5)
    assert start.is_alive(), "the training start must wait for the takedown"
    release.set()
    takedown.join(20)
    start.join(20)
    assert "error" not in takedown_box and "error" not in start_box, (takedown_box, start_box)
    version = AdapterVersion.objects.get(pk=start_box["result"].pk)
    assert version.publish_when_ready is False  # started on a style taken down: a lift publishes nothing

"""Consent is append-only and versioned; snapshots are frozen and fingerprinted; withdrawal calls the hook once."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, transaction

from licensing import hooks, services
from licensing.models import ConsentEvent, ConsentTerms, DatasetSnapshot, ImmutableRowError, Work, snapshot_fingerprint
from licensing.selectors import works_needing_reconsent
from tests.factories import ConsentTermsFactory, make_work
from tests.licensing import images
from tests.licensing.conftest import Receiver, media_files

pytestmark = pytest.mark.django_db


def test_opt_in_needs_a_caption_and_no_do_not_train_signal(artist):
    blank = make_work(artist, seed=1, caption="")
    with pytest.raises(services.LicensingError, match="Write a caption first."):
        services.work_opt_in(work=blank, actor=artist.user)
    signed = services.work_upload(artist=artist, data=images.png_with_xmp("DMI-PROHIBITED"), caption="x").work
    with pytest.raises(services.LicensingError, match="plus:DataMining DMI-PROHIBITED"):
        services.work_opt_in(work=signed, actor=artist.user)
    assert ConsentEvent.objects.count() == 0


def test_opt_in_is_idempotent_and_history_records_every_change(artist, withdrawal_receiver):
    work = make_work(artist)
    first = services.work_opt_in(work=work, actor=artist.user)
    assert services.work_opt_in(work=work, actor=artist.user) == first
    services.work_withdraw(work=work, actor=artist.user, reason="changed my mind")
    assert services.work_withdraw(work=work, actor=artist.user) is None  # nothing to withdraw
    services.work_opt_in(work=work, actor=artist.user)
    kinds = list(ConsentEvent.objects.filter(work=work).order_by("id").values_list("kind", flat=True))
    assert kinds == ["granted", "withdrawn", "granted"]
    work.refresh_from_db()
    assert work.current_consent.kind == "granted" and work.is_opted_in
    assert len(withdrawal_receiver.calls) == 1
    # As the admin names it: numbered as the consent history numbers it, the work named as a work.
    assert str(work.current_consent).startswith(f"Event #{work.current_consent.pk}: Granted, work #{work.pk} (")


def test_consent_events_cannot_be_edited_or_deleted(artist):
    event = services.work_opt_in(work=make_work(artist), actor=artist.user)
    event.reason = "rewritten"
    with pytest.raises(ImmutableRowError):
        event.save()
    with pytest.raises(ImmutableRowError):
        event.delete()
    with pytest.raises(ImmutableRowError):
        ConsentEvent.objects.filter(pk=event.pk).update(kind="withdrawn")
    with pytest.raises(ImmutableRowError):
        ConsentEvent.objects.all().delete()
    # and the database itself refuses, even past the ORM
    with pytest.raises(DatabaseError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE licensing_consentevent SET kind = 'withdrawn' WHERE id = %s", [event.pk])
    assert ConsentEvent.objects.get(pk=event.pk).kind == "granted"
    if connection.vendor == "postgresql":  # PostgreSQL's trigger refuses DELETE too (SQLite's test flush needs it)
        with pytest.raises(DatabaseError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM licensing_consentevent WHERE id = %s", [event.pk])
        assert ConsentEvent.objects.filter(pk=event.pk).exists()


def test_new_terms_need_reconsent_for_future_training_but_keep_past_consent(artist, consent_terms):
    works = [make_work(artist, seed=seed) for seed in (1, 2, 3)]
    services.works_opt_in_eligible(artist=artist, actor=artist.user)
    before = services.dataset_snapshot_create(artist=artist)
    assert before.work_count == 3
    v2 = ConsentTermsFactory(kind="training", version=2)
    assert ConsentTerms.current() == v2
    assert sorted(works_needing_reconsent(artist=artist, terms=v2).values_list("pk", flat=True)) == sorted(w.pk for w in works)
    with pytest.raises(services.LicensingError, match="No works are opted in under the current consent terms"):
        services.dataset_snapshot_create(artist=artist)
    services.work_opt_in(work=works[0], actor=artist.user)
    after = services.dataset_snapshot_create(artist=artist)
    assert after.work_ids == [works[0].pk] and after.terms == v2
    before.refresh_from_db()
    assert before.work_count == 3  # past consent is not voided


def test_snapshot_holds_only_opted_in_eligible_works_and_its_fingerprint_is_stable(artist, withdrawal_receiver):
    a, b, c = (make_work(artist, seed=seed, caption=f"caption {seed}") for seed in (1, 2, 3))
    make_work(artist, seed=4, caption="")  # not eligible
    services.works_opt_in_eligible(artist=artist, actor=artist.user)
    services.work_withdraw(work=c, actor=artist.user)
    first = services.dataset_snapshot_create(artist=artist)
    second = services.dataset_snapshot_create(artist=artist)
    assert first.pk != second.pk and first.fingerprint == second.fingerprint
    assert [entry["work_id"] for entry in first.entries] == [a.pk, b.pk]
    assert first.entries[0] == {"work_id": a.pk, "sha256": a.sha256, "caption": "caption 1",
                                "consent_event_id": Work.objects.get(pk=a.pk).current_consent_id}
    assert first.fingerprint == snapshot_fingerprint(list(reversed(first.entries)))  # order does not matter
    services.work_update(work=a, caption="caption one")
    third = services.dataset_snapshot_create(artist=artist)
    assert third.fingerprint != first.fingerprint
    first.entries = []
    with pytest.raises(ImmutableRowError):
        first.save()
    with pytest.raises(ImmutableRowError):
        DatasetSnapshot.objects.filter(pk=second.pk).update(work_count=0)
    with pytest.raises(ImmutableRowError):
        second.delete()


def test_near_duplicates_are_flagged_and_exact_duplicates_reported(artist, other_artist, media_root):
    original = services.work_upload(artist=artist, data=images.good_png(1), caption="x").work
    again = services.work_upload(artist=artist, data=images.good_png(1), caption="y")
    assert again.status == "duplicate" and again.work == original
    assert Work.objects.count() == 1 and len(media_files(media_root)) == 2
    resaved = images.encode(images.pattern(1), "JPEG", quality=80)
    near = services.work_upload(artist=artist, data=resaved, caption="z")
    assert near.status == "created" and near.work.near_duplicate_of_id == original.pk
    assert "looks very like work #%d" % original.pk in near.warnings[0]
    # another artist's identical file is a different work
    assert services.work_upload(artist=other_artist, data=images.good_png(1)).status == "created"


@pytest.mark.django_db(transaction=True)
def test_withdrawal_hook_fires_once_inside_the_transaction(artist):
    receiver = Receiver()
    works = [make_work(artist, seed=seed) for seed in (1, 2, 3)]
    services.works_opt_in_eligible(artist=artist, actor=artist.user)
    with hooks.replaced_withdrawal_receiver(receiver):
        assert not connection.in_atomic_block
        event = services.work_withdraw(work=works[0], actor=artist.user)
        assert receiver.calls == [{"work_ids": [works[0].pk], "event_ids": [event.pk], "in_atomic_block": True}]
        services.work_delete(work=works[1], actor=artist.user)
        assert len(receiver.calls) == 2 and receiver.calls[1]["work_ids"] == [works[1].pk]
        services.work_delete(work=works[0], actor=artist.user)  # already withdrawn: no new withdrawal, no call
        assert len(receiver.calls) == 2
        services.artist_leave(artist=artist, actor=artist.user)
        assert len(receiver.calls) == 3 and receiver.calls[2]["work_ids"] == [works[2].pk]
    assert Work.objects.filter(status="active").count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_rolls_the_withdrawal_back(artist):
    work = make_work(artist)
    services.work_opt_in(work=work, actor=artist.user)
    receiver = Receiver(fail=True)
    with hooks.replaced_withdrawal_receiver(receiver), pytest.raises(RuntimeError):
        services.work_withdraw(work=work, actor=artist.user)
    assert len(receiver.calls) == 1
    assert list(ConsentEvent.objects.values_list("kind", flat=True)) == ["granted"]
    assert Work.objects.get(pk=work.pk).current_consent.kind == "granted"


def test_hook_is_not_called_when_an_outer_transaction_rolls_back(artist, withdrawal_receiver):
    work = make_work(artist)
    services.work_opt_in(work=work, actor=artist.user)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        services.work_withdraw(work=work, actor=artist.user)
        1 / 0
    assert len(withdrawal_receiver.calls) == 1  # called inside, then everything was undone
    assert ConsentEvent.objects.filter(kind="withdrawn").count() == 0


def test_only_one_receiver_may_register():
    def first(work_ids, event_ids):
        pass

    def second(work_ids, event_ids):
        pass

    with hooks.replaced_withdrawal_receiver(None):
        hooks.register_withdrawal_receiver(first)
        hooks.register_withdrawal_receiver(first)  # the same one again is harmless
        with pytest.raises(ImproperlyConfigured, match="exactly one"):
            hooks.register_withdrawal_receiver(second)
        assert hooks.withdrawal_receiver() is first


def test_deleting_a_work_keeps_the_row_and_removes_the_files(artist, media_root, withdrawal_receiver, django_capture_on_commit_callbacks):
    work = make_work(artist)
    services.work_opt_in(work=work, actor=artist.user)
    with django_capture_on_commit_callbacks(execute=True):
        services.work_delete(work=work, actor=artist.user)
    work.refresh_from_db()
    assert work.status == "deleted" and not work.original and work.current_consent.kind == "withdrawn"
    assert media_files(media_root) == []
    # the same file may be uploaded again after deletion
    assert services.work_upload(artist=artist, data=images.good_png(1)).status == "created"


def test_becoming_an_artist_requires_the_agreement(subscriber):
    with pytest.raises(services.LicensingError, match="accept the artist agreement"):
        services.artist_become(user=subscriber, display_name="Ann", slug="ann", accept_agreement=False)
    artist = services.artist_become(user=subscriber, display_name="Ann", slug="ann", accept_agreement=True)
    assert artist.agreement.kind == "artist_agreement" and artist.agreement_accepted_at

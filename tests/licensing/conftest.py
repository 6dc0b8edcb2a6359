import json
from pathlib import Path

import pytest

from licensing.hooks import replaced_withdrawal_receiver
from tests.factories import ArtistFactory, ConsentTermsFactory


@pytest.fixture(autouse=True)
def consent_terms(db):
    """The current training terms and artist agreement (migration data is gone after a flushing test)."""
    ConsentTermsFactory(kind="artist_agreement", version=1)
    return ConsentTermsFactory(kind="training", version=1)


@pytest.fixture
def artist(db):
    return ArtistFactory()


@pytest.fixture
def other_artist(db):
    return ArtistFactory()


class Receiver:
    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail

    def __call__(self, work_ids, event_ids):
        from django.db import connection

        self.calls.append({"work_ids": work_ids, "event_ids": event_ids, "in_atomic_block": connection.in_atomic_block})
        if self.fail:
            raise RuntimeError("generation could not retire the adapters")


@pytest.fixture
def withdrawal_receiver():
    receiver = Receiver()
    with replaced_withdrawal_receiver(receiver):
        yield receiver


def media_files(root):
    return sorted(str(path.relative_to(root)) for path in Path(root).rglob("*") if path.is_file())


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]

"""The base model's fingerprint is hashed once per host, not once per process, and never trusted past a change."""

import json
import logging
import os

import pytest
from generation import base_models
from licensing.services import work_withdraw

from .conftest import opted_in_artist, ready_version


@pytest.fixture
def hashed_files(monkeypatch):
    """The weight files read by the fingerprint, in order."""
    read = []
    real = base_models.sha256_file

    def counting(path):
        read.append(path)
        return real(path)

    monkeypatch.setattr(base_models, "sha256_file", counting)
    return read


@pytest.fixture
def fresh_process():
    """Forget what this process hashed, as a newly started web or worker process has."""
    base_models._folder_fingerprint.cache_clear()
    yield base_models._folder_fingerprint.cache_clear
    base_models._folder_fingerprint.cache_clear()


@pytest.fixture
def small_base(tmp_path):
    folder = tmp_path / "base"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights-1")
    return folder


def test_a_new_process_reads_the_recorded_fingerprint_instead_of_the_weights(settings, tmp_path, small_base, hashed_files, fresh_process):
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    first = base_models.folder_fingerprint(small_base)
    assert len(hashed_files) == 2

    fresh_process()
    assert base_models.folder_fingerprint(small_base) == first
    assert len(hashed_files) == 2  # nothing read again
    assert first in json.loads((settings.DATA_DIR / "base-model-fingerprints.json").read_text()).values()


def test_weights_replaced_with_their_size_and_mtime_kept_are_hashed_again(settings, tmp_path, small_base, hashed_files, fresh_process):
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    weights = small_base / "unet" / "diffusion_pytorch_model.safetensors"
    first = base_models.folder_fingerprint(small_base)
    before = weights.stat()

    weights.write_bytes(b"weights-2")  # same size; then the mtime set back, as cp -p or rsync -t would
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    fresh_process()

    assert base_models.folder_fingerprint(small_base) != first
    assert len(hashed_files) == 4


@pytest.mark.parametrize("record", ["{not json", "[1, 2]", '{"a": 3}'])
def test_an_unreadable_record_is_ignored_and_rewritten(settings, tmp_path, small_base, hashed_files, fresh_process, caplog, record):
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    expected = base_models.folder_fingerprint(small_base)
    fresh_process()
    record_file = settings.DATA_DIR / "base-model-fingerprints.json"
    record_file.write_text(record)
    hashed_files.clear()

    with caplog.at_level(logging.WARNING, logger="generation.base_models"):
        assert base_models.folder_fingerprint(small_base) == expected
    assert len(hashed_files) == 2
    assert expected in json.loads(record_file.read_text()).values()
    if record == "{not json":
        assert "ignoring the base-model fingerprint record" in caplog.text


def test_a_record_that_cannot_be_written_costs_only_a_warning(settings, tmp_path, small_base, hashed_files, fresh_process, caplog):
    (tmp_path / "a-file").write_text("")
    settings.DATA_DIR = tmp_path / "a-file" / "data"  # no folder can be made there
    with caplog.at_level(logging.WARNING, logger="generation.base_models"):
        fingerprint = base_models.folder_fingerprint(small_base)
    assert len(fingerprint) == 64
    assert "could not record the base-model fingerprint" in caplog.text


@pytest.mark.django_db
@pytest.mark.usefixtures("generation_roots", "training_terms")
def test_a_retrain_inside_a_withdrawal_reads_no_weights_in_a_new_process(django_capture_on_commit_callbacks, hashed_files, fresh_process):
    artist, works = opted_in_artist(6)
    version = ready_version(artist)  # hashes the base once on this host
    fresh_process()
    hashed_files.clear()

    with django_capture_on_commit_callbacks(execute=False):
        work_withdraw(work=works[0], actor=artist.user)

    assert version.style.versions.filter(number=2, status="queued").exists()  # the retrain was queued
    assert hashed_files == []  # the transaction held its locks for no hashing

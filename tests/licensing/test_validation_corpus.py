"""Bad files made by the tests, through the API and the import command: refused with the message, nothing stored."""

import io

import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from licensing.models import Work
from tests.licensing import images
from tests.licensing.conftest import json_lines, media_files

pytestmark = pytest.mark.django_db

BAD = images.bad_corpus()
NORMALISED = images.normalised_corpus()


def test_the_corpus_is_big_enough():
    assert len(BAD) >= 30
    assert len({name for name, *_ in BAD}) == len(BAD)


def upload(client, name, data, caption="a caption"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(reverse("works-list"), {"image": SimpleUploadedFile(name, data), "caption": caption}, format="multipart")


@pytest.mark.parametrize("name,data,message,overrides", BAD, ids=[case[0] for case in BAD])
def test_api_refuses_bad_file(api_client_for, artist, media_root, settings, name, data, message, overrides):
    for key, value in overrides.items():
        setattr(settings, key, value)
    response = upload(api_client_for(artist.user), name, data)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert message in error["message"]
    assert Work.objects.count() == 0
    assert media_files(media_root) == []


@pytest.mark.parametrize("name,data,size,pixel", NORMALISED, ids=[case[0] for case in NORMALISED])
def test_api_normalises_to_rgb_and_keeps_the_original(api_client_for, artist, media_root, name, data, size, pixel):
    response = upload(api_client_for(artist.user), name, data)
    assert response.status_code == 201, response.content
    work = Work.objects.get()
    assert (work.width, work.height) == size == (response.json()["width"], response.json()["height"])
    assert work.original.read() == data  # the file as uploaded
    training = Image.open(io.BytesIO(work.training_image.read()))
    assert training.format == "PNG" and training.mode == "RGB" and training.size == size
    if pixel:
        assert training.getpixel(pixel[0]) == pixel[1]
    assert len(media_files(media_root)) == 2


def test_sixteen_bit_values_are_scaled_not_clipped(api_client_for, artist):
    upload(api_client_for(artist.user), "deep.png", images.sixteen_bit_png())
    training = Image.open(Work.objects.get().training_image).convert("L")
    low, high = training.getextrema()
    assert low < 20 and high > 235


def test_import_command_reports_each_bad_file_and_stores_nothing(tmp_path, artist, media_root, settings):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, data, _, overrides in BAD:
        if not overrides:
            (folder / name).write_bytes(data)
    (folder / "empty.txt").write_text("caption of the empty file")
    out = io.StringIO()
    call_command("import_works", str(folder), artist=artist.user.email, stdout=out)
    lines = json_lines(out.getvalue())
    expected = {name: message for name, _, message, overrides in BAD if not overrides}
    reported = {line["file"]: line for line in lines if "file" in line}
    assert set(reported) == set(expected)  # the .txt caption is not reported
    for name, message in expected.items():
        assert reported[name]["status"] == "rejected"
        assert message in reported[name]["reason"], name
    assert lines[-1] == {"summary": {"created": 0, "duplicate": 0, "rejected": len(expected)}}
    assert Work.objects.count() == 0 and media_files(media_root) == []


def test_import_command_byte_limit(tmp_path, artist, media_root, settings):
    settings.WORK_MAX_BYTES = 1000
    (tmp_path / "big.png").write_bytes(images.good_png(14))
    out = io.StringIO()
    call_command("import_works", str(tmp_path), artist=artist.user.email, stdout=out)
    line = json_lines(out.getvalue())[0]
    assert line["status"] == "rejected" and line["reason"] == "The file is 1.4 kB; the limit is 1.0 kB."
    assert media_files(media_root) == []


@pytest.mark.parametrize("size, limit, message", [
    (23_530_664, 20 * 1024 * 1024, "The file is 23.5 MB; the limit is 21.0 MB."),  # decimal, as file managers
    (21_879_574, 20 * 1024 * 1024, "The file is 21.9 MB; the limit is 21.0 MB."),  # 1024s would say "20.9 MB"
    (1_001, 1_000, "The file is 1.0 kB (1001 bytes); the limit is 1.0 kB (1000 bytes)."),
    (999, 998, "The file is 999 bytes; the limit is 998 bytes."),
    (20 * 1024 * 1024 + 1, 20 * 1024 * 1024,
     "The file is 21.0 MB (20971521 bytes); the limit is 21.0 MB (20971520 bytes)."),  # rounded alike: exact too
])
def test_a_file_over_the_limit_is_told_in_units_a_person_reads(size, limit, message, settings):
    from licensing.validation import ImageRefused, refuse_if_too_large

    settings.WORK_MAX_BYTES = limit
    with pytest.raises(ImageRefused) as refused:
        refuse_if_too_large(size)
    assert str(refused.value) == message


def test_import_command_reads_utf8_captions_and_refuses_others(tmp_path, artist, media_root):
    (tmp_path / "a.png").write_bytes(images.good_png(1))
    (tmp_path / "a.txt").write_bytes("\ufeffa caf\u00e9 at dusk\n".encode("utf-8"))  # with a byte-order mark
    (tmp_path / "b.png").write_bytes(images.good_png(2))
    (tmp_path / "b.txt").write_bytes("a caf\u00e9 at dawn".encode("latin-1"))
    out = io.StringIO()
    call_command("import_works", str(tmp_path), artist=artist.user.email, stdout=out)
    first, second, summary = json_lines(out.getvalue())
    assert first["status"] == "created" and Work.objects.get(pk=first["work"]).caption == "a caf\u00e9 at dusk"
    assert second == {"file": "b.png", "status": "rejected",
                      "reason": "b.txt is not UTF-8 text (byte 0xe9 at offset 5); save it as UTF-8 and import the "
                                "folder again."}
    assert summary == {"summary": {"created": 1, "duplicate": 0, "rejected": 1}}
    assert Work.objects.count() == 1


def test_import_command_reads_utf16_captions_with_a_byte_order_mark_and_refuses_nul(tmp_path, artist, media_root):
    (tmp_path / "a.png").write_bytes(images.good_png(1))
    (tmp_path / "a.txt").write_bytes("a caf\u00e9 at dusk\r\n".encode("utf-16"))  # Windows Notepad's "Unicode"
    (tmp_path / "b.png").write_bytes(images.good_png(2))
    (tmp_path / "b.txt").write_bytes("a cafe at dawn".encode("utf-16-le"))  # no byte-order mark: valid UTF-8, with NULs
    out = io.StringIO()
    call_command("import_works", str(tmp_path), artist=artist.user.email, stdout=out)
    first, second, summary = json_lines(out.getvalue())
    assert first["status"] == "created" and Work.objects.get(pk=first["work"]).caption == "a caf\u00e9 at dusk"
    assert second["status"] == "rejected"
    assert second["reason"].startswith("b.txt is not UTF-8 text (byte 0x00 at offset 1; a NUL")
    assert second["reason"].endswith("; save it as UTF-8 and import the folder again.")
    assert summary == {"summary": {"created": 1, "duplicate": 0, "rejected": 1}}


def test_import_command_normalises(tmp_path, artist):
    for name, data, *_ in NORMALISED:
        (tmp_path / name).write_bytes(data)
    out = io.StringIO()
    call_command("import_works", str(tmp_path), artist=artist.user.email, stdout=out)
    lines = json_lines(out.getvalue())
    assert all(line["status"] == "created" for line in lines[:-1]), lines
    assert lines[-1]["summary"]["created"] == len(NORMALISED) == Work.objects.count()


def test_rollback_deletes_written_files(artist, media_root, monkeypatch):
    from licensing import services

    def boom(self, *args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Work, "save", boom)
    with pytest.raises(RuntimeError):
        services.work_upload(artist=artist, data=images.good_png(1), filename="a.png")
    assert media_files(media_root) == []

"""Two artists uploading one picture at the same moment, on PostgreSQL (SQLite runs one writer at a time)."""

import threading
from unittest import mock

import pytest
from django.db import connection, connections

from licensing import services
from tests.licensing import images

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the picture lock is PostgreSQL's (SQLite runs one writer at a time); CI runs this there")


def test_the_second_of_two_simultaneous_uploads_of_one_picture_is_held(artist, other_artist):
    reached, release = threading.Event(), threading.Event()
    checked = services._same_image_of_another_artist

    def check_then_wait_in_the_first(artist, image):
        found = checked(artist, image)
        if threading.current_thread().name == "first":  # checked, its work not yet written nor committed
            reached.set()
            release.wait(20)
        return found

    boxes = {"first": {}, "second": {}}

    def upload(name, uploader):
        try:
            boxes[name]["result"] = services.work_upload(artist=uploader, data=images.good_png(30), filename=f"{name}.png")
        except BaseException as error:  # reported by the assertions
            boxes[name]["error"] = error
        finally:
            connections.close_all()

    with mock.patch.object(services, "_same_image_of_another_artist", check_then_wait_in_the_first):
        first = threading.Thread(target=upload, args=("first", artist), name="first")
        first.start()
        assert reached.wait(20)
        second = threading.Thread(target=upload, args=("second", other_artist), name="second")
        second.start()
        second.join(1.5)
        assert second.is_alive(), "the second upload of the picture must wait for the first"
        release.set()
        first.join(20)
        second.join(20)
    assert "error" not in boxes["first"] and "error" not in boxes["second"], boxes
    original, copy = boxes["first"]["result"].work, boxes["second"]["result"].work
    assert not original.ownership_held and copy.same_image_as == original and copy.ownership_held

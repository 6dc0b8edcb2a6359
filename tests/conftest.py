import pytest
from rest_framework.test import APIClient

from tests.factories import ArtistFactory, StaffFactory, UserFactory


@pytest.fixture(autouse=True)
def site_language():
    """Each test starts in the site's default language: a request in Japanese leaves Japanese active in the
    thread (LocaleMiddleware activates, nothing deactivates), and code called outside a request (a service, a
    management command) would speak it in the next test."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Each test writes media into its own folder, so a test can list exactly what it stored."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def subscriber(db):
    return UserFactory()


@pytest.fixture
def artist_user(db):
    return ArtistFactory().user


@pytest.fixture
def staff_user(db):
    return StaffFactory()


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def client_for(client):
    """A page client logged in as the given user (or anonymous for None)."""

    def make(user):
        client.logout()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def api_client_for(api_client):
    def make(user):
        api_client.force_authenticate(user=None)
        api_client.logout()
        if user is not None:
            api_client.force_login(user)
        return api_client

    return make


CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM checks are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.errors = errors
        failed = []
        page.on("response", lambda response: failed.append((response.status, response.url)) if response.status >= 400 else None)
        page.failed = failed
        yield page
        browser.close()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """End sessions a live server's request threads may leave on PostgreSQL, so the test database can be dropped."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


def pytest_collection_modifyitems(items):
    """Transactional tests (real workers, live server) restore what migrations put in the database.

    A transactional test empties every table afterwards; the first consent terms ship in a data
    migration, so without a serialized rollback later tests would find no terms.
    """
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker and marker.kwargs.get("transaction"):
            item.add_marker(pytest.mark.django_db(**{**marker.kwargs, "serialized_rollback": True}), append=False)

import re

import pytest
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core import mail
from django.db.models import Value
from django.db.models.functions import Lower
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_sign_up_creates_a_subscriber_and_logs_them_in(client):
    page = client.get(reverse("accounts:sign_up")).content.decode()
    assert '<small class="help" id="id_password1_helptext"><ul><li>' in page  # the password rules, as a list
    response = client.post(
        reverse("accounts:sign_up"),
        {"email": "New@Example.test", "display_name": "New", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(email="new@example.test")
    assert user.check_password(PASSWORD)
    assert client.get(reverse("api-me")).json()["roles"] == ["subscriber"]


def test_sign_up_refuses_a_taken_email_and_mismatched_passwords(client):
    UserFactory(email="taken@example.test")
    response = client.post(
        reverse("accounts:sign_up"),
        {"email": "TAKEN@example.test", "password1": PASSWORD, "password2": PASSWORD + "x"},
    )
    assert response.status_code == 200
    assert "An account with this email address already exists." in response.content.decode()
    assert "The two password fields didn" in response.content.decode()
    assert get_user_model().objects.count() == 1


def test_log_in_with_email_and_log_out(client):
    user = UserFactory()
    response = client.post(reverse("accounts:login"), {"username": user.email, "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("accounts:account")).status_code == 200
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("accounts:account")).status_code == 302


def test_the_email_logs_in_whatever_its_capitals(client, api_client):
    """Addresses are stored in lower case; people type them as they like, on the page and for a token."""
    user = UserFactory(email="mixed.case@example.test")
    typed = "Mixed.Case@Example.TEST"
    assert client.post(reverse("accounts:login"), {"username": typed, "password": PASSWORD}).status_code == 302
    assert client.get(reverse("api-me")).json()["email"] == user.email
    response = api_client.post(reverse("api-token"), {"username": typed, "password": PASSWORD})
    assert response.status_code == 200 and response.json()["token"]


def test_log_in_with_a_wrong_password_says_so(client):
    user = UserFactory()
    response = client.post(reverse("accounts:login"), {"username": user.email, "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct email address and password" in response.content.decode()


def log_in(client, email, password, address="10.0.0.1"):
    return client.post(reverse("accounts:login"), {"username": email, "password": password}, REMOTE_ADDR=address)


def test_failed_log_ins_lock_the_account_out_from_that_address_for_a_while(client, settings):
    from axes.models import AccessAttempt

    user = UserFactory(email="guessed@example.test")
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, user.email, f"guess {attempt}").status_code == 200
    # The last allowed failure is typed with capitals: it still counts against the same account.
    locked = log_in(client, "Guessed@Example.TEST", "one more guess")
    assert locked.status_code == 429 and 15 * 60 - 5 <= int(locked["Retry-After"]) <= 15 * 60
    assert ("Too many failed log-ins for this account from your network (IP) address. Try again in 15 minutes"
            in locked.content.decode())
    # Even the right password is refused from there until the lockout ends...
    assert log_in(client, user.email, PASSWORD).status_code == 429
    assert client.get(reverse("accounts:account")).status_code == 302
    # ...but not from another address, nor for another account from the same one.
    assert log_in(Client(), user.email, PASSWORD, address="10.0.0.2").status_code == 302
    assert log_in(Client(), UserFactory().email, PASSWORD).status_code == 302
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert log_in(client, user.email, PASSWORD).status_code == 302


def lock_out(client, email, settings, **extra):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("accounts:login"), {"username": email, "password": f"guess {attempt}"}, **extra)


def test_guesses_during_a_lockout_do_not_make_it_longer(client, settings):
    from axes.models import AccessAttempt

    user = UserFactory()
    lock_out(client, user.email, settings, REMOTE_ADDR="10.0.0.1")
    nearly_over = timezone.now() - settings.AXES_COOLOFF_TIME + timedelta(seconds=50)
    AccessAttempt.objects.update(attempt_time=nearly_over)
    still = log_in(client, user.email, "yet another guess")
    assert still.status_code == 429 and 40 <= int(still["Retry-After"]) <= 50  # the time it has left, not 15 min
    assert "Try again in 1 minute," in still.content.decode()
    assert AccessAttempt.objects.get().attempt_time == nearly_over  # one guess a quarter hour cannot keep it locked


def test_a_password_reset_by_its_mailed_link_ends_the_lockout(client, settings):
    user = UserFactory()
    lock_out(client, user.email, settings, REMOTE_ADDR="10.0.0.1")
    client.post(reverse("accounts:password_reset"), {"email": user.email})
    link = re.search(r"https?://[^/]+(/\S+)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    new_password = "another-long-password-77"
    client.post(form_page.redirect_chain[-1][0], {"new_password1": new_password, "new_password2": new_password})
    assert log_in(client, user.email, new_password).status_code == 302


def test_behind_a_proxy_each_client_has_its_own_count(client, settings):
    from illustration_platform.accounts.lockout import client_address

    settings.TRUSTED_PROXIES = 1
    behind = {"REMOTE_ADDR": "127.0.0.1"}  # every request arrives from the proxy
    # The proxy appends the address it was reached from; what a client wrote itself further left does not count.
    request = RequestFactory().post("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5", **behind)
    assert client_address(request) == "203.0.113.5"
    assert client_address(RequestFactory().post("/", **behind)) == "127.0.0.1"  # not through the proxy
    # A port, brackets or anything not an address in the proxy's entry: the proxy's own address, never an error.
    for entry, seen in [("203.0.113.5:4711", "203.0.113.5"), ("[2001:db8:1:2::7]:443", "2001:db8:1:2::"),
                        ("unknown", "127.0.0.1"), ("x" * 300, "127.0.0.1")]:
        assert client_address(RequestFactory().post("/", HTTP_X_FORWARDED_FOR=entry, **behind)) == seen
    # One IPv6 line holds a whole /64: its addresses share a count.
    assert client_address(RequestFactory().post("/", HTTP_X_FORWARDED_FOR="2001:db8:1:2:aaaa::1", **behind)) == \
        client_address(RequestFactory().post("/", HTTP_X_FORWARDED_FOR="2001:db8:1:2:bbbb::9", **behind))
    user = UserFactory()
    lock_out(client, user.email, settings, HTTP_X_FORWARDED_FOR="203.0.113.5", **behind)
    again = client.post(reverse("accounts:login"), {"username": user.email, "password": PASSWORD},
                        HTTP_X_FORWARDED_FOR="203.0.113.5", **behind)
    assert again.status_code == 429
    other_client = Client().post(reverse("accounts:login"), {"username": user.email, "password": PASSWORD},
                                 HTTP_X_FORWARDED_FOR="198.51.100.9", **behind)
    assert other_client.status_code == 302  # one guesser does not lock the artist out for everyone


def test_every_spelling_the_log_in_accepts_counts_against_one_account(client, settings):
    """Python's lower() and the database's fold some letters apart (the dotted capital I); the count follows the
    database, as log-in does: an attempt counts against the account exactly when log-in would find it by it."""
    from illustration_platform.accounts.lockout import account_key

    user = UserFactory(email="mio@example.test")
    variant = "mİo@example.test"
    found_by_variant = get_user_model().objects.filter(pk=user.pk).filter(
        pk__in=get_user_model().objects.alias(folded=Lower("email")).filter(folded=Lower(Value(variant)))).exists()
    assert (account_key(None, {"username": variant}) == user.email) == found_by_variant
    assert account_key(None, {"username": " MIO@Example.test "}) == user.email
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, user.email, f"guess {attempt}")
    log_in(client, variant, "one more guess")
    assert log_in(client, user.email, PASSWORD).status_code == (429 if found_by_variant else 302)


def test_an_address_too_long_for_the_count_is_refused_as_any_wrong_log_in(client, api_client,
                                                                          django_assert_max_num_queries):
    """The key axes stores is at most 255 characters: 'İ' lowered is two, so 130 of them made 267 and a 500."""
    long_address = "İ" * 130 + "@x.test"
    assert log_in(client, long_address, "guess").status_code == 200
    assert api_client.post(reverse("api-token"), {"username": "İ" * 5000, "password": "guess"}).status_code == 400
    user = UserFactory()
    with django_assert_max_num_queries(12):  # the account is looked up once per attempt, not once per question
        log_in(client, user.email, "guess")


def test_a_successful_log_in_starts_the_count_again(client, settings):
    user = UserFactory()
    for round_ in range(2):
        for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
            assert log_in(client, user.email, f"guess {round_}.{attempt}").status_code == 200
        assert log_in(client, user.email, PASSWORD).status_code == 302
        client.post(reverse("accounts:logout"))


def test_the_api_token_is_locked_out_alike_in_the_apis_error_shape(api_client, settings):
    user = UserFactory()
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        answer = api_client.post(reverse("api-token"), {"username": user.email, "password": f"guess {attempt}"})
        assert answer.status_code == 400
    locked = api_client.post(reverse("api-token"), {"username": user.email, "password": "one more guess"},
                             format="json")
    assert locked.status_code == 429 and 15 * 60 - 5 <= int(locked["Retry-After"]) <= 15 * 60
    assert locked.json()["error"]["code"] == "locked_out"
    assert api_client.post(reverse("api-token"), {"username": user.email, "password": PASSWORD}).status_code == 429


def test_password_reset_mails_a_link_that_sets_a_new_password(client):
    user = UserFactory()
    client.post(reverse("accounts:password_reset"), {"email": user.email})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/\S+)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.context["validlink"]
    new_password = "another-long-password-77"
    client.post(form_page.redirect_chain[-1][0], {"new_password1": new_password, "new_password2": new_password})
    user.refresh_from_db()
    assert user.check_password(new_password)


def test_api_token_for_email_and_password(api_client):
    user = UserFactory()
    token = api_client.post(reverse("api-token"), {"username": user.email, "password": PASSWORD}).json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get(reverse("api-me")).json()["email"] == user.email


def test_the_admin_cannot_add_an_address_that_differs_only_in_capitals(client):
    """Log-in matches an address whatever its capitals, so two accounts must never differ only in them."""
    UserFactory(email="taken@example.test")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    form = {"email": "Taken@Example.test", "display_name": "", "password1": PASSWORD, "password2": PASSWORD,
            "usable_password": "true"}
    response = client.post(reverse("admin:accounts_user_add"), form)
    assert response.status_code == 200
    assert "User with this Email address already exists." in response.content.decode()
    assert get_user_model().objects.filter(email__iexact="taken@example.test").count() == 1
    assert client.post(reverse("admin:accounts_user_add"), {**form, "email": "New.Person@Example.test"}).status_code == 302
    assert get_user_model().objects.filter(email="new.person@example.test").exists()  # stored in lower case


def test_addresses_that_only_the_database_folds_apart_are_two_accounts_that_each_log_in(client):
    """'ı' (dotless) and 'i' differ under lower(), which the unique constraint uses; the log-in folds the same way,
    so it finds one account, never two (which would be a server error)."""
    for email in ("i@example.test", "ı@example.test"):
        UserFactory(email=email)
    for email in ("i@example.test", "ı@example.test"):
        client.logout()
        assert client.post(reverse("accounts:login"), {"username": email, "password": PASSWORD}).status_code == 302
        assert client.get(reverse("api-me")).json()["email"] == email


@pytest.mark.django_db(transaction=True)
def test_the_migration_lowers_every_address_and_names_those_that_would_clash():
    from django.core.management import CommandError
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("accounts", "0001_initial")], [("accounts", "0002_user_email_unique_ignoring_case")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    OldUser = executor.loader.project_state(before).apps.get_model("accounts", "User")
    for email in ("Taken@Example.test", "taken@example.test", "Mixed.Case@Example.test"):
        OldUser.objects.create(email=email, password="!")
    try:
        with pytest.raises(CommandError) as refused:
            MigrationExecutor(connection).migrate(after)
        assert str(refused.value).startswith(
            "Accounts whose email addresses differ only in capitals: Taken@Example.test, taken@example.test. ")
        OldUser.objects.filter(email="Taken@Example.test").delete()  # staff keep one of them
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert sorted(get_user_model().objects.values_list("email", flat=True)) == ["mixed.case@example.test", "taken@example.test"]


def test_a_signed_in_user_changes_their_password_from_the_account_page(client):
    user = UserFactory()
    client.force_login(user)
    assert reverse("accounts:password_change") in client.get(reverse("accounts:account")).content.decode()
    new_password = "a-brand-new-password-91"
    wrong = client.post(reverse("accounts:password_change"), {
        "old_password": "not it", "new_password1": new_password, "new_password2": new_password})
    assert wrong.status_code == 200 and "Your old password was entered incorrectly" in wrong.content.decode()
    done = client.post(reverse("accounts:password_change"), {
        "old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password}, follow=True)
    assert "Your password is changed." in done.content.decode()
    user.refresh_from_db()
    assert user.check_password(new_password)
    assert client.get(reverse("accounts:account")).status_code == 200  # still signed in
    client.logout()
    assert client.get(reverse("accounts:password_change")).status_code == 302  # to log in

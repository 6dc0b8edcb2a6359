"""Consent is recorded only under the terms the person was shown: terms published while a page was open are
never accepted unseen, in the studio, on the become-an-artist page or through the API."""

import pytest
from django.urls import reverse

from licensing import services
from licensing.models import Artist, ConsentEvent
from tests.factories import ConsentTermsFactory, make_work

pytestmark = pytest.mark.django_db


def publish_training_terms_v2():
    return ConsentTermsFactory(kind="training", version=2, text="Version two: adapters may also be sold to studios.")


def test_an_opt_in_under_terms_no_longer_in_force_is_refused_and_records_nothing(artist):
    work = make_work(artist)
    publish_training_terms_v2()
    with pytest.raises(services.LicensingError, match="now version 2, not the version you were shown") as refused:
        services.work_opt_in(work=work, actor=artist.user, terms_version=1)
    assert refused.value.code == "terms_changed"
    with pytest.raises(services.LicensingError, match="now version 2, not the version you were shown"):
        services.works_opt_in_eligible(artist=artist, actor=artist.user, terms_version=1)
    assert not ConsentEvent.objects.exists()
    assert services.work_opt_in(work=work, actor=artist.user, terms_version=2).terms.version == 2


def test_the_studio_shows_the_terms_open_while_a_work_waits_for_consent(client_for, artist, consent_terms):
    work = make_work(artist)
    client = client_for(artist.user)
    page = client.get(reverse("licensing:studio")).content.decode()
    assert '<details id="consent-terms" open>' in page and consent_terms.text[:60] in page
    assert '<input type="hidden" name="terms_version" value="1">' in page
    services.work_opt_in(work=work, actor=artist.user)
    assert '<details id="consent-terms">' in client.get(reverse("licensing:studio")).content.decode()


@pytest.mark.parametrize("view", ["one", "all"])
def test_a_studio_opened_before_new_terms_opts_nothing_in_and_shows_the_new_terms(client_for, artist, view):
    work = make_work(artist)
    client = client_for(artist.user)
    url = reverse("licensing:work_consent", args=[work.pk, "opt-in"]) if view == "one" else reverse(
        "licensing:opt_in_eligible")
    publish_training_terms_v2()
    page = client.post(url, {"terms_version": "1"}, follow=True).content.decode()
    assert "The consent terms in force are now version 2" in page and "nothing was opted in" in page
    assert not ConsentEvent.objects.exists()
    assert "Version two: adapters may also be sold" in page and 'name="terms_version" value="2"' in page
    client.post(url, {"terms_version": "2"})
    assert ConsentEvent.objects.get().terms.version == 2


def test_an_unreadable_terms_version_from_the_studio_is_refused(client_for, artist):
    work = make_work(artist)
    page = client_for(artist.user).post(reverse("licensing:work_consent", args=[work.pk, "opt-in"]),
                                        {"terms_version": "v1"}, follow=True).content.decode()
    assert "nothing was opted in" in page and not ConsentEvent.objects.exists()


def test_becoming_an_artist_under_an_agreement_no_longer_shown_is_refused(client_for, subscriber):
    client = client_for(subscriber)
    form = {"display_name": "Mio", "slug": "mio", "accept_agreement": "on"}
    assert 'name="agreement_version" value="1"' in client.get(reverse("licensing:become_artist")).content.decode()
    ConsentTermsFactory(kind="artist_agreement", version=2, text="Version two of the agreement.")
    refused = client.post(reverse("licensing:become_artist"), form | {"agreement_version": "1"})
    page = refused.content.decode()
    assert refused.status_code == 200 and not Artist.objects.exists()
    assert "The artist agreement in force is now version 2" in page and "Version two of the agreement." in page
    assert 'name="agreement_version" value="2"' in page and 'value="Mio"' in page
    checkbox = page.split('name="accept_agreement"')[1].split(">")[0]
    assert "checked" not in checkbox and "aria-invalid" not in checkbox  # to be ticked again, not an error
    unreadable = client.post(reverse("licensing:become_artist"), form | {"agreement_version": "two"}).content.decode()
    assert "unreadable agreement version" in unreadable and not Artist.objects.exists()
    assert "checked" not in unreadable.split('name="accept_agreement"')[1].split(">")[0]
    client.post(reverse("licensing:become_artist"), form | {"agreement_version": "2"})
    assert Artist.objects.get().agreement.version == 2


def test_the_api_answers_409_when_the_terms_shown_are_no_longer_in_force(api_client_for, artist):
    work = make_work(artist)
    client = api_client_for(artist.user)
    publish_training_terms_v2()
    for url in (reverse("works-opt-in", args=[work.pk]), reverse("works-opt-in-eligible")):
        refused = client.post(url, {"terms_version": 1}, format="json")
        assert refused.status_code == 409, refused.content
        assert refused.json()["error"]["code"] == "terms_changed"
        assert "now version 2, not the version you were shown" in refused.json()["error"]["message"]
    assert not ConsentEvent.objects.exists()
    unknown = client.post(reverse("works-opt-in", args=[work.pk]), {"terms": 2}, format="json")
    assert unknown.status_code == 400 and "terms" in str(unknown.json())
    assert client.post(reverse("works-opt-in", args=[work.pk]), {"terms_version": 0}, format="json").status_code == 400
    assert not ConsentEvent.objects.exists()
    granted = client.post(reverse("works-opt-in", args=[work.pk]), {"terms_version": 2}, format="json")
    assert granted.status_code == 201 and granted.json()["terms_version"] == 2


@pytest.mark.parametrize("body", [None, "null", {"csrfmiddlewaretoken": "token"}])
def test_the_api_opt_in_still_takes_the_bodies_it_took_before_the_version(api_client_for, artist, body):
    work = make_work(artist)
    client = api_client_for(artist.user)
    if body == "null":
        answer = client.post(reverse("works-opt-in", args=[work.pk]), "null", content_type="application/json")
    elif body is None:
        answer = client.post(reverse("works-opt-in", args=[work.pk]))
    else:
        answer = client.post(reverse("works-opt-in", args=[work.pk]), body)  # a form body
    assert answer.status_code == 201, answer.content
    assert ConsentEvent.objects.get().terms.version == 1


def test_a_studio_shown_before_any_terms_refuses_terms_published_before_the_click(client_for, artist, consent_terms):
    work = make_work(artist)
    consent_terms.delete()
    client = client_for(artist.user)
    page = client.get(reverse("licensing:studio")).content.decode()
    assert '<input type="hidden" name="terms_version" value="0">' in page
    publish_training_terms_v2()
    answer = client.post(reverse("licensing:work_consent", args=[work.pk, "opt-in"]), {"terms_version": "0"}, follow=True)
    assert "now version 2" in answer.content.decode() and not ConsentEvent.objects.exists()


def test_the_shipped_terms_read_in_japanese_with_the_original_beside(client_for, artist, subscriber):
    """The first terms ship with their Japanese (migration 0008): an artist reading the site in Japanese can read
    what they accept, and the original, which applies, is one click away."""
    from licensing.models import ConsentTerms

    terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    agreement = ConsentTerms.current(ConsentTerms.Kind.ARTIST_AGREEMENT)
    assert terms.translation_for("ja").title == "スタイルアダプターの学習への同意"
    assert terms.translation_for("en") is None and terms.translation_for("ja-JP") == terms.translation_for("ja")
    make_work(artist)
    for user, url, words in ((artist.user, reverse("licensing:studio"), terms),
                             (subscriber, reverse("licensing:become_artist"), agreement)):
        client = client_for(user)
        english = client.get(url).content.decode()
        assert f'<h2 class="terms-title" lang="en">{words.title}</h2>' in english and "translation" not in english
        client.post(reverse("set_language"), {"language": "ja", "next": "/"})
        page = client.get(url).content.decode()
        translation = words.translation_for("ja")
        assert f'<h2 class="terms-title" lang="ja">{translation.title}</h2>' in page
        assert translation.text[:40] in page and "原文" in page
        assert f'<h3 class="terms-title" lang="en">{words.title}</h3>' in page and words.text[:40] in page


def test_terms_without_a_translation_say_so_to_a_reader_of_another_language(client_for, artist):
    from licensing.models import ConsentTerms

    ConsentTerms.current(ConsentTerms.Kind.TRAINING).translations.all().delete()
    make_work(artist)
    client = client_for(artist.user)
    assert "no translation into your language" not in client.get(reverse("licensing:studio")).content.decode()
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    page = client.get(reverse("licensing:studio")).content.decode()
    assert "この条件にはまだお使いの言語への翻訳がありません。上の文が原文です。" in page
    assert '<h2 class="terms-title" lang="en">' in page


def test_the_api_gives_the_terms_translations(api_client):
    body = api_client.get(reverse("consent-terms-current")).json()
    assert [(t["language"], t["title"]) for t in body["translations"]] == [("ja", "スタイルアダプターの学習への同意")]


def test_the_shipped_japanese_is_added_only_to_the_shipped_words():
    """A version 1 whose words a deployment changed must not get a translation of other words."""
    import importlib

    from django.apps import apps

    from licensing.models import ConsentTerms, ConsentTermsTranslation

    migration = importlib.import_module("licensing.migrations.0008_consent_terms_translations")
    ConsentTermsTranslation.objects.all().delete()
    terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    shipped = terms.text
    ConsentTerms.objects.filter(pk=terms.pk).update(text=shipped.replace("I am paid a share", "I am not paid"))
    migration.add_first_translations(apps, None)
    assert terms.translation_for("ja") is None
    ConsentTerms.objects.filter(pk=terms.pk).update(text=shipped)
    migration.add_first_translations(apps, None)
    assert terms.translation_for("ja").title == "スタイルアダプターの学習への同意"


def test_the_language_the_terms_were_read_in_is_recorded_with_each_consent(client_for, artist):
    """A dispute is settled on the words the artist saw: the original, or the translation shown in its place."""
    first, second = make_work(artist), make_work(artist)
    client = client_for(artist.user)
    assert '<input type="hidden" name="terms_language" value="en">' in client.get(reverse("licensing:studio")).content.decode()
    client.post(reverse("licensing:work_consent", args=[first.pk, "opt-in"]), {"terms_version": "1", "terms_language": "en"})
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    assert '<input type="hidden" name="terms_language" value="ja">' in client.get(reverse("licensing:studio")).content.decode()
    client.post(reverse("licensing:opt_in_eligible"), {"terms_version": "1", "terms_language": "ja"})
    assert {event.work_id: event.terms_language for event in ConsentEvent.objects.all()} == {
        first.pk: "en", second.pk: "ja"}
    services.work_withdraw(work=first, actor=artist.user)
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    history = client.get(reverse("licensing:history")).content.decode()
    assert history.count("1, read in English") == 1 and history.count("1, read in Japanese") == 1
    # A withdrawal reads no terms, and an opt-in whose client did not say records the language as not known.
    assert ConsentEvent.objects.filter(kind="withdrawn").get().terms_language is None
    assert services.work_opt_in(work=first, actor=artist.user).terms_language is None


def test_a_language_the_terms_have_no_text_in_is_refused_and_records_nothing(client_for, api_client_for, artist):
    from licensing.models import ConsentTerms

    work = make_work(artist)
    for language in ("fr", "ja-JP", ""):
        with pytest.raises(services.LicensingError, match="has no text in the language given") as refused:
            services.work_opt_in(work=work, actor=artist.user, terms_language=language)
        assert refused.value.code == "unknown_language"
    page = client_for(artist.user).post(reverse("licensing:opt_in_eligible"),
                                        {"terms_version": "1", "terms_language": "xx"}, follow=True).content.decode()
    assert "no text in the language given (xx); nothing was recorded" in page
    api = api_client_for(artist.user)
    for url in (reverse("works-opt-in", args=[work.pk]), reverse("works-opt-in-eligible")):
        answer = api.post(url, {"terms_version": 1, "terms_language": "de"}, format="json")
        assert answer.status_code == 400 and "no text in the language given (de)" in answer.json()["error"]["message"]
    assert not ConsentEvent.objects.exists()
    ConsentTerms.current(ConsentTerms.Kind.TRAINING).translations.all().delete()
    with pytest.raises(services.LicensingError, match="no text in the language given"):
        services.work_opt_in(work=work, actor=artist.user, terms_language="ja")  # its translation is gone
    granted = api.post(reverse("works-opt-in", args=[work.pk]), {"terms_version": 1, "terms_language": "en"}, format="json")
    assert granted.status_code == 201 and granted.json()["terms_language"] == "en"
    assert api.get(reverse("consent-terms-current")).json()["original_language"] == "en"


def test_becoming_an_artist_records_the_language_the_agreement_was_read_in(client_for, subscriber):
    client = client_for(subscriber)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    assert 'name="agreement_language" value="ja"' in client.get(reverse("licensing:become_artist")).content.decode()
    form = {"display_name": "Mio", "slug": "mio", "accept_agreement": "on", "agreement_version": "1"}
    refused = client.post(reverse("licensing:become_artist"), form | {"agreement_language": "xx"}).content.decode()
    assert not Artist.objects.exists() and "指定された言語（xx）の文がありません" in refused
    assert "checked" not in refused.split('name="accept_agreement"')[1].split(">")[0]  # to be ticked again
    client.post(reverse("licensing:become_artist"), form | {"agreement_language": "ja"})
    assert Artist.objects.get().agreement_language == "ja"

import ast
import gettext
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.translation import get_language_info
from rest_framework.test import APIClient

from tests.factories import ArtistFactory, ConsentTermsFactory, UserFactory, make_work

pytestmark = pytest.mark.django_db

LC_MESSAGES = Path(settings.BASE_DIR) / "locale" / "ja" / "LC_MESSAGES"
PO_FILE = LC_MESSAGES / "django.po"
MO_FILE = LC_MESSAGES / "django.mo"
# Attributes whose values people read or hear (screen readers, confirmations, the upload script's messages).
READ_ATTRIBUTES = {"aria-label", "alt", "title", "placeholder", "data-confirm"}


def test_language_switcher_turns_the_site_japanese_and_back(client):
    english = client.get("/").content.decode()
    assert "Log in" in english
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    japanese = client.get("/").content.decode()
    assert 'lang="ja"' in japanese
    assert "ログイン" in japanese and "Log in" not in japanese
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert "Log in" in client.get("/").content.decode()


def test_custom_404_page(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


# The catalogue ---------------------------------------------------------------


def _unquote(lines):
    return "".join(ast.literal_eval(line) for line in lines)


def po_entries(path=PO_FILE):
    """(msgctxt, msgid, msgid_plural, [msgstr...], flags) for every entry of a .po file, header included."""
    entries = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        fields, flags, key = {}, set(), None
        for line in block.splitlines():
            if line.startswith("#,"):
                flags.update(flag.strip() for flag in line[2:].split(","))
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                fields[key].append(line)
            else:
                key, _, rest = line.partition(" ")
                fields[key] = [rest]
        msgstrs = [_unquote(value) for name, value in sorted(fields.items()) if name.startswith("msgstr")]
        entries.append((
            _unquote(fields["msgctxt"]) if "msgctxt" in fields else None,
            _unquote(fields["msgid"]),
            _unquote(fields["msgid_plural"]) if "msgid_plural" in fields else None,
            msgstrs,
            flags,
        ))
    return entries


def test_every_japanese_string_is_translated_and_none_is_fuzzy():
    entries = po_entries()
    header = entries[0]
    assert header[1] == "" and "fuzzy" not in header[4]
    assert "Plural-Forms: nplurals=1; plural=0;" in header[3][0]
    assert "Language: ja" in header[3][0]
    messages = entries[1:]
    assert len(messages) > 250
    fuzzy = [msgid for _, msgid, _, _, flags in messages if "fuzzy" in flags]
    empty = [msgid for _, msgid, _, msgstrs, _ in messages if not msgstrs or not all(msgstrs)]
    assert fuzzy == [] and empty == []
    for _, msgid, plural, msgstrs, _ in messages:
        assert len(msgstrs) == 1, f"Japanese has one plural form: {msgid!r}"
        placeholders = sorted(re.findall(r"%\(\w+\)[sd]|<[^>]+>", msgid))
        assert placeholders == sorted(re.findall(r"%\(\w+\)[sd]|<[^>]+>", msgstrs[0])), msgid


def test_the_compiled_catalogue_matches_the_po_file():
    with MO_FILE.open("rb") as handle:
        catalogue = gettext.GNUTranslations(handle)
    for context, msgid, plural, msgstrs, _ in po_entries()[1:]:
        if plural is not None:
            assert catalogue.ngettext(msgid, plural, 1) == msgstrs[0], msgid
        elif context is not None:
            assert catalogue.pgettext(context, msgid) == msgstrs[0], msgid
        else:
            assert catalogue.gettext(msgid) == msgstrs[0], msgid


GETTEXT_CALLS = {"_": 0, "gettext": 0, "gettext_lazy": 0, "gettext_noop": 0, "ngettext": 0, "ngettext_lazy": 0, "pgettext": 1, "pgettext_lazy": 1}


def test_every_string_the_code_translates_is_in_the_catalogue():
    """A new _("…") in the code without a Japanese entry fails here: run makemessages and translate it
    (an artist-facing failure sentence once showed in English on the Japanese pages this way)."""
    known = {msgid for _, msgid, _, _, _ in po_entries()[1:]}
    missing, found = set(), 0
    for app in ("generation", "licensing", "revenue", "illustration_platform"):
        for source in (Path(settings.BASE_DIR) / app).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GETTEXT_CALLS:
                    argument = node.args[GETTEXT_CALLS[node.func.id]] if node.args else None
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        found += 1
                        if argument.value not in known:
                            missing.add((source.name, argument.value))
    assert found > 50 and sorted(missing) == []


def test_every_translate_tag_in_the_templates_is_in_the_catalogue():
    """A new {% translate "…" %} without a Japanese entry fails here: run makemessages and translate it."""
    known = {msgid for context, msgid, _, _, _ in po_entries()[1:] if context is None}
    tag = re.compile(r"""{%\s*(?:translate|trans)\s+(?:"([^"]+)"|'([^']+)')""")
    missing, found = set(), 0
    for template in (Path(settings.BASE_DIR) / "templates").rglob("*"):
        if template.suffix in (".html", ".txt"):
            for double, single in tag.findall(template.read_text(encoding="utf-8")):
                found += 1
                if (double or single) not in known:
                    missing.add((template.name, double or single))
    assert found > 100 and sorted(missing) == []


# Pages in Japanese -------------------------------------------------------------


class ReadableText(HTMLParser):
    """Text nodes and read-aloud attribute values of a page, without scripts and styles, nor elements marked as
    in English on purpose (lang="en": the original of a translated text, shown beside it)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    CLOSED_BY_THEIR_LIKE = {"p", "li", "option"}  # <p>a<p>b: the second <p> closes the first

    def __init__(self):
        super().__init__()
        self.pieces, self._open = [], []  # _open: (tag, skipped) of the elements open now

    def handle_starttag(self, tag, attrs):
        if tag in self.CLOSED_BY_THEIR_LIKE and self._open and self._open[-1][0] == tag:
            self._open.pop()
        skipped = tag in ("script", "style") or dict(attrs).get("lang") == "en"
        if not (skipped or self._skipping):
            for name, value in attrs:
                if value and (name in READ_ATTRIBUTES or name.startswith("data-msg-")):
                    self.pieces.append(value.strip())
        if tag not in self.VOID:
            self._open.append((tag, skipped))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if any(opened == tag for opened, _ in self._open):  # close up to it: HTML may leave <p> or <li> unclosed
            while self._open.pop()[0] != tag:
                pass

    @property
    def _skipping(self):
        return any(skipped for _, skipped in self._open)

    def handle_data(self, data):
        if not self._skipping and data.strip():
            self.pieces.append(data.strip())


def english_left(html):
    """Pieces of the page that are still an English message of our catalogue."""
    english = {msgid for _, msgid, _, msgstrs, _ in po_entries()[1:] if msgstrs[0] != msgid}
    # The language switcher names each language in itself ("English", "日本語"), on purpose.
    english -= {get_language_info(code)["name_local"] for code, _ in settings.LANGUAGES}
    parser = ReadableText()
    parser.feed(html)
    return sorted({piece for piece in parser.pieces if piece.rstrip(":") in english})


def japanese(client, user=None):
    if user is not None:
        client.force_login(user)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    return client


def assert_japanese(response, *expected):
    assert response.status_code == 200
    page = response.content.decode()
    assert 'lang="ja"' in page
    for text in expected:
        assert text in page, text
    assert english_left(page) == []
    return page


@pytest.fixture
def artist_with_works():
    ConsentTermsFactory()
    artist = ArtistFactory()
    make_work(artist, seed=1, caption="a drawing")
    make_work(artist, seed=2, caption="")
    return artist


def test_anonymous_pages_in_japanese(client):
    japanese(client)
    assert_japanese(client.get("/"), "アーティストの同意にもとづくイラストスタイル", "アカウントを作成", "コンテンツクレデンシャル")
    assert_japanese(client.get(reverse("accounts:login")), "ログイン", "パスワードをお忘れですか？", "メールアドレス")
    assert_japanese(client.get(reverse("accounts:sign_up")), "新規登録", "アカウントを作成", "表示名")
    assert_japanese(client.get(reverse("accounts:password_reset")), "パスワードの再設定", "リンクを送信")
    not_found = client.get("/no-such-page/")
    assert not_found.status_code == 404 and "ページが見つかりません" in not_found.content.decode()


def test_subscriber_pages_in_japanese(client):
    japanese(client, UserFactory())
    assert_japanese(client.get("/"), "ログアウト", "アーティストになる")
    account = assert_japanese(client.get(reverse("accounts:account")), "アカウント", "ロール")
    assert "会員" in account and "subscriber" not in account
    assert_japanese(client.get(reverse("licensing:become_artist")), "アーティストになる")


def test_sign_up_messages_in_japanese(client):
    japanese(client)
    response = client.post(reverse("accounts:sign_up"), {
        "email": "new@example.test", "display_name": "新人", "password1": "a-long-test-password-42",
        "password2": "a-long-test-password-42",
    }, follow=True)
    assert_japanese(response, "ようこそ！アカウントの準備ができました。")


def test_artist_studio_pages_in_japanese(client, artist_with_works):
    japanese(client, artist_with_works.user)
    studio = assert_japanese(
        client.get(reverse("licensing:studio")),
        "スタジオ", "作品とキャプション", "一括編集", "キャプション", "学習への同意", "先にキャプションを入力してください。",
        "この作品を削除しますか？",
    )
    assert "Opt in" not in studio and "Withdraw" not in studio
    upload = assert_japanese(client.get(reverse("licensing:upload")), "作品のアップロード", "ファイルを選択")
    assert 'data-msg-uploaded="アップロード完了"' in upload and 'data-msg-done="すべてのファイルを処理しました（アップロード {created} 件、登録済み {duplicate} 件、拒否 {refused} 件）。"' in upload
    assert_japanese(client.get(reverse("licensing:history")), "同意履歴", "同意の許可・撤回の記録はまだありません。")
    assert_japanese(client.get(reverse("generation:style")), "スタイルを学習する", "プリセット", "まだバージョンがありません")
    assert_japanese(client.get(reverse("licensing:snapshots")), "データセットのスナップショット")
    assert_japanese(client.get(reverse("licensing:profile")), "アーティストプロフィール", "自己紹介")
    assert_japanese(client.get(reverse("licensing:artist_page", args=[artist_with_works.slug])), "作品")


def test_consent_messages_and_history_in_japanese(client, artist_with_works):
    japanese(client, artist_with_works.user)
    work = artist_with_works.works.get(caption="a drawing")
    response = client.post(reverse("licensing:work_consent", args=[work.pk, "opt-in"]), follow=True)
    assert_japanese(response, f"作品 #{work.pk} の学習への利用を許可しました。", "許可済み")
    history = assert_japanese(client.get(reverse("licensing:history")), "同意履歴", "許可")
    assert "Granted" not in history
    client.post(reverse("licensing:work_consent", args=[work.pk, "opt-out"]))
    history = client.get(reverse("licensing:history")).content.decode()
    assert "<td>撤回</td>" in history and "<td>許可</td>" in history  # events, in one register: not 撤回済み


def test_api_error_messages_stay_as_they_are(api_client):
    """The API speaks English to clients that ask for nothing else; its error shape and codes never change."""
    english = api_client.post(reverse("api-token"), {"username": "nobody@example.test"}).json()["error"]
    assert english == {
        "code": "invalid",
        "message": "password: This field is required.",
        "fields": {"password": ["This field is required."]},
    }
    japanese(api_client)
    asked_in_japanese = api_client.post(reverse("api-token"), {"username": "nobody@example.test"})
    assert asked_in_japanese.json()["error"]["code"] == "invalid"
    assert set(asked_in_japanese.json()["error"]["fields"]) == {"password"}


def test_server_error_page_in_japanese():
    with translation.override("ja"):
        page = render_to_string("500.html")
    assert 'lang="ja"' in page and "サーバー側で問題が発生しました" in page
    assert english_left(page) == []


def test_api_not_found_and_server_error_in_the_language_asked_for(client, settings, monkeypatch):
    headers = {"HTTP_ACCEPT_LANGUAGE": "ja"}
    assert client.get("/api/nope/", **headers).json()["error"] == {"code": "not_found", "message": "見つかりませんでした。"}
    assert client.get("/api/nope/").json()["error"]["message"] == "Not found."
    from illustration_platform.api.errors import server_error

    request = RequestFactory().get("/api/styles/")
    with translation.override("ja"):
        assert json.loads(server_error(request).content)["error"]["message"] == "サーバーエラーが発生しました。"


def test_what_an_upload_is_refused_as_is_said_in_japanese(artist_with_works, settings):
    api = APIClient(HTTP_ACCEPT_LANGUAGE="ja")  # the upload page sends its files here
    api.force_authenticate(artist_with_works.user)
    pdf = SimpleUploadedFile("doc.png", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", content_type="image/png")
    response = api.post(reverse("works-list"), {"image": pdf}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "このファイルはPDF 文書です。PNG・JPEG・WebP 画像ではありません。"
    settings.WORK_MAX_BYTES = 10
    big = SimpleUploadedFile("big.png", b"x" * 11, content_type="image/png")
    response = api.post(reverse("works-list"), {"image": big}, format="multipart")  # refused on its declared size
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "ファイルサイズは 11 バイトです。上限は 10 バイトです。"


def test_japanese_sentences_run_on_without_a_space(client, artist_with_works, settings):
    from django.core.exceptions import ValidationError

    from generation.services import style_training_start
    from licensing.models import ConsentTerms

    japanese(client, artist_with_works.user)
    studio = client.get(reverse("licensing:studio")).content.decode()
    assert re.search(r"点。現在の同意条件：バージョン \d+。", studio)
    style = client.get(reverse("generation:style")).content.decode()
    assert "学習に使えます。学習には、" in style
    work = artist_with_works.works.get(caption="a drawing")
    client.post(reverse("licensing:work_consent", args=[work.pk, "opt-in"]))
    current = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    ConsentTerms.objects.create(kind=current.kind, version=current.version + 1, title="New", text="New.", is_active=True)
    settings.STYLE_MIN_WORKS = 5
    with translation.override("ja"), pytest.raises(ValidationError) as refusal:
        style_training_start(artist=artist_with_works, actor=artist_with_works.user)
    assert refusal.value.messages == [
        "スタイルの学習には、学習に使える作品が 5 点以上必要です（現在 0 点）。ほかに 1 点の作品が、スタジオで現在の同意条件への"
        "同意を待っています。"]


def test_a_withdrawals_reason_reads_in_each_readers_language(client, artist_with_works):
    from licensing import services

    work = artist_with_works.works.get(caption="a drawing")
    with translation.override("ja"):  # deleted on the Japanese pages
        services.work_opt_in(work=work, actor=artist_with_works.user)
        services.work_delete(work=work, actor=artist_with_works.user)
    api = APIClient()
    api.force_authenticate(artist_with_works.user)
    english = api.get(reverse("consent-events-list"), HTTP_ACCEPT_LANGUAGE="en").json()
    japanese_events = api.get(reverse("consent-events-list"), HTTP_ACCEPT_LANGUAGE="ja").json()
    rows = english["results"] if isinstance(english, dict) else english
    rows_ja = japanese_events["results"] if isinstance(japanese_events, dict) else japanese_events
    assert rows[0]["reason"] == "The work was deleted." and rows_ja[0]["reason"] == "作品は削除されました。"
    japanese(client, artist_with_works.user)
    assert "作品は削除されました。" in client.get(reverse("licensing:history")).content.decode()

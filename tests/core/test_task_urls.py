"""CallbackUrls: each task's own callback URL, signed with the receiver's token, and verified again
from the token alone. A signature opens its own key only, and never shows the token."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife._ops import masked
from streamlife._task_urls import SIGNATURE_BYTES, CallbackUrls, task_route, task_signature, verified_key

TOKEN = "task-url-token-0123456789abcdef"
BASE = "https://hooks.example.invalid/memories"
KEYS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=64)


def test_a_task_url_names_its_key_under_the_base_and_carries_a_128_bit_signature() -> None:
    urls = CallbackUrls(BASE + "/", token=TOKEN)
    url = urls.url_for("0123abcd")
    head, key, sig = url.rsplit("/", 2)
    assert (head, key) == (BASE + "/task", "0123abcd")
    assert len(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))) == SIGNATURE_BYTES >= 16
    assert TOKEN not in url
    assert verified_key(TOKEN.encode(), url.removeprefix("https://hooks.example.invalid")) == "0123abcd"


def test_the_token_never_shows_in_a_repr() -> None:
    urls = CallbackUrls(BASE, token=TOKEN)
    assert TOKEN not in repr(urls)
    assert "redacted" in repr(urls)


@pytest.mark.parametrize(
    ("base", "token", "words"),
    [
        (BASE, "short", "16 characters"),
        ("ftp://hooks.example.invalid/x", TOKEN, "http"),
        ("hooks.example.invalid/x", TOKEN, "http"),
        (BASE + "?a=1", TOKEN, "no query"),
        (BASE + "#top", TOKEN, "no query"),
        (f"{BASE}/{TOKEN}", TOKEN, "must not carry the token"),
    ],
)
def test_a_base_or_token_that_cannot_make_safe_urls_is_refused(base: str, token: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        CallbackUrls(base, token=token)


@pytest.mark.parametrize("key", ["", "a/b", "a b", "x" * 129, "é"])
def test_a_key_that_cannot_ride_in_a_path_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="task key"):
        CallbackUrls(BASE, token=TOKEN).url_for(key)


def test_only_a_path_ending_task_key_sig_is_a_route() -> None:
    assert task_route("/m/task/abc/sig") == ("abc", "sig")
    assert task_route("/m/task/abc/sig/") == ("abc", "sig")
    assert task_route("/task/abc/sig") == ("abc", "sig")
    for path in ("/m/abc/sig", "/m/task/abc/", "/m/task/a%2Fb/sig", "/m/" + TOKEN, "/", ""):
        assert task_route(path) is None, path


@given(KEYS, KEYS)
def test_a_signature_opens_its_own_key_and_no_other(key: str, other: str) -> None:
    token = TOKEN.encode()
    sig = task_signature(token, key)
    assert verified_key(token, f"/m/task/{key}/{sig}") == key
    if other != key:
        assert verified_key(token, f"/m/task/{other}/{sig}") is None
    assert verified_key(b"another-token-0123456789", f"/m/task/{key}/{sig}") is None


@given(KEYS, st.data())
def test_a_signature_changed_anywhere_opens_nothing(key: str, data: st.DataObject) -> None:
    token = TOKEN.encode()
    sig = task_signature(token, key)
    at = data.draw(st.integers(0, len(sig) - 1))
    changed = sig[:at] + ("A" if sig[at] != "A" else "B") + sig[at + 1 :]
    assert verified_key(token, f"/m/task/{key}/{changed}") is None
    assert verified_key(token, f"/m/task/{key}/{sig[:-1]}") is None  # cut short


def test_a_signature_is_not_the_token_and_an_access_log_never_shows_it() -> None:
    url = CallbackUrls(BASE, token=TOKEN).url_for("0123abcd")
    sig = url.rsplit("/", 1)[1]
    assert sig != TOKEN
    assert sig not in masked(url.removeprefix("https://hooks.example.invalid"))


def test_the_urls_say_whether_they_are_signed_with_a_token() -> None:
    urls = CallbackUrls(BASE, token=TOKEN)
    assert urls.signs_with(TOKEN)
    assert not urls.signs_with(TOKEN + "x")

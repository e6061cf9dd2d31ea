"""Replaying dead letters with a real Fleet, on a MemoryStore and on an SQLite file: a kept payload
the parser reads now reaches its task and is purged, one still refused stays, a cut one is never
replayed, and none is lost when the store fails on the way."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from streamlife import (
    CallbackError,
    Outcome,
    Policy,
    TaskState,
    parse_callback,
)
from streamlife._jsontext import dead_letter_body
from streamlife.deadletter import replay_dead_letters
from streamlife.errors import StoreError
from streamlife.protocol import segment_callback, status_callback
from streamlife.store import DEAD_LETTER_MAX_BODY, MemoryStore, SqliteStore, Store
from streamlife.store.memory import _Txn
from streamlife.testing import MemoriesSim
from streamlife.webhook import WebhookReceiver, serve_webhook

URL = "rtmp://example.invalid/live"
REFUSED = "data.transcript: a shape an older parser did not know"  # as if an older streamlife said so
POLICY = Policy(stop_concurrency=0)


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


class Rig:
    """A Fleet on the simulator and a store, with one running task; the simulator is never advanced,
    so the only callbacks are the ones a test hands over."""

    def __init__(self, store: Store) -> None:
        self.sim = MemoriesSim.new()
        self.store = store
        self.fleet = self.sim.fleet(POLICY, store=store)
        self.task = self.fleet.start("audio", audio_url=URL, provider="assemblyai")
        assert self.task.task_id is not None
        self.task_id: str = self.task.task_id

    def keep(self, body: bytes, reason: str = REFUSED, field: str | None = "data.transcript") -> int:
        return self.store.dead_letter(self.sim.clock.now(), reason, field, body)


@pytest.fixture(params=["memory", "sqlite"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "tasks.db")
    rig = Rig(store)
    yield rig
    rig.sim.close()
    store.close()


def test_a_letter_the_parser_reads_now_reaches_its_task_and_is_purged(rig: Rig) -> None:
    readable = rig.keep(body_of(segment_callback(rig.task_id, 0, "kept for later")))
    refused = rig.keep(b"\x1b[2Jnot json\x00\xff", "not UTF-8: invalid start byte at byte 14", None)
    version = len(rig.fleet.journal(rig.task))

    with capture_logs() as logs:
        results = replay_dead_letters(rig.fleet)

    assert [(letter_id, type(result)) for letter_id, result in results] == [
        (readable, Outcome),
        (refused, CallbackError),
    ]
    assert results[0][1] is Outcome.APPLIED
    error = results[1][1]
    assert isinstance(error, CallbackError)
    assert error.field is None
    assert "not UTF-8" in str(error)  # the parser's reason today
    assert rig.task.transcript_text() == "kept for later"
    journal = rig.fleet.journal(rig.task)
    assert len(journal) == version + 1
    assert journal[-1].trigger == "segment"
    assert [letter.id for letter in rig.store.dead_letters()] == [refused]  # the refused one stays
    replayed = [log for log in logs if log["event"] == "streamlife.dead_letter_replayed"]
    assert replayed == [
        {
            "event": "streamlife.dead_letter_replayed",
            "log_level": "info",
            "id": readable,
            "task_id": rig.task_id,
            "outcome": "applied",
        }
    ]

    again = replay_dead_letters(rig.fleet)  # nothing new: the refused one is refused again
    assert [letter_id for letter_id, _ in again] == [refused]
    assert isinstance(again[0][1], CallbackError)
    assert rig.task.transcript_text() == "kept for later"


def test_another_fleet_on_the_file_replays_into_the_task_a_running_one_holds(tmp_path: Path) -> None:
    """As ``streamlife deadletter replay`` does beside a running ``serve``: a Fleet of its own, no
    recover(), and the task found in the store. The serving Fleet catches up on its next event."""
    rig = Rig(SqliteStore(tmp_path / "tasks.db"))
    serving = rig.fleet
    assert serving.handle_callback(body_of(segment_callback(rig.task_id, 0, "zero"))) is Outcome.APPLIED
    rig.keep(body_of(segment_callback(rig.task_id, 1, "one, refused once")))

    replaying_store = SqliteStore(tmp_path / "tasks.db")
    replaying = rig.sim.fleet(POLICY, store=replaying_store)
    results = replay_dead_letters(replaying)
    assert [result for _, result in results] == [Outcome.APPLIED]
    assert rig.store.dead_letters() == []
    assert replaying.tasks()[0].key == rig.task.key  # taken from the store, on demand
    assert replaying.tasks()[0].state is TaskState.RUNNING

    assert serving.handle_callback(body_of(segment_callback(rig.task_id, 2, "two"))) is Outcome.APPLIED
    assert rig.task.transcript_text() == "zero one, refused once two"
    versions = [entry.version for entry in rig.store.journal(rig.task.key or "")]
    assert versions == list(range(1, len(versions) + 1))  # one journal, no version taken twice
    replaying.close()
    replaying_store.close()
    serving.close()
    rig.store.close()


def test_a_letter_cut_when_kept_is_never_replayed_even_if_what_is_left_parses(rig: Rig) -> None:
    payload = body_of(segment_callback(rig.task_id, 0, "cut"))
    padded = payload + b" " * DEAD_LETTER_MAX_BODY  # JSON with trailing whitespace: the kept start parses
    letter_id = rig.keep(padded)
    letter = rig.store.dead_letter_by_id(letter_id)
    assert letter is not None
    assert letter.truncated
    assert parse_callback(letter.body).task_id == rig.task_id  # it would have applied

    results = replay_dead_letters(rig.fleet)

    assert [letter_id for letter_id, _ in results] == [letter_id]
    error = results[0][1]
    assert isinstance(error, CallbackError)
    assert "cut" in str(error)
    assert rig.task.transcript_text() == ""
    assert rig.store.dead_letters() == [letter]


def test_letters_replay_in_the_order_they_came_whatever_order_the_ids_are_given(rig: Rig) -> None:
    """A segment, then the status that ended the stream: the other way round the segment would be late."""
    segment = rig.keep(body_of(segment_callback(rig.task_id, 0, "last words")))
    ended = rig.keep(body_of(status_callback(rig.task_id, 14)))

    results = replay_dead_letters(rig.fleet, [ended, segment])

    assert results == [(segment, Outcome.APPLIED), (ended, Outcome.APPLIED)]
    assert rig.task.state is TaskState.STOPPED
    assert rig.task.transcript_text() == "last words"
    assert rig.store.dead_letters() == []


def test_only_the_ids_given_are_replayed_and_ids_not_kept_are_skipped(rig: Rig) -> None:
    first = rig.keep(body_of(segment_callback(rig.task_id, 0, "a")))
    second = rig.keep(body_of(segment_callback(rig.task_id, 1, "b")))
    third = rig.keep(body_of(segment_callback(rig.task_id, 2, "c")))

    results = replay_dead_letters(rig.fleet, [third, third + 10, 0, -3, 2**80])
    assert results == [(third, Outcome.APPLIED)]
    assert [letter.id for letter in rig.store.dead_letters()] == [first, second]
    assert replay_dead_letters(rig.fleet, []) == []  # an empty list replays nothing
    assert len(rig.store.dead_letters()) == 2
    assert replay_dead_letters(rig.fleet, iter([first])) == [(first, Outcome.APPLIED)]
    assert rig.task.transcript_text() == "a c"


def test_a_letter_for_a_task_id_nobody_holds_is_parked_in_the_store(rig: Rig) -> None:
    stranger = "770e8400-e29b-41d4-a716-446655440009"
    letter_id = rig.keep(body_of(segment_callback(stranger, 0)))

    assert replay_dead_letters(rig.fleet) == [(letter_id, Outcome.PARKED)]
    assert [parked.task_id for parked in rig.store.parked()] == [stranger]  # for the next recover()
    assert rig.store.dead_letters() == []


def test_a_rejected_event_purges_its_letter_as_a_live_callback_would_be_answered(rig: Rig) -> None:
    rig.fleet.handle_callback(body_of(status_callback(rig.task_id, 14)))  # the stream stopped
    late = rig.keep(body_of(segment_callback(rig.task_id, 0, final=False)))  # a partial: no final to keep
    results = replay_dead_letters(rig.fleet)
    assert results == [(late, Outcome.LATE)]
    assert rig.store.dead_letters() == []


class WritesFail(MemoryStore):
    """A MemoryStore whose task writes fail while ``failing`` is set, as a full disk's would."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def lock(self, key: str) -> _Txn:
        if self.failing:
            raise StoreError("disk full (a test)")
        return super().lock(key)


def test_a_letter_stays_when_its_delivery_fails_and_the_error_is_raised() -> None:
    store = WritesFail()
    rig = Rig(store)
    first = rig.keep(body_of(segment_callback(rig.task_id, 0, "first")))
    second = rig.keep(body_of(segment_callback(rig.task_id, 1, "second")))
    store.failing = True

    with pytest.raises(StoreError, match="disk full"):
        replay_dead_letters(rig.fleet)
    assert [letter.id for letter in store.dead_letters()] == [first, second]  # nothing lost
    assert rig.task.transcript_text() == ""

    store.failing = False
    assert replay_dead_letters(rig.fleet) == [(first, Outcome.APPLIED), (second, Outcome.APPLIED)]
    assert rig.task.transcript_text() == "first second"


# The invariant: after a replay, each letter is either still kept (and reported refused) or was handed
# to its task (and is gone); never both, never neither.

LETTERS = st.lists(st.sampled_from(["segment", "refused", "cut"]), max_size=8)


@settings(max_examples=50)
@given(LETTERS, st.data())
def test_every_letter_is_either_delivered_and_purged_or_kept_and_reported(
    kinds: list[str], data: st.DataObject
) -> None:
    rig = Rig(MemoryStore())
    kept: dict[int, str] = {}
    for index, kind in enumerate(kinds):
        body = body_of(segment_callback(rig.task_id, index, f"s{index}"))
        if kind == "refused":
            body = body[:-1]  # no closing brace
        elif kind == "cut":
            body += b" " * DEAD_LETTER_MAX_BODY
        kept[rig.keep(body)] = kind
    asked = data.draw(st.none() | st.lists(st.sampled_from([*kept, 999]), unique=True))

    results = dict(replay_dead_letters(rig.fleet, asked))

    wanted = set(kept) if asked is None else set(asked) & set(kept)
    assert set(results) == wanted  # a result for each letter asked for that was kept
    left = {letter.id for letter in rig.store.dead_letters()}
    for letter_id, kind in kept.items():
        if letter_id not in wanted:
            assert letter_id in left
        elif kind == "segment":
            assert results[letter_id] is Outcome.APPLIED
            assert letter_id not in left
        else:
            assert isinstance(results[letter_id], CallbackError)
            assert letter_id in left
    delivered = sorted(
        index
        for index, (letter_id, kind) in enumerate(kept.items())
        if letter_id in wanted and kind == "segment"
    )
    assert [segment.index for segment in rig.task.transcript.finals()] == delivered


# What the Fleet keeps of a payload it was handed in another form than bytes.


def test_a_payload_body_is_kept_as_it_came() -> None:
    raw = b"\x00\xff{not json"
    assert dead_letter_body(raw) is raw
    assert dead_letter_body('{"task_id": "é"}') == '{"task_id": "é"}'.encode()


def test_text_with_a_lone_surrogate_is_kept_as_json_that_reads_back_the_same() -> None:
    text = json.dumps(segment_callback("tid-1", 0, "x"), ensure_ascii=False).replace('"x"', '"\ud800 x"')
    kept = dead_letter_body(text)
    kept.decode()  # valid UTF-8
    assert parse_callback(kept) == parse_callback(text)


def test_a_mapping_is_kept_as_json_with_what_json_cannot_hold_shown_as_it_was() -> None:
    when = datetime(2024, 1, 2, tzinfo=UTC)
    kept = dead_letter_body({"task_id": "tid-1", "at": when, "n": math.nan})
    assert kept.decode() == f'{{"task_id": "tid-1", "at": {json.dumps(repr(when))}, "n": NaN}}'
    tuple_key = dead_letter_body(cast(Any, {(1, 2): "x"}))  # no JSON form at all: its repr
    assert tuple_key == b"{(1, 2): 'x'}"
    looped: dict[str, Any] = {}
    looped["self"] = looped
    assert dead_letter_body(looped) == b"{'self': {...}}"


# -- the Fleet keeps what the parser refuses ---------------------------------------------------------
def test_a_refused_payload_is_kept_as_a_dead_letter_and_logged_without_its_body(rig: Rig) -> None:
    body = (
        b'{"code": 200, "task_id": "t-1", "data": {"status": 0, "segment_index": -1, "transcript": "words"}}'
    )
    with capture_logs() as logs, pytest.raises(CallbackError) as refused:
        rig.fleet.handle_callback(body)
    (letter,) = rig.store.dead_letters()
    assert (letter.body, letter.reason, letter.field) == (body, str(refused.value), "data.segment_index")
    (logged,) = [log for log in logs if log["event"] == "streamlife.callback_refused"]
    assert logged == {
        "event": "streamlife.callback_refused",
        "log_level": "warning",
        "reason": str(refused.value),
        "field": "data.segment_index",
        "size": len(body),
        "letter": letter.id,
    }
    assert rig.fleet.stats().malformed == 1


def test_a_batch_keeps_each_refused_payload_and_applies_the_rest(rig: Rig) -> None:
    good = body_of(segment_callback(rig.task_id, 0, "kept"))
    results = rig.fleet.handle_callbacks([b"not json", good, b"[1, 2]"])
    assert isinstance(results[0], CallbackError)
    assert results[1] == Outcome.APPLIED
    assert [letter.body for letter in rig.store.dead_letters()] == [b"not json", b"[1, 2]"]


def test_a_payload_refused_over_http_is_a_400_and_a_dead_letter_in_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store = SqliteStore(path)
    rig = Rig(store)
    token = rig.sim.token  # (the receiver verifies the task URLs the Fleet gives)
    body = b'{"code": "200", "task_id": "x", "data": {"status": 0, "transcript": 5}}'
    try:
        with serve_webhook(WebhookReceiver(rig.fleet, token=token)) as server, requests.Session() as session:
            session.trust_env = False
            answer = session.post(
                f"{server.url}/hooks/{token}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
        assert answer.status_code == 400
        assert answer.json()["field"] == "data.transcript"
    finally:
        rig.fleet.close()
        store.close()
    reopened = SqliteStore(path)  # what another process, or `streamlife deadletter`, reads
    try:
        assert [(letter.body, letter.field) for letter in reopened.dead_letters()] == [
            (body, "data.transcript")
        ]
    finally:
        reopened.close()


def test_a_payload_a_task_url_brings_that_the_parser_refuses_is_not_kept(tmp_path: Path) -> None:
    """A task's own URL opens that task only, and a replay delivers a letter by the task_id it
    names: what the parser refuses on a task URL is answered 400 and counted, never kept, so a
    leaked URL cannot plant a letter a newer parser applies to another task. The same body on the
    token's URL is kept, as every refused callback there is."""
    store = SqliteStore(tmp_path / "tasks.db")
    sim = MemoriesSim.new()
    fleet = sim.fleet(POLICY, store=store)
    mine, other = (fleet.start("understand", url=URL, user_prompt="Say") for _ in range(2))
    assert mine.task_id is not None
    assert other.task_id is not None
    # A result in a shape this parser refuses (its text an object), naming the other task.
    planted = body_of({"status": 0, "task_id": other.task_id, "text": {"scene": "a new shape"}})
    assert fleet.callback_urls is not None
    task_path = urlsplit(fleet.callback_urls.url_for(mine.key or "")).path
    try:
        with (
            serve_webhook(WebhookReceiver(fleet, token=sim.token)) as server,
            requests.Session() as session,
            capture_logs() as logs,
        ):
            session.trust_env = False
            by_task_url = session.post(f"{server.url}{task_path}", data=planted, timeout=10)
            assert by_task_url.status_code == 400
            assert store.dead_letters() == []  # not kept
            assert fleet.stats().malformed == 1  # counted all the same
            assert replay_dead_letters(fleet) == []
            by_token = session.post(f"{server.url}/hooks/{sim.token}", data=planted, timeout=10)
        assert by_token.status_code == 400
        assert [letter.body for letter in store.dead_letters()] == [planted]
        refused = [log for log in logs if log["event"] == "streamlife.callback_refused"]
        assert [log.get("by_task_url") for log in refused] == [True, None]
        assert [log["letter"] is None for log in refused] == [True, False]
    finally:
        sim.close()
        store.close()


def test_a_refused_payload_in_a_batch_is_kept_only_when_it_came_by_no_task_url(rig: Rig) -> None:
    """``handle_callbacks`` as ``handle_callback``: a key makes a refused payload unkept."""
    task = rig.fleet.start("understand", url=URL, user_prompt="Say")
    refused = body_of({"status": 0, "task_id": task.task_id, "text": 5})
    results = rig.fleet.handle_callbacks([refused, refused], keys=[task.key, None])
    assert [type(result) for result in results] == [CallbackError, CallbackError]
    assert [letter.body for letter in rig.store.dead_letters()] == [refused]  # the unrouted one only

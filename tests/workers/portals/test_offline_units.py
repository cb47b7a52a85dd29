"""The offline lane's decisions and its Redis-only parts: rows as events, stored batches,
the bindings it asks for, the doorbell's debounce, the spread poll, and its gauges."""

from __future__ import annotations

import hashlib
import time

import pytest
import redis
from rq import Queue

from shared.errors import ConfigurationError
from shared.jobs import DOORBELL, DRAIN_OFFLINE, queue_of
from shared.keys import Keys
from shared.settings import Settings, load_settings
from workers.portals import doorbell, offline
from workers.portals.binding import Binding, desired_bindings
from workers.portals.offlinerows import (
    Batch,
    event_id,
    merged_rows,
    row_event,
)
from workers.runner.metrics import QueueCollector

ROW = {
    "ID": "7",
    "TIMESTAMP_X": "2026-01-02T10:00:00+03:00",
    "EVENT_NAME": "ONCRMDEALUPDATE",
    "EVENT_DATA": {"FIELDS": {"ID": "42"}},
    "EVENT_ADDITIONAL": {"user_id": "2"},
    "MESSAGE_ID": "m" * 32,
}


def test_a_row_is_an_offline_event_with_a_stable_id() -> None:
    event = row_event("member", "a.bitrix24.test", ROW, 1.0)
    assert event is not None
    assert (event.name, event.entity_type, event.entity_id, event.user_id) == (
        "ONCRMDEALUPDATE",
        "deal",
        "42",
        2,
    )
    assert event.source == "offline" and event.ts == 1767337200
    again = row_event("member", "a.bitrix24.test", dict(ROW), 2.0)
    assert again is not None and again.id == event.id  # re-read of the same row: same id
    newer = row_event("member", "a.bitrix24.test", {**ROW, "TIMESTAMP_X": "2026-01-02T10:00:05+03:00"}, 2.0)
    assert newer is not None and newer.id != event.id  # a later state of the object is new
    assert event_id("other", ROW) != event.id


def test_the_event_id_is_the_documented_digest_so_it_survives_upgrades() -> None:
    """Ids outlive the code that made them (a reservation re-read after a deploy must give
    the queued ids again), so the digest is pinned: portal, "offline", ID, MESSAGE_ID and
    TIMESTAMP_X joined by "|", missing fields as empty strings, 32 hex digits."""

    def digest(*parts: str) -> str:
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    stamp = str(ROW["TIMESTAMP_X"])
    assert event_id("member", ROW) == digest("member", "offline", "7", "m" * 32, stamp)
    assert event_id("member", {}) == digest("member", "offline", "", "", "")
    assert event_id("member", {**ROW, "ID": "8"}) != event_id("member", ROW)
    assert event_id("member", {**ROW, "MESSAGE_ID": "n" * 32}) != event_id("member", ROW)


def test_an_event_carries_the_portal_its_data_and_when_it_was_read() -> None:
    event = row_event("member", "a.bitrix24.test", ROW, 12.5)
    assert event is not None
    assert (event.member_id, event.domain, event.received_at) == ("member", "a.bitrix24.test", 12.5)
    assert event.data == ROW["EVENT_DATA"]


@pytest.mark.parametrize("empty", [None, "", []])
def test_empty_event_data_is_an_event_with_no_data(empty: object) -> None:
    """PHP serialises an empty array as [] and Bitrix24 may send nothing at all."""
    event = row_event("member", "", {**ROW, "EVENT_DATA": empty}, 0)
    assert event is not None and event.data == {}


def test_an_unreadable_timestamp_is_zero_not_a_refused_row() -> None:
    event = row_event("member", "", {**ROW, "TIMESTAMP_X": "yesterday"}, 0)
    assert event is not None and event.ts == 0


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [("1", 1), (" 15 ", 15), ("0", None), ("-3", None), ("abc", None), ("", None), (None, None)],
)
def test_only_a_positive_user_id_is_the_events_user(user_id: object, expected: int | None) -> None:
    event = row_event("member", "", {**ROW, "EVENT_ADDITIONAL": {"user_id": user_id}}, 0)
    assert event is not None and event.user_id == expected
    no_user = row_event("member", "", {**ROW, "EVENT_ADDITIONAL": []}, 0)
    assert no_user is not None and no_user.user_id is None


@pytest.mark.parametrize(
    "broken",
    [{"EVENT_NAME": ""}, {"EVENT_NAME": None}, {"EVENT_DATA": "not json"}, {"EVENT_DATA": 5}, {"ID": ""}],
)
def test_rows_that_cannot_be_events(broken: dict[str, object]) -> None:
    assert row_event("member", "", {**ROW, **broken}, 0) is None


def test_json_text_data_is_read() -> None:
    event = row_event("member", "", {**ROW, "EVENT_DATA": '{"FIELDS": {"ID": "9"}}'}, 0)
    assert event is not None and event.entity_id == "9"


def test_a_batch_read_again_keeps_rows_bitrix24_no_longer_has() -> None:
    stored = [{"ID": "1", "v": "old"}, {"ID": "2"}]
    assert merged_rows(stored, [{"ID": "1", "v": "new"}, {"ID": "3"}]) == [
        {"ID": "1", "v": "new"},
        {"ID": "2"},
        {"ID": "3"},
    ]
    for queued, reserved in [(True, False), (False, True)]:
        batch = Batch(5.0, stored, queued=queued, reserved=reserved)
        assert Batch.load(batch.dump()) == batch


def test_offline_events_are_bound_offline_and_the_doorbell_online(settings: Settings) -> None:
    url = "https://app.example/b24/events"
    configured = settings.model_copy(update={"offline_events": ["ONCRMDEALUPDATE"]})
    desired = desired_bindings(["ONCRMDEALUPDATE", "ONCRMDEALADD"], url, configured, "c")
    assert Binding("ONCRMDEALUPDATE", "", "offline", "c") in desired
    assert Binding("ONCRMDEALUPDATE", url) not in desired  # never both ways
    assert {Binding("ONCRMDEALADD", url), Binding(DOORBELL, url)} <= desired
    assert Binding(DOORBELL, url).bind_params()["options"] == {"minTimeout": 1}
    plain = desired_bindings(["ONCRMDEALADD"], url, settings)
    assert Binding(DOORBELL, url) not in plain  # no doorbell without offline events
    assert queue_of(Keys("ns"), DOORBELL) == Keys("ns").lifecycle_queue


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24PIPE_OFFLINE_EVENTS", "oncrmdealupdate, ONCRMLEADADD")
    loaded = load_settings()
    assert loaded.offline_events == ["ONCRMDEALUPDATE", "ONCRMLEADADD"] and loaded.offline_poll == 60.0
    monkeypatch.setenv("B24PIPE_OFFLINE_EVENTS", "ONCRMDEAL;UPDATE")
    with pytest.raises(ConfigurationError, match="B24PIPE_OFFLINE_EVENTS"):
        load_settings()
    monkeypatch.setenv("B24PIPE_OFFLINE_EVENTS", "X")
    monkeypatch.setenv("B24PIPE_OFFLINE_POLL", "0")
    with pytest.raises(ConfigurationError, match="B24PIPE_OFFLINE_POLL"):
        load_settings()


def _offline_settings(settings: Settings, poll: float = 60.0) -> Settings:
    return settings.model_copy(update={"offline_events": ["ONCRMDEALUPDATE"], "offline_poll": poll})


def test_the_doorbell_queues_one_drain_at_most(settings: Settings, r: redis.Redis, keys: Keys) -> None:
    configured = _offline_settings(settings)
    assert doorbell.ring(r, keys, configured, "m1") is True
    assert doorbell.ring(r, keys, configured, "m1") is False  # one already waiting
    assert doorbell.ring(r, keys, configured, "m2") is True  # per portal
    queue = Queue(keys.lifecycle_queue, connection=r)
    assert [job.args for job in queue.jobs] == [("m1",), ("m2",)]
    assert all(job.func_name == DRAIN_OFFLINE for job in queue.jobs)


def test_the_poll_rings_each_portal_once_per_interval_spread_over_it(
    settings: Settings, r: redis.Redis, keys: Keys
) -> None:
    configured = _offline_settings(settings, poll=100.0)
    now = time.time()
    members = [f"m{i}" for i in range(40)]
    for member in members:
        doorbell.schedule(r, keys, configured, member, now)
    phases = [float(r.zscore(keys.offline_due, m) or 0) - now for m in members]
    assert all(0 <= p < 100 for p in phases) and max(phases) - min(phases) > 50  # spread out
    rung = doorbell.poll(configured, r, now + 100)
    assert sorted(rung) == sorted(members)
    assert doorbell.poll(configured, r, now + 100) == []  # the step's lock: one worker per step
    r.delete(keys.offline_poll_lock)
    assert doorbell.poll(configured, r, now + 150) == []  # each moved one interval on
    assert doorbell.poll(settings, r, now + 1000) == []  # nothing is polled without offline events


def test_gauges(settings: Settings, r: redis.Redis, keys: Keys) -> None:
    now = time.time()
    r.zadd(keys.offline_held, {"m1": now - 120, "m2": now - 10})
    r.hset(keys.offline_backlog, mapping={"m1": 5, "m2": 7})
    values = {
        sample.name: sample.value
        for family in QueueCollector(r, keys, 60).collect()
        for sample in family.samples
        if sample.name.startswith("b24pipe_offline")
    }
    assert values["b24pipe_offline_backlog_rows"] == 12
    assert 119 <= values["b24pipe_offline_oldest_batch_age_seconds"] < 200


@pytest.mark.parametrize(
    ("answer", "extended"),
    [({"value": "Y"}, True), ({"value": "N"}, False), (False, False), (True, True), ({}, True), ("0", False)],
)
def test_only_an_explicit_no_from_feature_get_means_no_reservations(answer: object, extended: bool) -> None:
    assert offline.feature_says(answer) is extended

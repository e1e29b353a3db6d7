"""Recurring warnings are throttled to one line per interval with the count of what went
unlogged (``agent.ops.throttle``), and refused input is counted and logged that way, naming
its sender (``agent.node.rejects``)."""

from __future__ import annotations

import logging

from agent.node.rejects import Rejects, sender_label
from agent.ops.throttle import Throttle, more_since


def test_the_first_event_is_due_then_none_until_the_interval_has_passed():
    """``due`` gives an empty count first, None (counted by key) within the interval, and the
    counts by key once it has passed, starting a new interval."""
    now = [100.0]
    t = Throttle(60.0, clock=lambda: now[0])
    assert t.due("a") == {}
    now[0] = 130.0
    assert t.due("a") is None and t.due("b") is None and t.due("a") is None
    now[0] = 160.0
    assert t.due("a") == {"a": 2, "b": 1}
    now[0] = 200.0
    assert t.due() is None


def test_more_since_names_the_count_and_the_keys_only_when_there_are_keys():
    """No events left: nothing; keyed events: the total and each key; only the empty key:
    the total alone."""
    assert more_since({}) == ""
    assert more_since({"b": 1, "a": 3}, "more dropped") == (
        " (and 4 more dropped since the last line: a 3, b 1)")
    assert more_since({"": 5}, "more failed jobs") == " (and 5 more failed jobs since the last line)"


def test_refused_input_is_always_counted_and_logged_once_a_minute_with_the_rest_summed(caplog):
    """Every reject goes to the drop counter; the log gets the first of each reason from each
    sender at once (its sender and why), then one line per interval carrying how many came
    meanwhile, by reason."""
    drops, now = [], [0.0]
    reject = Rejects(drops.append, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
        reject("bad_header", b"w3a", "bad_header: ExtraData")
        for _ in range(40):
            reject("bad_header", b"w3a")
        reject("bad_shape", "w2", "a stage-2 input of float32(1, 3), not float32(1, 8)")
        reject("bad_shape", "w2", "again")
        now[0] = 61.0
        reject("bad_version", b"\x00k\x8b\x45\x67")
        reject("bad_version", b"\x00k\x8b\x45\x67", "later")
        now[0] = 122.0
        reject("bad_header", b"w3a", "bad_header: ExtraData")
    assert len(drops) == 46 and drops.count("bad_header") == 42
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dropped a message from w3a: bad_header: ExtraData",
        "dropped a message from w2: a stage-2 input of float32(1, 3), not float32(1, 8)",
        "dropped a message from a client: bad_version",
        "dropped a message from w3a: bad_header: ExtraData"
        " (and 42 more dropped since the last line: bad_header 40, bad_shape 1, bad_version 1)"]


def test_every_sender_of_another_wire_protocol_is_named_but_the_lines_stay_bounded(caplog):
    """Three peers of an older wire protocol are three lines at once, not one a minute naming
    only one of them; past ``FIRST_PAIRS`` senders the throttle alone speaks."""
    from agent.node.rejects import FIRST_PAIRS

    drops = []
    reject = Rejects(drops.append, clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
        for peer in ("cam", "fast", "slow"):
            for _ in range(10):
                reject("bad_version", peer, "version 1, expected 2")
        for i in range(2 * FIRST_PAIRS):
            reject("bad_header", "client%d" % i)
    named = [r.getMessage().split(": ")[0] for r in caplog.records]
    assert named[:3] == ["dropped a message from cam", "dropped a message from fast",
                         "dropped a message from slow"]
    assert len(named) == FIRST_PAIRS and len(drops) == 30 + 2 * FIRST_PAIRS


def test_the_named_senders_are_forgotten_hourly_so_a_new_one_is_named_even_after_many():
    """Rule: clients fill the set of named senders (a routing id per connection); an hour on,
    a peer of another wire protocol is named at once again, not left to the minute's line."""
    from agent.node.rejects import FIRST_PAIRS, FIRST_PAIRS_FORGET_S

    now = [0.0]
    reject = Rejects(lambda reason: None, clock=lambda: now[0])
    lines = []
    logger = logging.getLogger("agent.node.loop")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    try:
        for i in range(FIRST_PAIRS):
            reject("bad_input", "client%d" % i)
        now[0] = 30.0
        reject("bad_version", "w2", "wire protocol 1, expected 2")  # set full: the throttle's
        assert not any(line.startswith("dropped a message from w2") for line in lines)
        now[0] = FIRST_PAIRS_FORGET_S + 1.0
        reject("bad_version", "w3", "wire protocol 1, expected 2")
    finally:
        logger.removeHandler(handler)
    assert lines[-1] == "dropped a message from w3: wire protocol 1, expected 2"


def test_a_sender_prints_as_its_node_id_or_as_a_client_when_it_is_not_text():
    """Node ids (str or routing-id bytes) print as they are; ZeroMQ's binary ids, which
    change with every connection, as the one anonymous sender."""
    assert sender_label("w1") == "w1" and sender_label(b"s1") == "s1"
    assert sender_label(b"\x00\x80\x00\x00\x29") == "a client"

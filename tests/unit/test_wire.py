"""Wire contract: round trips, zero-copy tensor frames, and every kind of junk is a WireError."""

from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest

from agent.protocol import wire
from agent.protocol.wire import Kind, WireError


def _task_fields(**over):
    f = {"id": "t1", "source": "s1", "stage": 1, "attempt": 0, "created": 1.5, "hops": 0,
         "resends": 0}
    f.update(over)
    return f


def test_task_round_trip_keeps_fields_and_tensor():
    x = np.arange(784, dtype=np.float32).reshape(1, 1, 28, 28)
    frames = wire.encode(Kind.TASK, "s1", _task_fields(), [x], slot=3, round=2)
    msg = wire.decode([bytes(f) for f in frames])
    assert msg.kind == Kind.TASK and msg.sender == "s1" and (msg.slot, msg.round) == (3, 2)
    assert msg.fields["id"] == "t1" and msg.fields["created"] == 1.5
    assert msg.tensors[0].dtype == np.float32 and np.array_equal(msg.tensors[0], x)


def test_tensor_frame_is_a_view_on_the_callers_array_not_a_copy():
    """Large tensors travel as memoryviews of the array so ZeroMQ can send them zero-copy."""
    x = np.zeros((1, 64, 32, 32), dtype=np.float32)  # 256 KiB
    frames = wire.encode(Kind.TASK, "s1", _task_fields(), [x])
    assert isinstance(frames[1], memoryview)
    x[0, 0, 0, 0] = 7.0
    assert np.frombuffer(frames[1], dtype=np.float32)[0] == 7.0


def test_non_contiguous_tensor_is_refused_at_the_sender():
    x = np.zeros((4, 4), dtype=np.float32)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        wire.encode(Kind.TASK, "s1", _task_fields(), [x])


def test_control_and_result_round_trip():
    msg = wire.decode(wire.encode(Kind.DTOEE_REQUEST, "w1", {"to": "w2", "payload": {"xi": 2.0}}))
    assert msg.fields == {"to": "w2", "payload": {"xi": 2.0}}
    res = {"id": "t", "attempt": 1, "source": "s", "exit_stage": 2, "cls": 3, "confidence": 0.9,
           "worker": "w", "hops": 2, "resends": 1, "created": 0.0}
    assert wire.decode(wire.encode(Kind.RESULT, "w", res)).fields == res
    assert wire.topic("w1") == b"w1|" and not wire.topic("w10").startswith(wire.topic("w1"))


def _header(**over):
    h = {"v": wire.VERSION, "k": int(Kind.TASK), "from": "s1", "slot": 0, "round": 0,
         "t": [["float32", [1, 4]]]}
    h.update(_task_fields())
    h.update(over)
    return msgpack.packb(h)


@pytest.mark.parametrize("frames, reason", [
    ([], "empty"),
    ([b"\xc1\xc1\xc1"], "bad_header"),
    ([_header()[:-5], b"\0" * 16], "bad_header"),
    ([msgpack.packb([1, 2, 3])], "bad_header"),
    ([_header(v=99), b"\0" * 16], "bad_version"),
    ([_header(k=77), b"\0" * 16], "bad_kind"),
    ([_header(id=5), b"\0" * 16], "bad_field"),
    ([_header(created=float("nan")), b"\0" * 16], "bad_field"),
    ([_header(hops=-1), b"\0" * 16], "bad_field"),
    ([_header(), b"\0" * 15], "bad_tensor"),
    ([_header(t=[["complex128", [1, 1]]]), b"\0" * 16], "bad_tensor"),
    ([_header(t=[["float32", [1, -4]]]), b"\0" * 16], "bad_tensor"),
    ([_header(), b"\0" * 16, b"extra"], "bad_tensor"),
    ([_header()], "bad_tensor"),
    ([b"\x80" + b"x" * (wire.MAX_HEADER_BYTES + 1)], "oversized"),
])
def test_malformed_frames_raise_wire_error_with_a_counter_reason(frames, reason):
    with pytest.raises(WireError) as info:
        wire.decode(frames)
    assert info.value.reason == reason


def test_random_junk_never_raises_anything_but_wire_error():
    """Decoding arbitrary bytes fails only with WireError (the agent counts and drops it)."""
    rng = random.Random(7)
    good = wire.encode(Kind.TASK, "s1", _task_fields(), [np.ones((1, 4), np.float32)])
    for i in range(3000):
        if i % 3 == 0:
            frames = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))]
        else:  # flip bytes in a valid header
            h = bytearray(good[0])
            for _ in range(rng.randint(1, 4)):
                h[rng.randrange(len(h))] = rng.getrandbits(8)
            frames = [bytes(h), bytes(good[1])]
        try:
            wire.decode(frames)
        except WireError:
            pass


def test_optional_fields_are_type_checked_when_present_and_absent_by_default():
    """TASK ttl_s/token, ACK refused/reason/retry_s, RESULT outcome/reason and HEARTBEAT
    no_route are optional: decoded when present, a wrong type is a bad_field drop."""
    from agent.protocol.wire import WireError, decode, encode
    x = np.zeros((1, 2), np.float32)
    task = {"id": "t", "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
            "resends": 0}
    assert "ttl_s" not in decode(encode(Kind.TASK, "s1", task, [x])).fields
    m = decode(encode(Kind.TASK, "s1", dict(task, ttl_s=2.5, token="ab"), [x]))
    assert m.fields["ttl_s"] == 2.5 and m.fields["token"] == "ab"
    with pytest.raises(WireError) as e:
        decode(encode(Kind.TASK, "s1", dict(task, ttl_s="soon"), [x]))
    assert e.value.reason == "bad_field"
    ack = decode(encode(Kind.ACK, "w1", {"keys": ["a#0"], "refused": ["b#0"],
                                         "reason": "overload", "retry_s": 0.05}))
    assert ack.fields["refused"] == ["b#0"] and ack.fields["reason"] == "overload"
    with pytest.raises(WireError):
        decode(encode(Kind.ACK, "w1", {"keys": [], "refused": [1]}))


def test_a_client_answer_without_a_class_is_a_valid_result():
    """The answer to a local client for a rejected/lost/refused task: cls -1, outcome and reason
    set, decodable by anyone holding the wire contract; an unknown outcome is refused."""
    from agent.protocol.wire import WireError, answer_fields, decode, encode
    f = answer_fields("c7", "s1", "rejected", "no_route", 12.0)
    m = decode(encode(Kind.RESULT, "s1", f))
    assert (m.fields["cls"], m.fields["outcome"], m.fields["reason"], m.fields["id"]) == \
        (-1, "rejected", "no_route", "c7")
    with pytest.raises(WireError):
        decode(encode(Kind.RESULT, "s1", dict(f, outcome="maybe")))
    with pytest.raises(ValueError):
        answer_fields("c7", "s1", "completed", "", 0.0)


def _result_fields(i):
    return {"id": "t%d" % i, "attempt": 0, "source": "s1", "exit_stage": 4, "cls": 3,
            "confidence": 0.75, "worker": "w4a", "hops": 4, "resends": 0, "created": 1.0,
            "token": "k%d" % i}


def test_a_results_batch_round_trips_each_result_with_its_own_fields():
    """RESULTS carries several RESULTs for one source in one message; each item decodes to the
    same fields a RESULT of its own would (token and optional fields included)."""
    items = [_result_fields(i) for i in range(5)]
    items[2]["level"] = 2
    m = wire.decode([bytes(f) for f in wire.encode(Kind.RESULTS, "w4a", {"items": items})])
    assert m.kind == Kind.RESULTS and m.fields["items"] == items
    one = wire.decode(wire.encode(Kind.RESULT, "w4a", items[2]))
    assert m.fields["items"][2] == one.fields


def _results_header(items, **over):
    h = {"v": wire.VERSION, "k": int(Kind.RESULTS), "from": "w4a", "slot": 0, "round": 0,
         "t": [], "items": items}
    h.update(over)
    return [msgpack.packb(h)]


@pytest.mark.parametrize("items", [
    [],  # empty batch
    [_result_fields(i) for i in range(wire.MAX_BATCH + 1)],  # above the bound
    [_result_fields(0), "not a map"],
    [_result_fields(0), dict(_result_fields(1), confidence="high")],  # a mistyped field
    [_result_fields(0), {k: v for k, v in _result_fields(1).items() if k != "token" and
                         k != "id"}],  # a missing field
    [dict(_result_fields(0), outcome="maybe")],
    "items",  # not a list
])
def test_a_results_batch_with_any_bad_item_is_dropped_whole_as_bad_field(items):
    """A batch is valid only when every item is a valid RESULT, so a receiver never half-takes
    one: the sender keeps custody of each result and re-sends it."""
    with pytest.raises(WireError) as info:
        wire.decode(_results_header(items))
    assert info.value.reason == "bad_field"


def test_a_results_batch_of_another_protocol_version_is_dropped_as_bad_version():
    """RESULTS came with protocol version 2: a version-1 header is another protocol."""
    with pytest.raises(WireError) as info:
        wire.decode(_results_header([_result_fields(0)], v=1))
    assert info.value.reason == "bad_version"
    assert wire.VERSION == 2
    assert str(info.value).startswith("bad_version: wire protocol 1, expected 2: every agent "
                                      "and client of a fleet must speak one"), str(info.value)


def test_the_sender_refuses_an_empty_oversized_or_incomplete_results_batch():
    for items in ([], [_result_fields(i) for i in range(wire.MAX_BATCH + 1)],
                  [{"id": "t1"}]):
        with pytest.raises(ValueError):
            wire.encode(Kind.RESULTS, "w4a", {"items": items})


@pytest.mark.parametrize("field, value, ok", [
    ("hops", 2 ** 53 - 1, True), ("hops", 2 ** 53, False), ("hops", 2 ** 64 - 1, False),
    ("resends", 2 ** 63, False), ("slot", 2 ** 64 - 1, False), ("round", 2 ** 60, False)])
def test_integer_fields_stay_below_2_to_53_so_a_plus_one_still_encodes(field, value, ok):
    """An integer field at or above 2**53 is a bad field: a TASK with hops 2**64 - 1 was taken,
    its RESULT's hops + 1 no longer encoded, and the whole RESULTS batch it joined failed."""
    x = np.zeros(4, dtype=np.float32)
    header = {"slot": 0, "round": 0}
    fields = _task_fields()
    (header if field in header else fields)[field] = value
    frames = [bytes(f) for f in wire.encode(Kind.TASK, "s1", fields, [x], **header)]
    if ok:
        msg = wire.decode(frames)
        assert msg.fields[field] + 1 == value + 1
        wire.encode(Kind.RESULT, "w1", {"id": "t1", "attempt": 0, "source": "s1",
                                        "exit_stage": 1, "cls": 0, "confidence": 0.5,
                                        "worker": "w1", "hops": msg.fields["hops"] + 1,
                                        "resends": 0, "created": 1.5})
    else:
        with pytest.raises(WireError) as err:
            wire.decode(frames)
        assert err.value.reason == "bad_field"


def test_a_negative_class_is_bounded_too():
    """``cls`` may be negative (-1: no class), but not beyond -2**53."""
    base = {"id": "t1", "attempt": 0, "source": "s1", "exit_stage": 1, "confidence": 0.5,
            "worker": "w1", "hops": 1, "resends": 0, "created": 1.5}
    assert wire.decode(wire.encode(Kind.RESULT, "w1", dict(base, cls=-1))).fields["cls"] == -1
    with pytest.raises(WireError):
        wire.decode([bytes(f) for f in wire.encode(Kind.RESULT, "w1", dict(base, cls=-2 ** 60))])


def test_peek_id_reads_the_id_of_a_refused_message_as_a_string_or_none():
    """``peek_id`` gives the id in the header of a message ``decode`` refuses (so a client can
    be answered): a string as it is, a number or bytes as their text (a client that sent an
    int id is answered under "42"); None for junk, a non-map header, a missing or empty id or
    one of another type (a list)."""
    u16 = wire.encode(Kind.TASK, "cam", {"id": "c7", "source": "me", "stage": 1, "attempt": 0,
                                         "created": 0.0, "hops": 0, "resends": 0},
                      [np.zeros((1, 2), np.uint16)])
    with pytest.raises(WireError):
        wire.decode(u16)
    assert wire.peek_id(u16) == "c7"
    for tid, want in ((42, "42"), (2.5, "2.5"), (b"cam-1", "cam-1")):
        assert wire.peek_id([msgpack.packb({"id": tid}, use_bin_type=True)]) == want
    for frames in ([b"\xc1junk"], [msgpack.packb([1, 2])], [msgpack.packb({"id": [5]})],
                   [msgpack.packb({"k": 1})], [msgpack.packb({"id": ""})], [b"x" * 70000]):
        assert wire.peek_id(frames) is None


def test_a_task_with_a_number_for_its_id_is_refused_saying_the_id_must_be_a_string():
    """Rule: decode refuses a TASK whose id is an int (bad_field) with a message naming the
    id, that it must be a string and what it was: the detail its client is answered with."""
    frames = wire.encode(Kind.TASK, "cam", {"id": 42, "source": "me", "stage": 1, "attempt": 0,
                                            "created": 0.0, "hops": 0, "resends": 0},
                         [np.zeros((1, 2), np.float32)])
    with pytest.raises(WireError) as err:
        wire.decode(frames)
    assert err.value.reason == "bad_field"
    assert str(err.value) == "bad_field: id must be a string, not int"

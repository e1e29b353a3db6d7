"""Garbage from the network is refused with a short, printable explanation.

A header may carry up to 64 KiB of one string; a refusal quotes what came (a version, a kind,
a dtype, a node id, a heartbeat's role). Rules checked: ``WireError``'s text is one printable
line of at most ``text.DETAIL_MAX_CHARS`` characters whatever came (it becomes a log line and a
client's answer ``detail``), and a source's answer quoting it still fits the header bound a
client decodes; ``Rejects`` logs one printable line of bounded length however long or
escape-laden the explanation it is given.
"""

from __future__ import annotations

import logging
import time

import msgpack
import numpy as np
import pytest

from agent.node.peerstate import heartbeat_problem
from agent.node.rejects import Rejects
from agent.config.peer import Peer
from agent.protocol import wire
from agent.protocol.text import DETAIL_MAX_CHARS
from agent.protocol.wire import Kind, WireError

BIG = 60000  # characters of one string: the header stays below wire.MAX_HEADER_BYTES


def _header(**over):
    h = {"v": wire.VERSION, "k": int(Kind.TASK), "from": "cam", "slot": 0, "round": 0,
         "t": [["float32", [1, 1, 8, 8]]], "id": "t1", "source": "cam", "stage": 1,
         "attempt": 0, "created": time.time(), "hops": 0, "resends": 0}
    h.update(over)
    return h


TENSOR = np.zeros((1, 1, 8, 8), np.float32).tobytes()
CASES = {
    "version": _header(v="A" * BIG),
    "kind": _header(k="B" * BIG),
    "dtype of control bytes": _header(t=[["\x00" * BIG, [1, 1, 8, 8]]]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_refusal_quoting_a_64_KiB_string_is_one_short_printable_line(name):
    """Rule: a refused header's explanation is at most DETAIL_MAX_CHARS printable characters
    (quoted whole, one header of 60 KB of one string made a 60 KB log line; of control bytes,
    a 240 KB one)."""
    frames = [msgpack.packb(CASES[name], use_bin_type=True), TENSOR]
    assert len(frames[0]) <= wire.MAX_HEADER_BYTES
    with pytest.raises(WireError) as err:
        wire.decode(frames)
    detail = str(err.value).split(": ", 1)[1]
    assert len(detail) <= DETAIL_MAX_CHARS and detail.isprintable(), (name, len(detail))


def test_a_clients_answer_quoting_its_refused_header_still_decodes():
    """Rule: a source answers a client's refused task with the refusal as ``detail``; that
    answer must fit the header bound the client's decoder keeps (quoted whole, the detail of a
    dtype of 20,000 zero bytes was 80 KB, and the client refused its own answer as oversized,
    never learning why its task failed)."""
    frames = [msgpack.packb(_header(t=[["\x00" * 20000, [1, 1, 8, 8]]]), use_bin_type=True),
              TENSOR]
    with pytest.raises(WireError) as err:
        wire.decode(frames)
    assert wire.peek_id(frames) == "t1"
    answer = wire.encode(Kind.RESULT, "s1", wire.answer_fields(
        "t1", "s1", "error", "bad_input", time.time(), str(err.value)))
    got = wire.decode(answer)  # the client's decode
    assert got.fields["detail"].startswith("bad_tensor: dtype '\\x00")


def _peer():
    return Peer(id="w1", stage=1, control_address="tcp://127.0.0.1:1",
                data_address="tcp://127.0.0.1:2")


def test_a_heartbeat_role_of_escape_codes_and_newlines_is_logged_as_one_clean_line(caplog):
    """Rule: a dropped message is logged as one printable line of bounded length: a listed
    peer's heartbeat whose ``role`` holds escape codes, a newline and a forged log line, or
    60 KB of text, is refused (``drop_bad_heartbeat``) and its line carries none of them."""
    drops = []
    rejects = Rejects(drops.append)
    fields = {"role": "\x1b[2J\n2026-01-01 00:00:00,000 INFO agent.run: forged" + "x" * BIG,
              "stage": 1, "capacity_flops": 1e9, "input_queue": 0, "output_queue": 0,
              "service_time_s": 0.01}
    why = heartbeat_problem(fields, _peer(), 2)
    assert why
    with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
        rejects("bad_heartbeat", "w1", why)
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.node.loop"]
    assert drops == ["bad_heartbeat"] and len(lines) == 1
    line = lines[0]
    assert line.startswith("dropped a message from w1: it claims to be a ?[2J?2026-01-01")
    assert line.isprintable() and len(line) <= DETAIL_MAX_CHARS + 40, len(line)

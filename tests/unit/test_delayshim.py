"""The NFQUEUE delay line's pure parts: netlink messages built and parsed, packets held for
their queue's delay and released in order, bad arguments refused."""

import struct

import pytest

from agent.testbed import delayshim as d

# A queued-packet notice as the kernel sent it for a UDP datagram on queue 5 (captured on
# Linux 6.18 with metadata-only copy mode): packet id 1, hook OUTPUT.
KERNEL_PACKET = bytes.fromhex(
    "30000000000300000000000000000000020000050b0001000000000108000300"
    "080006000000000108000e0000000001")


def test_a_packet_notice_from_the_kernel_parses_to_its_queue_and_id():
    assert list(d.parse(KERNEL_PACKET)) == [("packet", 5, 1)]


def test_a_truncated_or_empty_datagram_yields_nothing_and_raises_nothing():
    assert list(d.parse(KERNEL_PACKET[:20])) == []
    assert list(d.parse(b"")) == []
    assert list(d.parse(b"\x04\0\0\0" + b"\0" * 12)) == []  # length below a header


def test_an_ack_parses_to_its_sequence_and_errno():
    ok = struct.pack("=IHHII", 36, d.NLMSG_ERROR, 0, 7, 0) + struct.pack("=i", 0) + b"\0" * 16
    busy = struct.pack("=IHHII", 36, d.NLMSG_ERROR, 0, 8, 0) + struct.pack("=i", -16) + b"\0" * 16
    assert list(d.parse(ok + busy)) == [("error", 7, 0), ("error", 8, 16)]


def test_bind_and_verdict_messages_carry_the_queue_big_endian_and_their_lengths():
    m = d.bind_message(300, seq=4)
    length, kind, flags, seq, _ = d.NLMSG_HDR.unpack_from(m)
    assert length == len(m) and len(m) % 4 == 0
    assert kind == (d.NFNL_SUBSYS_QUEUE << 8) | d.NFQNL_MSG_CONFIG
    assert flags & d.NLM_F_ACK and seq == 4
    assert struct.unpack_from("!H", m, 18)[0] == 300
    v = d.accept_through(11, 0x01020304)
    assert (d.NLMSG_HDR.unpack_from(v)[1] ==
            (d.NFNL_SUBSYS_QUEUE << 8) | d.NFQNL_MSG_VERDICT_BATCH)
    assert v[-8:] == struct.pack("!II", d.NF_ACCEPT, 0x01020304)


def test_held_packets_are_released_after_their_queue_delay_in_one_batch_per_queue():
    line = d.DelayLine({5: 0.05})
    line.on_datagram(KERNEL_PACKET, now=10.0)
    line.on_datagram(_packet(5, 2), now=10.01)
    line.on_datagram(_packet(9, 3), now=10.01)  # a queue this line does not serve
    assert line.next_release() == pytest.approx(10.05)
    assert line.due(10.049) == []
    assert line.due(10.05) == [(5, 1, 1)]
    assert line.due(10.2) == [(5, 2, 1)]
    assert line.next_release() is None
    assert line.counts == {"packets": 2, "released": 2, "overruns": 0}


def test_packets_due_together_are_accepted_by_one_verdict_up_to_the_last_id():
    line = d.DelayLine({5: 0.0})
    for i in (1, 2, 3):
        line.on_datagram(_packet(5, i), now=1.0)
    assert line.due(1.0) == [(5, 3, 3)]


@pytest.mark.parametrize("item", ["11", "x=5", "11=-1", "70000=5", "11=ms"])
def test_a_bad_queue_argument_is_refused_with_its_text(item):
    with pytest.raises(ValueError, match="QUEUE=DELAY_MS"):
        d.parse_queues([item])


def _packet(queue, packet_id):
    """A packet notice like the kernel's, for another queue and id."""
    body = bytearray(KERNEL_PACKET)
    struct.pack_into("!H", body, 18, queue)
    struct.pack_into("!I", body, 24, packet_id)
    return bytes(body)

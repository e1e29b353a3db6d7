"""Kernel link shaping for the netns testbed: pure builders of ``tc`` command lines.

Every device namespace has one interface (``eth0``) to the hub; the hub has one (``h<k>``) to
each device. A directed link between two devices is shaped on the sender's ``eth0``: an HTB
root qdisc, one class per destination device at the link's rate (a u32 filter on the
destination address picks it), the rest of the traffic in a fast default class. Class 1:2
feeds a ``pfifo limit 0`` qdisc, which drops every packet it is given: faults (blackhole,
loss) add filters in front of the shaping ones that send packets there. Loss uses a classic
BPF filter reading the kernel's random number (``ld rand``), so it needs no ``sch_netem``.

Every message must cost the link its bytes over the rate, as on a real link. Two kernel
defaults stand in the way, and both are turned off: segmentation offload (GSO/TSO) lets TCP
hand a veth a whole ~4 KB message as one super-packet, and HTB sends a packet whenever its
class has tokens (paying after), so on an idle 41.7 KB/s link a 3.9 KB message arrived in
0.2 ms instead of ~94 ms (``python -m agent.testbed.netcheck`` measures it); and HTB's default
bucket holds about one MTU, so the first 1.5 KB after a pause are free. With
``gso_max_segs 1`` on every interface a message leaves as MTU-sized packets, and a shaped class
has a bucket of ``BURST_S`` of its rate (at least one byte): an idle link now releases each
packet when the link would start sending it, so a message is delivered after (its bytes but
the last packet) / rate, and a busy link carries exactly its rate.

Nothing here runs a command: ``agent.testbed.netns`` runs what these functions return.
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional

DEFAULT_CLASS = 1  # 1:1, unshaped traffic
DROP_CLASS = 2  # 1:2, drops every packet (pfifo limit 0)
FAST_BITS_S = 10 * 10 ** 9  # "unshaped": 10 Gbit/s
LINK_PREF = 1000  # tc filter preference of the shaping filters (fault filters come first)
QUEUE_PACKETS = 1000  # queue of a shaped link's class, packets
# A shaped class's token bucket, seconds of its rate: large enough to absorb the qdisc
# watchdog's lateness (credit beyond the bucket is lost, so a smaller one slows a busy link),
# small enough that an idle link gives nothing away (the HTB default, ~1 MTU, is 36 ms free at
# 41.7 KB/s).
BURST_S = 0.001

Cmd = List[str]


def bits(rate_bytes_s: float) -> str:
    """A tc rate in bit/s from a rate in bytes/s (at least 8 bit/s)."""
    return "%dbit" % max(8, int(round(float(rate_bytes_s) * 8)))


def burst(rate_bytes_s: float) -> str:
    """A shaped class's bucket, ``BURST_S`` of its rate in bytes (at least 1 byte)."""
    return "%db" % max(1, int(float(rate_bytes_s) * BURST_S))


def one_packet_per_send(ns: str, dev: str) -> Cmd:
    """``dev`` in ``ns`` gets no segmentation offload (module docstring): the qdisc sees
    MTU-sized packets, not a whole message as one."""
    return ["ip", "-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1"]


def tc(ns: str, *args: str) -> Cmd:
    """``tc`` run inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, "tc"] + list(args)


def root_commands(ns: str, dev: str) -> List[Cmd]:
    """HTB root on ``dev`` with the fast default class and the drop class."""
    return [
        tc(ns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb",
           "default", str(DEFAULT_CLASS)),
        tc(ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:%d" % DEFAULT_CLASS,
           "htb", "rate", "%dbit" % FAST_BITS_S, "quantum", "60000"),
        tc(ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:%d" % DROP_CLASS,
           "htb", "rate", "%dbit" % FAST_BITS_S, "quantum", "60000"),
        tc(ns, "qdisc", "add", "dev", dev, "parent", "1:%d" % DROP_CLASS, "handle",
           "%d:" % DROP_CLASS, "pfifo", "limit", "0"),
    ]


def class_commands(ns: str, dev: str, minor: int, rate_bytes_s: Optional[float],
                   change: bool = False, delay_ms: float = 0.0) -> List[Cmd]:
    """The HTB class 1:minor at a rate (None: unshaped) with its queue, a netem delay line
    when ``delay_ms`` (``change``: alter the rate of an existing class)."""
    rate = bits(rate_bytes_s) if rate_bytes_s else "%dbit" % FAST_BITS_S
    bucket = ["burst", burst(rate_bytes_s), "cburst", burst(rate_bytes_s)] if rate_bytes_s else []
    cmd = tc(ns, "class", "change" if change else "add", "dev", dev, "parent", "1:",
             "classid", "1:%d" % minor, "htb", "rate", rate, "ceil", rate, *bucket,
             "quantum", "1514")
    if change:
        return [cmd]
    leaf = (["netem", "delay", "%gms" % delay_ms, "limit", str(QUEUE_PACKETS)] if delay_ms
            else ["pfifo", "limit", str(QUEUE_PACKETS)])
    return [cmd, tc(ns, "qdisc", "add", "dev", dev, "parent", "1:%d" % minor, "handle",
                    "%d:" % minor, *leaf)]


def link_commands(ns: str, dev: str, minor: int, dst_ip: str, rate_bytes_s: Optional[float],
                  delay_ms: float = 0.0) -> List[Cmd]:
    """A shaped link from this device to ``dst_ip``: its class and the filter that picks it."""
    return class_commands(ns, dev, minor, rate_bytes_s, delay_ms=delay_ms) + [
        tc(ns, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "pref",
           str(LINK_PREF + minor), "u32", "match", "ip", "dst", dst_ip + "/32",
           "flowid", "1:%d" % minor)]


def drop_filter(ns: str, dev: str, pref: int, dst_ip: Optional[str] = None) -> Cmd:
    """Drop what ``dev`` sends (to ``dst_ip`` only, when given): a blackhole."""
    match = ["match", "ip", "dst", dst_ip + "/32"] if dst_ip else ["match", "u32", "0", "0"]
    return tc(ns, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "pref",
              str(pref), "u32", *match, "flowid", "1:%d" % DROP_CLASS)


def loss_program(loss: float, dst_ip: Optional[str] = None) -> str:
    """Classic BPF (tc ``bytecode`` syntax) matching a random ``loss`` fraction of IPv4
    packets (to ``dst_ip`` only, when given); offsets count from the Ethernet header."""
    if not 0.0 < loss < 1.0:
        raise ValueError("loss must be in (0, 1), got %r" % (loss,))
    keep = max(1, min(2 ** 32, int(round((1.0 - loss) * 2 ** 32))))  # random numbers kept
    rand = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM
    ops = []
    if dst_ip:
        ip = int(ipaddress.IPv4Address(dst_ip))
        ops += [(0x28, 0, 0, 12),  # ldh [12]: ethertype
                (0x15, 0, 5, 0x0800),  # IPv4, else no match (the last instruction)
                (0x20, 0, 0, 30),  # ld [30]: destination address
                (0x15, 0, 3, ip)]  # that address, else no match
    ops += [(0x20, 0, 0, rand),  # ld rand
            (0x25, 0, 1, keep - 1),  # keep or above: match (drop)
            (0x06, 0, 0, 0xFFFFFFFF),  # ret -1: match, the filter's class
            (0x06, 0, 0, 0)]  # ret 0: no match
    return ",".join([str(len(ops))] + ["%d %d %d %d" % op for op in ops])


def loss_filter(ns: str, dev: str, pref: int, loss: float, dst_ip: Optional[str] = None) -> Cmd:
    """Drop a random ``loss`` fraction of what ``dev`` sends (to ``dst_ip`` when given)."""
    return tc(ns, "filter", "add", "dev", dev, "parent", "1:", "protocol", "all", "pref",
              str(pref), "bpf", "bytecode", loss_program(loss, dst_ip),
              "flowid", "1:%d" % DROP_CLASS)


def delete_filter(ns: str, dev: str, pref: int) -> Cmd:
    """Remove every filter at preference ``pref`` (a fault's, when it ends)."""
    return tc(ns, "filter", "del", "dev", dev, "parent", "1:", "pref", str(pref))

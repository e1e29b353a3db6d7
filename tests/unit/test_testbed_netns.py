"""The netns testbed's pure parts: device plan, ip/tc command builders, the loss filter's BPF
program, fault schedules and their commands, per-phase delays."""

import ipaddress
import json
import struct

import pytest

from agent.testbed import shaping
from agent.testbed.faults import Fault, loopback_problem
from agent.testbed.inject import FAULT_PREF, fault_commands
from agent.testbed.netns import plan_network, setup_commands
from agent.testbed.phases import RECOVERED_RUN, fault_phases, recovery_label, recovery_time
from agent.testbed.topology import TopologyError, load_topology, parse_topology


def _topo(**extra):
    obj = {"sources": [{"id": "cam", "share": 1.0, "host": "box"}],
           "workers": [{"id": "w1", "stage": 1, "host": "box"}, {"id": "w2", "stage": 1},
                       {"id": "w3", "stage": 2}],
           "links": [{"from": "cam", "to": "w1"},
                     {"from": "cam", "to": "w2", "rate_bytes_s": 5e4, "loss": 0.01},
                     {"from": "w1", "to": "w3", "rate_bytes_s": 1e6},
                     {"from": "w2", "to": "w3"}]}
    obj.update(extra)
    return parse_topology(obj)


def test_agents_with_the_same_host_share_one_device_and_others_get_their_own():
    """host groups agents into one namespace; an agent without a host is a device alone."""
    plan = plan_network(_topo(), prefix="eatb1")
    assert [d.nodes for d in plan.devices] == [("cam", "w1"), ("w2",), ("w3",)]
    assert plan.address_of("cam") == plan.address_of("w1") == "10.200.1.2"
    assert plan.device_of("w3").ns == "eatb1-d3" and plan.hub == "eatb1-hub"


def test_a_rated_link_is_shaped_both_ways_between_its_devices():
    """cam->w2 at 5e4 shapes device 1 -> 2 and 2 -> 1; w1->w3 at 1e6 shapes 1 -> 3 and back;
    unrated links are not shaped."""
    plan = plan_network(_topo(), prefix="eatb1")
    got = {(s.src, s.dst): (s.rate_bytes_s, s.loss) for s in plan.shaped}
    assert got == {(1, 2): (5e4, 0.01), (2, 1): (5e4, 0.01), (1, 3): (1e6, 0.0),
                   (3, 1): (1e6, 0.0)}


def test_two_links_joining_the_same_devices_at_different_rates_are_refused():
    """Agents sharing a device: their links to one other device must agree."""
    obj = {"sources": [{"id": "a", "share": 0.5, "host": "h"}, {"id": "b", "share": 0.5,
                                                                 "host": "h"}],
           "workers": [{"id": "w", "stage": 1}],
           "links": [{"from": "a", "to": "w", "rate_bytes_s": 1e5},
                     {"from": "b", "to": "w", "rate_bytes_s": 2e5}]}
    with pytest.raises(TopologyError, match="same two devices"):
        plan_network(parse_topology(obj), prefix="eatb1")


def test_setup_builds_namespaces_veths_routes_and_one_htb_class_per_shaped_link():
    """Every namespace is added first; each device gets a veth without segmentation offload on
    either end, an address, a default route via the hub and an HTB root; each shaped link a
    class at its rate with a bucket of 1 ms of it and a u32 filter on the destination address;
    a lossy link a BPF filter."""
    plan = plan_network(_topo(), prefix="eatb1")
    cmds = [" ".join(c) for c in setup_commands(plan)]
    assert cmds[:4] == ["ip netns add eatb1-hub", "ip netns add eatb1-d1", "ip netns add eatb1-d2",
                        "ip netns add eatb1-d3"]
    assert "ip -n eatb1-hub link add name h2 type veth peer name eth0 netns eatb1-d2" in cmds
    assert "ip -n eatb1-d2 route add default via 10.200.2.1" in cmds
    assert ("ip netns exec eatb1-d1 tc class add dev eth0 parent 1: classid 1:12 htb rate "
            "400000bit ceil 400000bit burst 50b cburst 50b quantum 1514") in cmds
    assert "ip -n eatb1-d2 link set dev eth0 gso_max_segs 1" in cmds
    assert "ip -n eatb1-hub link set dev h2 gso_max_segs 1" in cmds
    assert any(c.endswith("u32 match ip dst 10.200.2.2/32 flowid 1:12") and "eatb1-d1" in c
               for c in cmds)
    assert sum(" bpf bytecode " in c for c in cmds) == 2  # cam->w2 lossy, both ways
    assert sum(" htb default 1" in c for c in cmds) == 6  # every device and hub-side end


def run_cbpf(program, packet, rand):
    """Interpret the classic BPF subset the loss filter uses over an Ethernet frame."""
    ops = [tuple(int(x) for x in op.split()) for op in program.split(",")[1:]]
    assert int(program.split(",")[0]) == len(ops)
    a, pc = 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        if code == 0x28:
            a = struct.unpack("!H", packet[k:k + 2])[0]
        elif code == 0x20:
            a = rand if k == 0xFFFFF000 + 56 else struct.unpack("!I", packet[k:k + 4])[0]
        elif code in (0x15, 0x25):
            hit = a == k if code == 0x15 else a > k
            pc += jt if hit else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError("unexpected opcode %#x" % code)
        pc += 1


def _frame(dst):
    ip = bytes(16) + ipaddress.IPv4Address(dst).packed
    return bytes(12) + b"\x08\x00" + ip


def test_the_loss_program_matches_a_random_fraction_of_packets_to_its_destination():
    """Matched (-1, dropped) when the kernel's random number lies in the top ``loss`` of its
    range and the packet goes to the address; never for another address."""
    prog = shaping.loss_program(0.25, "10.200.3.2")
    to, other = _frame("10.200.3.2"), _frame("10.200.4.2")
    rands = range(0, 2 ** 32, 2 ** 24)
    dropped = sum(run_cbpf(prog, to, r) == 0xFFFFFFFF for r in rands)
    assert dropped == 64  # a quarter of 256 evenly spread random numbers
    assert all(run_cbpf(prog, other, r) == 0 for r in rands)
    anywhere = shaping.loss_program(0.5)
    assert sum(run_cbpf(anywhere, other, r) != 0 for r in rands) == 128


def test_tc_rates_are_bits_per_second():
    """Bytes/s times 8, at least 8 bit/s."""
    assert shaping.bits(41.7e3) == "333600bit" and shaping.bits(0.1) == "8bit"


def test_a_shaped_class_gives_an_idle_link_at_most_a_millisecond_of_its_rate():
    """The bucket is BURST_S of the rate in bytes, at least one byte (HTB's default, about an
    MTU, would deliver the first 1.5 KB after a pause for free)."""
    assert shaping.burst(41.7e3) == "41b" and shaping.burst(1.6e6) == "1600b"
    assert shaping.burst(10.0) == "1b"
    change = shaping.class_commands("ns", "eth0", 12, 2e4, change=True)[0]
    assert change[-6:] == ["burst", "20b", "cburst", "20b", "quantum", "1514"]


def test_fault_schedules_are_checked_field_by_field():
    """Process faults need a worker, network faults an existing link or node, loss and rate
    their value; each error names the entry's field."""
    ok = _topo(faults=[{"at": 1, "duration": 2, "kind": "kill", "target": "w3"},
                       {"at": 2, "duration": 1, "kind": "loss", "target": "*", "loss": 0.05},
                       {"at": 3, "duration": 1, "kind": "rate", "target": "cam->w2",
                        "rate_bytes_s": 1e4}])
    assert [f.kind for f in ok.faults] == ["kill", "loss", "rate"]
    bad = [({"at": 1, "kind": "kill", "target": "cam"}, "needs a worker"),
           ({"at": 1, "duration": 1, "kind": "blackhole", "target": "w3->cam"}, "no link"),
           ({"at": 1, "kind": "stop", "target": "w3"}, "duration"),
           ({"at": 1, "duration": 1, "kind": "loss", "target": "w3"}, "loss"),
           ({"at": 1, "duration": 1, "kind": "melt", "target": "w3"}, "kind")]
    for entry, word in bad:
        with pytest.raises(TopologyError, match=word):
            _topo(faults=[entry])


def test_a_fault_error_names_the_bad_target_once_and_a_files_error_names_the_file(tmp_path):
    """A fault's error gives its value once (``got 'cam'``, not twice); read from a file, any
    field's error is led by the file's path."""
    for entry, target in (({"at": 1, "kind": "kill", "target": "cam"}, "cam"),
                          ({"at": 1, "duration": 1, "kind": "blackhole", "target": "w3->cam"},
                           "w3->cam"),
                          ({"at": 1, "duration": 1, "kind": "stop", "target": "nobody"},
                           "nobody")):
        with pytest.raises(TopologyError) as err:
            _topo(faults=[entry])
        assert str(err.value).count(repr(target)) == 1, str(err.value)
    path = tmp_path / "topo.json"
    path.write_text(json.dumps({"sources": [{"id": "cam", "share": 1.0}],
                                "workers": [{"id": "w1", "stage": "1"}]}))
    with pytest.raises(TopologyError) as err:
        load_topology(str(path))
    assert str(err.value).startswith("%s: workers[0].stage: " % path)


def test_a_threshold_past_the_topologys_exit_stages_says_which_stages_take_one():
    """Thresholds go to stages 1..h-1 of the stages the workers serve; with workers for stage 1
    only, the error says there is none to set (not "a stage in 1..0")."""
    with pytest.raises(TopologyError, match=r"stages 1\.\.2 and the last answers every task, "
                                            r"so thresholds go to stages 1\.\.1"):
        _topo(thresholds={"2": 0.8})
    with pytest.raises(TopologyError, match="serve stage 1 only, which answers every task, so "
                                            "there is no threshold to set"):
        parse_topology({"sources": [{"id": "cam", "share": 1.0}],
                        "workers": [{"id": "w1", "stage": 1}],
                        "links": [{"from": "cam", "to": "w1"}], "thresholds": {"1": 0.8}})


def test_loopback_refuses_network_faults_naming_the_first():
    """Only kill, stop and restart can be injected on loopback."""
    assert loopback_problem([Fault(1, 1, "kill", "w")]) is None
    assert "link-down needs --network netns" in loopback_problem(
        [Fault(1, 1, "stop", "w"), Fault(1, 1, "link-down", "w")])


def test_network_faults_add_filters_before_the_shaping_and_remove_them_after():
    """A link blackhole drops what a sends to b at the fault's own preference; a node link-down
    takes both veth ends down and restores the default route; rate changes the link's class
    and back; loss on every link filters each device."""
    plan = plan_network(_topo(), prefix="eatb1")
    begin, end = fault_commands(Fault(1, 1, "blackhole", "cam->w2"), 3, plan)
    assert begin == [shaping.drop_filter("eatb1-d1", "eth0", FAULT_PREF + 3, "10.200.2.2")]
    assert end == [shaping.delete_filter("eatb1-d1", "eth0", FAULT_PREF + 3)]
    assert FAULT_PREF + 3 < shaping.LINK_PREF
    begin, end = fault_commands(Fault(1, 1, "link-down", "w2"), 0, plan)
    assert ["ip", "-n", "eatb1-d2", "link", "set", "eth0", "down"] in begin
    assert ["ip", "-n", "eatb1-hub", "link", "set", "h2", "down"] in begin
    assert end[-1] == ["ip", "-n", "eatb1-d2", "route", "replace", "default", "via",
                       "10.200.2.1"]
    begin, end = fault_commands(Fault(1, 1, "rate", "cam->w2", rate_bytes_s=1e4), 1, plan)
    assert "80000bit" in begin[0] and "400000bit" in end[0] and "change" in end[0]
    begin, _ = fault_commands(Fault(1, 1, "loss", "*", loss=0.05), 2, plan)
    assert len(begin) == len(plan.devices)
    with pytest.raises(TopologyError, match="share device"):
        fault_commands(Fault(1, 1, "blackhole", "cam->w1"), 0, plan)


def _rec(created, delay, status="completed"):
    return {"created_mono": created, "finished_mono": created + delay, "status": status}


def test_phases_split_tasks_by_creation_and_recovery_waits_for_normal_delays():
    """Before (after the warm-up), during and after the window; recovery is the time from the
    window's end to the first of five tasks in a row back within the normal delay."""
    recs = [_rec(t, 0.1) for t in (0.5, 1.0, 1.5, 2.0)]  # 0.5 is in the warm-up
    recs += [_rec(3.0, 2.0), _rec(3.5, 0.0, "lost")]
    recs += [_rec(5.0, 1.0), _rec(5.5, 0.5)] + [_rec(6.0 + i * 0.1, 0.1) for i in range(5)]
    phases, recovery = fault_phases(recs, [(2.5, 4.0), (3.0, 4.5)], warmup_end=0.8)
    assert phases["before"]["tasks"] == 3 and phases["before"]["mean_delay_s"] == pytest.approx(0.1)
    assert phases["during"]["tasks"] == 2 and phases["during"]["lost"] == 1
    assert phases["after"]["tasks"] == 7
    assert recovery == pytest.approx(1.5)  # window ends at 4.5, first good run starts at 6.0
    assert recovery_time([_rec(5.0, 3.0)], 4.5, phases["before"]) is None


def test_the_recovery_column_says_why_there_is_no_time():
    """No recovery time reads ``no baseline`` (nothing completed before the faults), ``too
    short`` (fewer than five tasks after them) or ``never`` (enough after, none recovered);
    a time reads in seconds."""
    base = [_rec(t, 0.1) for t in (1.0, 1.5, 2.0)]
    slow_after = [_rec(5.0 + i * 0.1, 3.0) for i in range(RECOVERED_RUN)]
    for recs, want in ((base + slow_after[:2], "too short"), (base + slow_after, "never"),
                       ([_rec(1.0, 0.0, "lost")] + slow_after, "no baseline"),
                       (base + [_rec(5.0 + i * 0.1, 0.1) for i in range(5)], "0.5")):
        phases, rec = fault_phases(recs, [(2.5, 4.5)], warmup_end=0.8)
        assert recovery_label(rec, phases) == want


def test_agents_are_told_config_rate_while_the_kernel_shapes_the_real_rate():
    """config_rate_bytes_s is what the agents' peer entries carry (their prior); the netns plan
    shapes rate_bytes_s, and the shipped slow-link-unconfigured hides w1a's slow links."""
    from agent.testbed.local import node_objects
    from agent.testbed.topology import load_topology

    topo = load_topology("slow-link-unconfigured")
    ids = topo.node_ids()
    ends = {n: "tcp://10.0.0.%d:1" % i for i, n in enumerate(ids, start=1)}
    objs = node_objects(topo, "b", "dtoee", 10.0, 5.0, "/tmp/x", ends, ends, paced=False)
    told = {p["id"]: p["link_rate_bytes_s"] for p in objs["cam1"]["peers"]}
    assert told["w1a"] == told["w1b"] == 1.6e6 and objs["cam1"]["emulate_links"] is False
    plan = plan_network(topo, prefix="eatb1")
    assert plan.link("cam1", "w1a").rate_bytes_s == 4.17e4

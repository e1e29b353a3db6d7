"""DTO-EE's stage-joint step (``joint_sync.py``): a sibling's stage report whose routing names
a node known to serve no next stage is refused as malformed, the way the node loop refuses
every bad DTO-EE payload (a ValueError from ``on_control``, counted ``drop_bad_payload``);
receivers this node has no link to are still taken (siblings need not share successors)."""

from __future__ import annotations

import dataclasses
import logging
from collections import deque

import pytest

from agent.policies.api import NodeView
from agent.policies.dtoee import joint as J
from agent.policies.dtoee.joint_sync import JointSync
from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.protocol.wire import Kind, decode, encode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario

JOINT = {"step": "joint", "settle_rounds": 0}


def _with_receiver(payload, name):
    """The stage report ``payload`` routing a share to ``name`` too, every map covering it
    (a copy of the first receiver's entries), so only the name can be wrong."""
    rep = from_payload(J.StageReport, payload)
    first = sorted(rep.routing)[0]
    maps = {f: dict(getattr(rep, f), **{name: getattr(rep, f)[first]})
            for f in ("routing", "link_rates_bytes_s", "loads_flops_s", "capacities_flops_s",
                      "omegas_s", "curvatures_s2", "dampings", "predecessors")}
    return to_payload(dataclasses.replace(rep, **maps))


def _run(sc, rounds, tamper=None):
    """The phase as ``test_dtoee_agent_rounds._run_phase`` runs it, but a ValueError from
    ``on_control`` drops the message and is counted, as the node loop does (``bad_payload``);
    ``tamper(dest, msg)`` may replace a message's payload before delivery."""
    nodes = _fleet(sc, rounds, knobs=JOINT)
    queue: deque = deque()
    for n, (pol, view) in nodes.items():
        _deliver(nodes, n, pol.on_tick(view, 0.0), queue)
    now, refused = 0.0, []
    for _ in range(100000):
        if not queue:
            if all(p.round >= rounds for p, _ in nodes.values() if p.offloader):
                break
            now += 2.0  # past round_interval_s: every node's round has stalled
            for n, (pol, view) in nodes.items():
                _deliver(nodes, n, pol.on_tick(view, now), queue)
            continue
        dest, frames = queue.popleft()
        msg = decode(frames)
        if tamper is not None:
            payload = tamper(dest, msg)
            if payload is not None:
                msg = decode([bytes(f) for f in encode(msg.kind, msg.sender,
                                                       {"payload": payload}, slot=msg.slot,
                                                       round=msg.round)])
        pol, view = nodes[dest]
        try:
            out = pol.on_control(msg, view, now)
        except ValueError as exc:
            refused.append((dest, msg.sender, str(exc)))
            continue
        _deliver(nodes, dest, out, queue)
    return nodes, refused


def test_reports_routing_to_receivers_this_node_has_no_link_to_are_taken():
    """Rule: a sibling's report naming its own successors is taken even where this node does
    not link to them (a1 feeds b1, a0 does not): nothing is refused and every node completes
    its rounds."""
    sc = _scenario(3, 0.85)
    assert "b1" in sc.successors("a1") and "b1" not in sc.successors("a0")
    nodes, refused = _run(sc, 6)
    assert refused == []
    assert all(p.round == 6 for p, _ in nodes.values() if p.offloader)


@pytest.mark.parametrize("name", ["a0", "a1", "a2", "s1"],
                         ids=["the-node-itself", "the-sender", "another-sibling", "a-predecessor"])
def test_a_report_routing_to_a_node_of_another_stage_is_refused_and_not_named_a_receiver(
        name, caplog):
    """Rule: a1's round-3 report to a0 routing a share to ``name`` (a0 itself, a1, their
    sibling a2, or a0's predecessor s1: none serves stage 2) is refused with a ValueError
    naming it, as other malformed DTO-EE payloads are; a0 then goes on as without that report
    (a1's flows count as fixed), its warning names only real receivers, and every node
    completes its rounds."""
    sc = _scenario(3, 0.85)

    def tamper(dest, msg):
        if msg.kind == Kind.DTOEE_STAGE and dest == "a0" and msg.sender == "a1" \
                and msg.round == 3:
            return _with_receiver(msg.fields["payload"], name)
        return None

    with caplog.at_level(logging.WARNING, logger="agent.policies.dtoee.joint_sync"):
        nodes, refused = _run(sc, 8, tamper)
    assert len(refused) == 1
    dest, sender, why = refused[0]
    assert (dest, sender) == ("a0", "a1")
    assert why == ("StageReport.routing of 'a1' names %s, known to serve no stage after the "
                   "sender's" % name)
    assert all(p.round == 8 for p, _ in nodes.values() if p.offloader)
    warned = [r.getMessage() for r in caplog.records if "no stage report" in r.getMessage()]
    assert warned and all(name not in w.split("receivers ")[1].split(" have")[0]
                          for w in warned)


def test_learn_notes_the_peers_that_serve_no_next_stage_but_never_a_successor():
    """Rule: the nodes a stage-1 worker refuses as receivers are itself, its predecessors and
    its peers whose stages do not include stage 2 (a source, a sibling, a stage-3 worker);
    a peer holding stages 2..3 and a successor are receivers; before ``learn`` only the
    sender and the siblings are refused."""
    view = NodeView("w", "worker", 1, 3, (1.0,) * 3, (1.0,) * 3, (), ("x", "y"), ("s",), {},
                    peer_stages={"s": (0, 0), "v": (1, 1), "x": (2, 2), "y": (2, 3),
                                 "z": (3, 3)})
    js = JointSync(DtoeeParams(step="joint"))
    js.siblings = ("v",)
    js.start(4)
    rep = J.StageReport("v", 0, 1.0, {"x": 1.0}, {"x": 1e6}, {"x": 0.0}, {"x": 1e9},
                        {"x": 0.0}, {"x": 0.0}, {"x": 1.0}, {"x": 1.0})
    ok = to_payload(rep)
    assert js.on_report("v", _with_receiver(ok, "q"), 0).routing.keys() == {"x", "q"}
    with pytest.raises(ValueError, match="of 'v' names v, known"):
        js.on_report("v", _with_receiver(ok, "v"), 0)
    assert js.on_report("v", _with_receiver(ok, "z"), 0)  # not learnt yet: unknown
    js.learn(view)
    assert js.not_receivers == {"w", "s", "v", "z"}
    for name in ("w", "s", "z"):
        with pytest.raises(ValueError, match="of 'v' names %s, known to serve no stage" % name):
            js.on_report("v", _with_receiver(ok, name), 0)
    assert js.on_report("v", _with_receiver(ok, "y"), 0).routing.keys() == {"x", "y"}
    fresh = JointSync(DtoeeParams(step="joint"))
    fresh.start(4)
    with pytest.raises(ValueError, match="of 'v' names s, known"):  # the view handed along
        fresh.on_report("v", _with_receiver(ok, "s"), 0, view)


def test_a_missing_stage_report_is_logged_at_the_1st_10th_and_100th_slot_only(caplog):
    """Rule: receivers whose predecessors sent no stage report are named once a slot at most,
    and only at the 1st, 10th, 100th... slot with one, each line counting them: a sibling left
    out of the peers logged a WARNING every slot for good."""
    js = JointSync(DtoeeParams(step="joint"))
    with caplog.at_level(logging.WARNING, logger="agent.policies.dtoee.joint_sync"):
        for slot in range(150):
            js.warn_missing(slot, 1, ["b1"])
            js.warn_missing(slot, 1, ["b1"])  # the same slot again: no line
    lines = [r.getMessage() for r in caplog.records]
    assert [line.rsplit("this: ", 1)[1] for line in lines] == ["1)", "10)", "100)"]
    assert all("receivers b1 " in line for line in lines)

"""The cut points of ``edge-agent build``: parsing ``--cuts``/``--exits`` and checking them
against the graph before anything is written.

Every cut must name a tensor a node produces and a later node reads; each stage's outputs must be
computable from its input alone (a cut that a skip connection jumps over does not separate the
graph: refused, naming the tensor that crosses it); no two stages may compute the same node.
"""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional, Sequence, Set

import onnx

from engines.bundle import BundleError


class BuildError(BundleError):
    """The multi-exit model or the cut/exit specification is unusable."""


def parse_cuts(text: str) -> List[str]:
    """``"T1,T2"`` -> ``["T1", "T2"]`` (empty items refused)."""
    names = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise BuildError("--cuts: expected comma-separated tensor names, got %r" % text)
    if len(set(names)) != len(names):
        raise BuildError("--cuts: a tensor is named twice in %r" % text)
    return names


def parse_exits(text: str) -> Dict[int, str]:
    """``"1:exit1,2:exit2"`` -> ``{1: "exit1", 2: "exit2"}``."""
    exits: Dict[int, str] = {}
    if not text.strip():
        return exits
    for item in text.split(","):
        stage, sep, name = item.strip().partition(":")
        if not sep or not name.strip() or not (stage.strip().isascii() and stage.strip().isdigit()):
            raise BuildError("--exits: expected STAGE:OUTPUT items, got %r" % item.strip())
        if int(stage) in exits:
            raise BuildError("--exits: stage %s has two exit heads" % stage)
        if name.strip() in exits.values():  # one head cannot end two stages
            raise BuildError("--exits: %r is named for two stages; each stage's exit head is "
                             "its own graph output" % name.strip())
        exits[int(stage)] = name.strip()
    return exits


def _suggest(name: str, known: Set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=2)
    return " (did you mean %s?)" % " or ".join(repr(c) for c in close) if close else ""


def upstream(graph: onnx.GraphProto, outputs: Sequence[str], stop: str) -> Set[str]:
    """Tensors reached walking back from ``outputs`` through their producers, not past ``stop``
    (initializers are leaves)."""
    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name for t in graph.initializer}
    seen: Set[str] = set()
    todo = list(outputs)
    while todo:
        t = todo.pop()
        if t in seen or t == "":
            continue
        seen.add(t)
        if t == stop or t in consts:
            continue
        node = producer.get(t)
        if node is not None:
            todo.extend(node.input)
    return seen


def _crossing(graph: onnx.GraphProto, start: str, seen: Set[str], graph_input: str) -> List[str]:
    """Tensors computed before the cut ``start`` (or the graph input) that a node after it reads
    directly: the tensors a skip connection carries across the cut."""
    before = upstream(graph, [start], "") | {graph_input}
    after = seen - before
    return sorted({i for n in graph.node if any(o in after for o in n.output)
                   for i in n.input if i in before and i != start and i in seen})


def _check_separates(graph: onnx.GraphProto, stage: int, start: str, outputs: Sequence[str],
                     graph_input: str) -> None:
    """Refuse a stage whose outputs need anything upstream of ``start`` other than ``start``."""
    seen = upstream(graph, outputs, start)
    if start != graph_input and graph_input in seen:
        crossing = _crossing(graph, start, seen, graph_input)
        if crossing:
            raise BuildError("--cuts: %r crosses the cut %r: stage %d (outputs %s) reads it, but "
                             "it is computed before the cut, by a path that bypasses %r, so the cut "
                             "does not separate the graph (a skip connection, or an exit head "
                             "branching off before the cut, crosses it); move the cut before the "
                             "branch or after the join"
                             % (crossing[0], start, stage, ", ".join(repr(o) for o in outputs),
                                start))
        raise BuildError("stage %d (input %r, outputs %s) also depends on %r by a path that "
                         "bypasses %r: the cut does not separate the graph (the cuts are not in "
                         "graph order)"
                         % (stage, start, ", ".join(repr(o) for o in outputs), graph_input, start))
    if start not in seen:
        raise BuildError("stage %d outputs %s do not depend on its input %r: check the cut order"
                         % (stage, ", ".join(repr(o) for o in outputs), start))


def plan_stages(model: onnx.ModelProto, cuts: Sequence[str], exits: Dict[int, str],
                final_output: Optional[str] = None):
    """Check the specification against ``model``; returns (graph input, [(input, outputs)] per stage,
    final output name)."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise BuildError("the model must have exactly one data input, it has %d: %s"
                         % (len(inputs), inputs))
    graph_input = inputs[0]
    produced = {o for n in g.node for o in n.output if o}
    read = {i for n in g.node for i in n.input if i}
    for c in cuts:
        if c == graph_input:
            raise BuildError("--cuts: %r is the graph input, where stage 1 starts; name the "
                             "tensors where one stage ends and the next begins" % c)
        if c not in produced:
            raise BuildError("--cuts: unknown tensor name %r (no node produces it)%s"
                             % (c, _suggest(c, produced)))
        if c not in read:  # a head's logits or another graph output: no next stage starts there
            raise BuildError("--cuts: no node reads %r (it is only a graph output, an exit head's "
                             "logits for example), so no stage can start from it; cut at a tensor "
                             "that later layers take as input" % c)
    num_stages = len(cuts) + 1
    for stage, name in sorted(exits.items()):
        if not 1 <= stage < num_stages:
            raise BuildError("--exits: stage %d is out of range: %d cuts make stages 1..%d and "
                             "early exits go on stages 1..%d" % (stage, len(cuts), num_stages, num_stages - 1))
        if name not in produced:
            raise BuildError("--exits: unknown tensor name %r for stage %d%s"
                             % (name, stage, _suggest(name, produced)))
        if name in cuts:
            raise BuildError("--exits: %r is also a cut tensor" % name)
    outputs = [o.name for o in g.output]
    if final_output is None:
        rest = [o for o in outputs if o not in exits.values() and o not in cuts]
        if len(rest) != 1:
            raise BuildError("cannot tell the final head: graph outputs other than the exits are %s; "
                             "name it with --final" % (rest,))
        final_output = rest[0]
    elif final_output not in produced:
        raise BuildError("--final: unknown tensor name %r%s" % (final_output, _suggest(final_output, produced)))
    elif final_output in exits.values() or final_output in cuts:  # else a cut is blamed below
        raise BuildError("--final: %r is also %s: name the final head's logits, the last stage's "
                         "own output" % (final_output, "a cut (--cuts)" if final_output in cuts
                                         else "an exit head (--exits)"))
    plan = []
    for h in range(1, num_stages + 1):
        start = graph_input if h == 1 else cuts[h - 2]
        outs = [cuts[h - 1]] if h < num_stages else []
        if h in exits:
            outs.append(exits[h])
        elif h == num_stages:
            outs.append(final_output)
        _check_separates(g, h, start, outs, graph_input)
        plan.append((start, outs))
    for h in range(1, num_stages):
        (start, outs), (cut, nxt) = plan[h - 1], plan[h]
        shared = (upstream(g, outs, start) & upstream(g, nxt, cut)) - {cut} - consts
        if shared:
            # a head placed after its stage's cut would make two stages compute the same nodes
            raise BuildError("stages %d and %d would both compute %r: exit head %r of stage %d is "
                             "computed after the cut %r; give it to a later stage or move the cut"
                             % (h, h + 1, sorted(shared)[0], outs[-1], h, cut))
    return graph_input, plan, final_output

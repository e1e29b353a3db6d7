"""Cut a multi-exit ONNX graph into a bundle of stage files (``edge-agent build``).

Stage h takes cut tensor h-1 (the graph input at stage 1) and produces cut tensor h (nothing at
the final stage) plus its exit logits where it has a head; the final stage produces the final
head's logits. Every stage is cut out with ``onnx.utils.extract_model``. Before anything is
written, the cut points are checked: every name must exist, and each stage's outputs must be
computable from its input alone (a cut that a skip connection jumps over does not separate the
graph and is refused).
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
from typing import Dict, List, Optional, Sequence, Set

import onnx

from engines import bundle as bfmt
from engines.bundle import BundleError
from engines.flops import count_macs, fix_batch, numpy_dtype, tensor_types

log = logging.getLogger("engines.build")


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
        exits[int(stage)] = name.strip()
    return exits


def _suggest(name: str, known: Set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=2)
    return " (did you mean %s?)" % " or ".join(repr(c) for c in close) if close else ""


def _upstream(graph: onnx.GraphProto, outputs: Sequence[str], stop: str) -> Set[str]:
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


def _check_separates(graph: onnx.GraphProto, stage: int, start: str, outputs: Sequence[str],
                     graph_input: str) -> None:
    """Refuse a stage whose outputs need anything upstream of ``start`` other than ``start``."""
    seen = _upstream(graph, outputs, start)
    if start != graph_input and graph_input in seen:
        raise BuildError("stage %d (input %r, outputs %s) also depends on %r by a path that "
                         "bypasses %r: the cut does not separate the graph (a skip connection "
                         "crosses it, or the cuts are not in graph order)"
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
    for c in cuts:
        if c not in produced:
            raise BuildError("--cuts: unknown tensor name %r (no node produces it)%s"
                             % (c, _suggest(c, produced)))
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
        shared = (_upstream(g, outs, start) & _upstream(g, nxt, cut)) - {cut} - consts
        if shared:
            # a head placed after its stage's cut would make two stages compute the same nodes
            raise BuildError("stages %d and %d would both compute %r: exit head %r of stage %d is "
                             "computed after the cut %r; give it to a later stage or move the cut"
                             % (h, h + 1, sorted(shared)[0], outs[-1], h, cut))
    return graph_input, plan, final_output


def _tensor(types, name: str, what: str):
    shape, elem = types.get(name, (None, 0))
    if shape is None:
        raise BuildError("shape of %s %r is unknown at batch 1 (run shape inference or give the "
                         "model static shapes)" % (what, name))
    return bfmt.tensor_entry(name, shape, numpy_dtype(elem))


def load_checked_onnx(path: str, error: Optional[type] = None) -> onnx.ModelProto:
    """Read and check an ONNX file; one-line ``error`` (default ``BuildError``) when it is
    missing, not a regular file or not a valid model."""
    error = error or BuildError
    if not os.path.exists(path):
        raise error("ONNX file %s does not exist" % path)
    if not os.path.isfile(path):
        raise error("ONNX file %s is not a regular file" % path)
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, OSError ...
        raise error("%s: not a valid ONNX model (%s)" % (path, str(exc).strip().splitlines()[0]))
    return model


def _stage_tensors(model: onnx.ModelProto, plan, exits: Dict[int, str]):
    """Each stage's (input, feature, logits) tensor entries and the number of classes, checked:
    every shape known at batch 1, every head (batch, classes) with one number of classes."""
    types = tensor_types(fix_batch(model, 1))
    num_classes = None
    tensors = []
    for h, (start, outs) in enumerate(plan, start=1):
        feature = _tensor(types, outs[0], "cut tensor") if h < len(plan) else None
        logits = _tensor(types, outs[-1], "exit output") if (h in exits or h == len(plan)) else None
        if logits is not None:
            if len(logits["shape"]) != 2:
                raise BuildError("exit output %r must have shape (batch, classes), has %s"
                                 % (outs[-1], logits["shape"]))
            if num_classes not in (None, logits["shape"][1]):
                raise BuildError("exit output %r has %d classes, an earlier head has %d"
                                 % (outs[-1], logits["shape"][1], num_classes))
            num_classes = logits["shape"][1]
        tensors.append((_tensor(types, start, "stage input"), feature, logits))
    return tensors, num_classes


def build_bundle(onnx_path: str, cuts: Sequence[str], exits: Dict[int, str], out_dir: str,
                 final_output: Optional[str] = None, name: Optional[str] = None) -> bfmt.Bundle:
    """Cut ``onnx_path`` at ``cuts`` with early-exit heads ``exits`` ({stage: output}) into a
    bundle in ``out_dir``; returns the loaded bundle. Raises ``BuildError`` on bad input.

    Every check of the input comes before anything is made or written, so a refused build
    leaves no new folder; should a stage still fail to extract, a folder this call made is
    removed again."""
    from agent.ops.files import first_missing_dir

    onnx_path = os.path.abspath(os.fspath(onnx_path))
    model = load_checked_onnx(onnx_path)
    _, plan, final_output = plan_stages(model, cuts, exits, final_output)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.isdir(out_dir):
        foreign = [f for f in os.listdir(out_dir)
                   if f != bfmt.MANIFEST_NAME and f != bfmt.EXIT_PROFILE_NAME
                   and not (f.startswith("stage") and f.endswith(".onnx"))]
        if foreign:
            raise BuildError("--out %s is not empty and not a bundle (has %s)" % (out_dir, foreign[0]))
    elif os.path.lexists(out_dir):
        raise BuildError("--out %s is not a directory (a file or a broken link is there)"
                         % out_dir)
    tensors, num_classes = _stage_tensors(model, plan, exits)
    made = first_missing_dir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        _write_stages(onnx_path, plan, exits, tensors, num_classes, out_dir, cuts, final_output,
                      name)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    return bfmt.load_bundle(out_dir)


def _write_stages(onnx_path: str, plan, exits: Dict[int, str], tensors, num_classes,
                  out_dir: str, cuts: Sequence[str], final_output: str,
                  name: Optional[str]) -> None:
    """Extract every stage into ``out_dir`` (checked already), drop what an older build left
    there, write the manifest."""
    stages = []
    for h, (start, outs) in enumerate(plan, start=1):
        file = "stage%d.onnx" % h
        path = os.path.join(out_dir, file)
        try:
            onnx.utils.extract_model(onnx_path, path, [start], outs, check_model=False)
        except Exception as exc:
            raise BuildError("cannot extract stage %d (%s -> %s): %s"
                             % (h, start, outs, str(exc).strip().splitlines()[0]))
        stage_model = onnx.load(path)
        onnx.checker.check_model(stage_model)
        input_tensor, feature, logits = tensors[h - 1]
        dims = stage_model.graph.input[0].type.tensor_type.shape.dim
        stages.append(bfmt.stage_entry(
            index=h, file=file, sha256=bfmt.sha256_file(path),
            input_tensor=input_tensor, feature=feature, logits=logits,
            has_exit=h in exits, flops=count_macs(stage_model),
            dynamic_batch=bool(len(dims)) and not dims[0].HasField("dim_value")))
        log.info("stage %d: %s -> %s, %d MACs", h, start, ", ".join(outs), stages[-1]["flops"])
    for stale in os.listdir(out_dir):
        m = stale[len("stage"):-len(".onnx")] if stale.startswith("stage") and stale.endswith(".onnx") else ""
        if m.isascii() and m.isdigit() and int(m) > len(plan):
            os.remove(os.path.join(out_dir, stale))
    old_profile = os.path.join(out_dir, bfmt.EXIT_PROFILE_NAME)
    if os.path.exists(old_profile):
        # a profile of the previous stages would silently mislead threshold tuning
        os.remove(old_profile)
        log.warning("removed %s: it belonged to the previous build; run `edge-agent profile`", old_profile)
    source = {"onnx": os.path.basename(onnx_path), "sha256": bfmt.sha256_file(onnx_path),
              "cuts": list(cuts), "exits": {str(k): v for k, v in sorted(exits.items())},
              "final": final_output}
    manifest = bfmt.make_manifest(name or os.path.splitext(os.path.basename(onnx_path))[0],
                                  num_classes or 0, stages, source)
    bfmt.write_manifest(out_dir, manifest)

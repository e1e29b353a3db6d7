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
import json
import logging
import os
import shutil
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
import onnx

from agent.ops.atomic import replace_dir
from engines import bundle as bfmt
from engines.bundle import BundleError
from engines.flops import count_macs, fix_batch, macs_by_node, numpy_dtype, tensor_types

log = logging.getLogger("engines.build")

# metadata key of a graph `heads` wrote: "[lo, hi]", the range of its training inputs' values (as
# the graph took them), carried into the bundle as stage 1's input.value_range
INPUT_RANGE_KEY = "edge_agent.input_range"


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
    if shape and shape[0] != 1:  # (a rank-0 tensor is refused by its own check, later)
        raise BuildError("%s %r has shape %s when the input has batch 1: its first dimension "
                         "must be the batch (is the batch size fixed inside the graph, by a Reshape "
                         "for example?); export it with batch 1 or a dynamic batch dimension"
                         % (what, name, list(shape)))
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
            if np.dtype(logits["dtype"]).kind != "f":  # class indices (ArgMax, TopK), a mask
                raise BuildError("exit output %r is %s, not logits: give the head's float logits "
                                 "(the tensor before any ArgMax or TopK)" % (outs[-1], logits["dtype"]))
            if logits["shape"][1] < 2:  # softmax of one logit is 1: every task would exit there
                raise BuildError("exit output %r has 1 class: a head's confidence is its largest "
                                 "softmax probability, always 1 with one logit; give the head one "
                                 "logit per class (a binary classifier's logit z as [0, z])"
                                 % outs[-1])
            if num_classes not in (None, logits["shape"][1]):
                raise BuildError("exit output %r has %d classes, an earlier head has %d"
                                 % (outs[-1], logits["shape"][1], num_classes))
            num_classes = logits["shape"][1]
        tensors.append((_tensor(types, start, "stage input"), feature, logits))
    return tensors, num_classes


def input_range(model: onnx.ModelProto, path: str) -> Optional[List[float]]:
    """The training inputs' ``[lo, hi]`` that ``heads`` recorded in ``model``'s metadata (None
    when it holds none); a malformed value is a one-line BuildError naming the file and key."""
    text = {p.key: p.value for p in model.metadata_props}.get(INPUT_RANGE_KEY)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON (or nested past reading): said as such
        value = text
    why = bfmt.value_range_problem(value)
    if why:
        raise BuildError("%s: metadata %s %s, got %.200r (remove it, or run `edge-agent heads` "
                         "again)" % (path, INPUT_RANGE_KEY, why, text))
    return [float(v) for v in value]


def check_batch_one(model: onnx.ModelProto, error: Optional[type] = None) -> None:
    """Refuse a data input whose batch (first) dimension is fixed to anything but 1: every stage
    of a bundle runs one sample at a time, and MACs are counted per sample."""
    error = error or BuildError
    consts = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in consts or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value != 1:
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise error("the ONNX input %r has a fixed batch dimension of %d (shape %s); a "
                        "bundle's stages run one sample at a time: export the model with batch 1 "
                        "or a dynamic batch dimension" % (inp.name, dims[0].dim_value, shape))


def _stage_macs(model: onnx.ModelProto, plan, cuts: Sequence[str]) -> List[int]:
    """MACs of every stage, counted on the whole graph before anything is cut; a stage with no
    Conv/ConvTranspose/Gemm/MatMul is refused (its 0 MACs leave calibrate and the agent no
    capacity to time it by)."""
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    per_node = [m for _, _, m in macs_by_node(model)]
    macs = []
    for h, (start, outs) in enumerate(plan, start=1):
        nodes = {producer[t] for t in _upstream(g, outs, start) if t != start and t in producer}
        macs.append(sum(per_node[i] for i in nodes))
        if macs[-1] == 0:
            near = [c for c in (cuts[h - 2] if h > 1 else None, cuts[h - 1] if h <= len(cuts)
                                else None) if c is not None]
            raise BuildError("stage %d (%s -> %s) has no Conv, ConvTranspose, Gemm or MatMul, so "
                             "its MAC count is 0 and it cannot be calibrated or served: move the "
                             "cut %s so that the stage holds some of that work"
                             % (h, start, ", ".join(outs), " or ".join(repr(c) for c in near)))
    return macs


def build_bundle(onnx_path: str, cuts: Sequence[str], exits: Dict[int, str], out_dir: str,
                 final_output: Optional[str] = None, name: Optional[str] = None) -> bfmt.Bundle:
    """Cut ``onnx_path`` at ``cuts`` with early-exit heads ``exits`` ({stage: output}) into a
    bundle in ``out_dir``; returns the loaded bundle. Raises ``BuildError`` on bad input.

    Every check of the input (the manifest it makes included) comes before anything is made or
    written, so a refused build leaves no new folder. The stages are then written into a new
    folder next to ``out_dir`` and swapped in only once that bundle loads, so a build that still
    fails leaves a bundle already at ``out_dir`` as it was (and removes the folders it made)."""
    from agent.ops.files import first_missing_dir

    onnx_path = os.path.abspath(os.fspath(onnx_path))
    model = load_checked_onnx(onnx_path)
    _, plan, final_output = plan_stages(model, cuts, exits, final_output)
    check_batch_one(model)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.isdir(out_dir):
        foreign = [f for f in os.listdir(out_dir)
                   if f != bfmt.MANIFEST_NAME and f != bfmt.EXIT_PROFILE_NAME
                   and not (f.startswith("stage") and f.endswith(".onnx"))
                   and not f.startswith(".build-")]  # one a killed build left
        if foreign:
            raise BuildError("--out %s is not empty and not a bundle (has %s)" % (out_dir, foreign[0]))
        out_dir = os.path.realpath(out_dir)  # a link to a bundle: the bundle is replaced
    elif os.path.lexists(out_dir):
        raise BuildError("--out %s is not a directory (a file or a broken link is there)"
                         % out_dir)
    tensors, num_classes = _stage_tensors(model, plan, exits)
    value_range = input_range(model, onnx_path)
    if value_range is not None:  # replay and profiling sets are compared with it
        tensors[0][0]["value_range"] = value_range
    macs = _stage_macs(model, plan, cuts)
    source = {"onnx": os.path.basename(onnx_path), "sha256": bfmt.sha256_file(onnx_path),
              "cuts": list(cuts), "exits": {str(k): v for k, v in sorted(exits.items())},
              "final": final_output}
    manifest = bfmt.make_manifest(name or os.path.splitext(os.path.basename(onnx_path))[0],
                                  num_classes or 0, [], source)
    # everything `load_bundle` checks but the files, before any is written
    draft = dict(manifest, stages=[
        bfmt.stage_entry(index=h, file="stage%d.onnx" % h, sha256="", input_tensor=t[0],
                         feature=t[1], logits=t[2], has_exit=h in exits, flops=macs[h - 1],
                         dynamic_batch=False) for h, t in enumerate(tensors, start=1)])
    bfmt.parse_bundle(draft, out_dir, os.path.join(out_dir, bfmt.MANIFEST_NAME), verify_files=False)
    parent = os.path.dirname(out_dir)
    made = first_missing_dir(parent)
    os.makedirs(parent, exist_ok=True)
    tag = "build-%d-%s" % (os.getpid(), os.urandom(4).hex())
    # beside --out, to be renamed into its place; inside it where it cannot be renamed (a
    # mount point, the working folder) or its folder takes no new entry (read-only)
    new = ("%s.%s" % (out_dir, tag) if not os.path.isdir(out_dir) or _movable(out_dir)
           else os.path.join(out_dir, "." + tag))
    os.mkdir(new)
    try:
        _write_stages(onnx_path, plan, exits, tensors, new, manifest)
        bfmt.load_bundle(new)
        _swap_in(new, out_dir)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    return bfmt.load_bundle(out_dir)


def _swap_in(new: str, out_dir: str) -> None:
    """Put the bundle folder ``new`` at ``out_dir``, replacing the bundle there, if any."""
    if not os.path.isdir(out_dir):
        os.rename(new, out_dir)
        return
    os.chmod(new, os.stat(out_dir).st_mode & 0o7777)
    had_profile = os.path.exists(os.path.join(out_dir, bfmt.EXIT_PROFILE_NAME))
    if os.path.dirname(new) == out_dir:
        # the folder itself cannot move: bring the new files in, the manifest last
        files = sorted(os.listdir(new), key=lambda f: f == bfmt.MANIFEST_NAME)
        for f in files:
            os.replace(os.path.join(new, f), os.path.join(out_dir, f))
        os.rmdir(new)
        for f in set(os.listdir(out_dir)) - set(files):  # older stages, the old profile
            if os.path.isfile(os.path.join(out_dir, f)):
                os.remove(os.path.join(out_dir, f))
    else:
        replace_dir(new, out_dir, new + ".old")
    if had_profile:
        # a profile of the previous stages would silently mislead threshold tuning
        log.warning("removed %s: it belonged to the previous build; run `edge-agent profile`",
                    os.path.join(out_dir, bfmt.EXIT_PROFILE_NAME))


def _movable(out_dir: str) -> bool:
    """Whether the bundle folder ``out_dir`` can be replaced by renaming a sibling into its
    place: not a mount point, not the working folder (or above it), in a folder that takes new
    entries."""
    cwd = os.getcwd()
    return not (cwd == out_dir or cwd.startswith(out_dir + os.sep) or os.path.ismount(out_dir)
                or not os.access(os.path.dirname(out_dir), os.W_OK | os.X_OK))


def _write_stages(onnx_path: str, plan, exits: Dict[int, str], tensors, out_dir: str,
                  manifest) -> None:
    """Extract every stage into the new folder ``out_dir`` (checked already), write the
    manifest."""
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
    bfmt.write_manifest(out_dir, dict(manifest, stages=stages))

"""Cut a multi-exit ONNX graph into a bundle of stage files (``edge-agent build``).

Stage h takes cut tensor h-1 (the graph input at stage 1) and produces cut tensor h (nothing at
the final stage) plus its exit logits where it has a head; the final stage produces the final
head's logits. Before anything is written, the cut points are checked (``engines.build_cuts``),
then every stage's tensors, on the graph read without the weights a source keeps in side files
(``load_checked_graph``): so a source past protobuf's 2 GB limit, whose weights must be in side
files, is built as one under it, never held whole in memory. Every stage is cut out with onnx's
``Extractor`` (as ``onnx.utils.extract_model`` does) and reads only its own weights. A stage
over the limit keeps its weights in the side file ``stageH.onnx.data`` (as ``extract_model``
writes it), which the manifest lists with its SHA-256 (``engines.bundle_files``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx

from agent.errors import first_line
from agent.ops.atomic import is_mount_point, replace_dir
from engines import bundle as bfmt
from engines import build_weights, bundle_files
from engines.build_weights import SIDE_FILE_SUFFIX
from engines.build_cuts import BuildError, plan_stages, upstream
from engines.flops import (batch_is_dynamic, count_macs, fix_batch, macs_by_node, numpy_dtype,
                           tensor_types)

log = logging.getLogger("engines.build")

# metadata key of a graph `heads` wrote: "[lo, hi]", the range of its training inputs' values (as
# the graph took them), carried into the bundle as stage 1's input.value_range
INPUT_RANGE_KEY = "edge_agent.input_range"
# a stage file over this many bytes keeps its weights in a side file: protobuf cannot write a
# larger message, and ``extract_model`` moves them out past the same limit
STAGE_INLINE_MAX_BYTES = onnx.checker.MAXIMUM_PROTOBUF
# a source tensor kept in a side file is read with the graph (for shape inference) up to this
# size; larger ones are weights, read stage by stage only as each stage is written
GRAPH_DATA_MAX_BYTES = 1 << 20


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


def _checked_file(path: str, error: type) -> None:
    """Refuse, in one line, a path that is missing or not a regular file, then a file that is
    not a valid model; checked by path, so a model's side files are checked with it (and one
    past protobuf's 2 GB limit at all)."""
    if not os.path.exists(path):
        raise error("ONNX file %s does not exist" % path)
    if not os.path.isfile(path):
        raise error("ONNX file %s is not a regular file" % path)
    try:
        onnx.checker.check_model(path)
    except Exception as exc:  # protobuf DecodeError, ValidationError, OSError ...
        raise error("%s: not a valid ONNX model (%s)" % (path, first_line(exc)))


def load_checked_graph(path: str, error: Optional[type] = None) -> onnx.ModelProto:
    """Check an ONNX file (one-line ``error``, default ``BuildError``, when it is missing, not a
    regular file or not a valid model) and read it without the weights it keeps in side files:
    only their data up to ``GRAPH_DATA_MAX_BYTES`` a tensor (shape constants, which shape
    inference reads) is loaded. So a model past protobuf's 2 GB limit, whose weights must be
    in side files, is read in a few megabytes and inspected (shape inference included) as one
    under it is."""
    error = error or BuildError
    _checked_file(path, error)
    try:
        model = onnx.load(path, load_external_data=False)
        build_weights.load_small(model, os.path.dirname(path), GRAPH_DATA_MAX_BYTES)
    except Exception as exc:
        raise error("%s: cannot read the model (%s)" % (path, first_line(exc)))
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
        if len(dims) and not batch_is_dynamic(dims[0]) and dims[0].dim_value != 1:
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
        nodes = {producer[t] for t in upstream(g, outs, start) if t != start and t in producer}
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
                 final_output: Optional[str] = None, name: Optional[str] = None,
                 inline_max_bytes: int = STAGE_INLINE_MAX_BYTES) -> bfmt.Bundle:
    """Cut ``onnx_path`` at ``cuts`` with early-exit heads ``exits`` ({stage: output}) into a
    bundle in ``out_dir``; returns the loaded bundle. Raises ``BuildError`` on bad input.

    Every check of the input (the manifest it makes included) comes before anything is made or
    written, so a refused build leaves no new folder. The stages are then written into a new
    folder next to ``out_dir`` and swapped in only once that bundle loads, so a build that still
    fails leaves a bundle already at ``out_dir`` as it was (and removes the folders it made).
    A stage file over ``inline_max_bytes`` keeps its weights in a side file (see the module)."""
    from agent.ops.files import first_missing_dir

    onnx_path = os.path.abspath(os.fspath(onnx_path))
    model = load_checked_graph(onnx_path)
    _, plan, final_output = plan_stages(model, cuts, exits, final_output)
    check_batch_one(model)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.isdir(out_dir):
        foreign = [f for f in os.listdir(out_dir)
                   if f != bfmt.MANIFEST_NAME and f != bfmt.EXIT_PROFILE_NAME
                   and not (f.startswith("stage")
                            and f.endswith((".onnx", ".onnx" + SIDE_FILE_SUFFIX)))
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
        _write_stages(model, os.path.dirname(onnx_path), plan, exits, tensors, new, manifest,
                      inline_max_bytes)
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
    return not (cwd == out_dir or cwd.startswith(out_dir + os.sep) or is_mount_point(out_dir)
                or not os.access(os.path.dirname(out_dir), os.W_OK | os.X_OK))


def _write_stages(model: onnx.ModelProto, source_dir: str, plan, exits: Dict[int, str], tensors,
                  out_dir: str, manifest, inline_max_bytes: int = STAGE_INLINE_MAX_BYTES) -> None:
    """Cut every stage out of ``model`` (the source's graph, its weights left in the side files
    in ``source_dir``) into the new folder ``out_dir`` (checked already), write the manifest.
    Each stage reads only its own weights, so the source is never held whole in memory."""
    try:  # the cut tensors' types, which the extractor copies into each stage
        extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model))
    except Exception as exc:
        raise BuildError("cannot cut the model: shape inference failed (%s)" % first_line(exc))
    stages = []
    for h, (start, outs) in enumerate(plan, start=1):
        file = "stage%d.onnx" % h
        path = os.path.join(out_dir, file)
        try:
            stage = extractor.extract_model([start], outs)
        except Exception as exc:
            raise BuildError("cannot extract stage %d (%s -> %s): %s"
                             % (h, start, outs, first_line(exc)))
        # the graph without its weights is all the MAC count and batch need: read before the
        # stage's weights are, so a stage of gigabytes is counted in megabytes
        macs = count_macs(stage)
        dims = stage.graph.input[0].type.tensor_type.shape.dim
        dynamic = bool(len(dims)) and batch_is_dynamic(dims[0])
        try:
            build_weights.save_stage(stage, source_dir, path, file + SIDE_FILE_SUFFIX,
                                     inline_max_bytes)
        except (OSError, ValueError) as exc:  # a source side file changed since the check
            raise BuildError("cannot write stage %d's weights: %s" % (h, first_line(exc)))
        del stage, dims
        # by path, so that a stage with side files is checked with them (and one over 2 GB at all)
        onnx.checker.check_model(path)
        input_tensor, feature, logits = tensors[h - 1]
        stages.append(bfmt.stage_entry(
            index=h, file=file, sha256=bfmt.sha256_file(path),
            input_tensor=input_tensor, feature=feature, logits=logits,
            has_exit=h in exits, flops=macs, dynamic_batch=dynamic,
            external_data=[{"file": f, "sha256": bfmt.sha256_file(os.path.join(out_dir, f))}
                           for f in bundle_files.side_files(path, out_dir,
                                                            bfmt.tensor_locations(path))]))
        log.info("stage %d: %s -> %s, %d MACs", h, start, ", ".join(outs), stages[-1]["flops"])
    bfmt.write_manifest(out_dir, dict(manifest, stages=stages))

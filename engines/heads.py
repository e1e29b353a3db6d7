"""Attach trained early-exit heads to a frozen backbone (``edge-agent heads``).

Given a backbone ONNX graph without exits, the names of intermediate tensors and a labelled data
set, ``make_heads`` puts one exit head on each tensor, trains only the heads and writes a
multi-exit graph that ``edge-agent build`` cuts as it is (cuts = the tensors, exit h = stage h's
head, the backbone's output = the final head):

1. everything is checked before the backbone runs on the whole set: the tensor names, that no
   skip connection crosses a cut (``engines.build_cuts.plan_stages``, the check ``build`` applies),
   that onnxruntime runs the graph on one sample, that each tensor can be pooled, the labels;
2. the backbone runs once (onnxruntime, CPU, batches) with the tensors exposed as extra graph
   outputs; each batch is pooled at once (``engines.heads_graph.pool``), so only the small pooled
   features are kept, and every head trains from them;
3. each head is fitted on a stratified training split and early-stopped on the held-out split
   (``engines.heads_fit``), then written into a copy of the graph (``heads_graph.attach``),
   whose metadata also records the range of the training inputs' values (``build`` carries it
   into the bundle, where replay and profiling sets on another scale are told).

A backbone past protobuf's 2 GB limit (``INLINE_MAX_BYTES``), whose weights must be in side
files, is read without them as ``build`` reads one, run with them mapped from the side files,
and its multi-exit graph is written with them in a side file beside ``--out``
(``engines.heads_weights``); nothing builds it, weights and all, as one message.

Deterministic for a given ``seed``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from agent.errors import UsageError, first_line
from agent.ops.atomic import atomic_open
from engines import build_weights
from engines.npzfile import load_npz
from engines.build import INPUT_RANGE_KEY, BuildError, check_batch_one, load_checked_graph
from engines.build_cuts import parse_cuts, plan_stages
from engines.bundle import sha256_file, tensor_locations
from engines.flops import count_macs, numpy_dtype
from engines.exit_profile import probabilities_problem
from engines.heads_fit import fit_head, split_holdout
from engines.heads_weights import side_file_path, write_model
from engines.profile import as_input
from engines.heads_graph import (
    HeadsError,
    HeadSpec,
    attach,
    check_poolable,
    fit_input,
    fresh_name,
    head_macs,
    head_nodes,
    only_output,
    opset_of,
    pool,
    run_tensors,
    tensor_names,
)

# a multi-exit graph over this many bytes (with its weights) is written with them in a side file
# beside --out, and a backbone over it is run with its weights left in its side files: protobuf
# can neither write nor size a larger message
INLINE_MAX_BYTES = onnx.checker.MAXIMUM_PROTOBUF
MIN_PER_CLASS = 5  # so that the held-out split holds every class and training keeps the rest
BATCH = 128  # samples per onnxruntime call while computing features


@dataclass(frozen=True)
class HeadReport:
    """One attached head: where it sits and how it did."""

    stage: int  # the bundle stage it becomes the exit of (1-based)
    tensor: str  # the backbone tensor it reads (a cut for ``build``)
    output: str  # its logits output in the written graph
    tensor_shape: tuple  # of the tensor at batch 1
    macs: int  # multiply-accumulates it adds per task (batch 1)
    holdout_accuracy: float  # on the held-out split
    iterations: int  # L-BFGS iterations


@dataclass(frozen=True)
class HeadsResult:
    """What ``make_heads`` wrote and measured."""

    out_path: str
    heads: List[HeadReport]
    final: str  # the final head's output name
    final_holdout_accuracy: float  # the backbone's own classifier on the same held-out split
    backbone_macs: Optional[int]  # None when the backbone's shapes are not all static
    num_train: int
    num_holdout: int
    input_range: Optional[Tuple[float, float]] = None  # (min, max) of the inputs, as fed
    side_file: Optional[str] = None  # where the weights went, past protobuf's limit (or None)

    def build_command(self, bundle_dir: str = "BUNDLE") -> str:
        """The ``edge-agent build`` command line that cuts the written graph."""
        return ("edge-agent build --onnx %s --cuts %s --exits %s --final %s --out %s"
                % (self.out_path, ",".join(h.tensor for h in self.heads),
                   ",".join("%d:%s" % (h.stage, h.output) for h in self.heads), self.final, bundle_dir))


def parse_at(text: str) -> List[str]:
    """``"T1,T2"`` -> ``["T1", "T2"]`` (empty and repeated items refused, as by ``build --cuts``)."""
    try:
        return parse_cuts(text)
    except BuildError as exc:
        raise HeadsError(str(exc).replace("--cuts:", "--at:"))


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=3)
    return " (did you mean %s?)" % " or ".join(repr(c) for c in close) if close else ""


def load_backbone(path: str, inline_max_bytes: int = INLINE_MAX_BYTES) -> Tuple[onnx.ModelProto, bool]:
    """Read and check an ONNX file; one-line HeadsError when it is missing or invalid, or a side
    file cannot give a weight its bytes. Returns (the model, whether its weights stay in its
    side files): with them up to ``inline_max_bytes`` (graph and side files together); past it,
    the graph alone (``load_checked_graph``), each side file checked to hold its tensors' bytes
    but none read, so that a backbone past protobuf's 2 GB limit is read in megabytes."""
    model = load_checked_graph(path, HeadsError)
    external = build_weights.model_bytes(model) > inline_max_bytes
    try:
        if external:
            for tensor in build_weights.external_tensors(model):
                build_weights.check_stored(tensor, os.path.dirname(path))
        else:  # every weight read: the model is run and written as one message
            build_weights.load_small(model, os.path.dirname(path), math.inf)
    except (OSError, ValueError) as exc:  # a side file unreadable or cut short
        raise HeadsError("%s: cannot read the model (%s)" % (path, first_line(exc)))
    return model, external


def check_spec(model: onnx.ModelProto, at: Sequence[str], final: Optional[str]) -> str:
    """Check the tensor names and cut points against ``model``; returns the final output's name."""
    produced = sorted({o for n in model.graph.node for o in n.output if o})
    weights = {t.name for t in model.graph.initializer}
    for name in at:
        if name not in produced and name in {i.name for i in model.graph.input} | weights:
            raise HeadsError("--at: %r is the backbone's %s, not an intermediate tensor"
                             % (name, "weight" if name in weights else "input"))
        if name not in produced:
            raise HeadsError("--at: unknown tensor name %r (no node produces it)%s"
                             % (name, _suggest(name, produced)))
    outputs = [o.name for o in model.graph.output]
    if final is None:
        if len(outputs) != 1:
            raise HeadsError("the backbone has %d outputs %s: name its classifier's logits with --final"
                             % (len(outputs), outputs))
        final = outputs[0]
    elif final not in outputs:
        raise HeadsError("--final: %r is not a graph output of the backbone%s"
                         % (final, _suggest(final, outputs)))
    if final in at:
        raise HeadsError("--at: %r is the final output, not an intermediate tensor" % final)
    try:
        plan_stages(model, at, {}, final)  # the very check `build` applies to the cuts
    except BuildError as exc:
        raise HeadsError(str(exc).replace("--cuts:", "--at:"))
    return final


def check_labels(y: np.ndarray, num_classes: int, final: str) -> None:
    """Labels in ``[0, num_classes)`` and at least ``MIN_PER_CLASS`` samples of every class."""
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise HeadsError("--data: label %d is out of range: the final output %r has %d classes "
                         "(labels 0..%d)" % (bad, final, num_classes, num_classes - 1))
    counts = np.bincount(y, minlength=num_classes)
    few = int(np.argmin(counts))
    if counts[few] < MIN_PER_CLASS:
        raise HeadsError("--data: too few samples of class %d: %d (every class needs at least %d, "
                         "so the held-out split can hold each one)"
                         % (few, counts[few], MIN_PER_CLASS))


def _check_input(model: onnx.ModelProto, x: np.ndarray, path: str):
    """Data shape against the graph input; returns (x in the input's dtype, batch size, whether
    the graph's batch size is fixed)."""
    consts = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise HeadsError("%s: the backbone must have exactly one data input, it has %d: %s"
                         % (path, len(inputs), [i.name for i in inputs]))
    tt = inputs[0].type.tensor_type
    want = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if want and (len(want) != x.ndim or any(w is not None and w != s
                                            for w, s in zip(want[1:], x.shape[1:]))):
        raise HeadsError("--data: x has samples of shape %s, the backbone input %r expects %s"
                         % (tuple(x.shape[1:]), inputs[0].name,
                            tuple("?" if w is None else w for w in want[1:])))
    if tt.elem_type:
        x = as_input(x, numpy_dtype(tt.elem_type))
    fixed = bool(want) and want[0] is not None
    return x, (want[0] if fixed else BATCH), fixed


def record_input_range(model: onnx.ModelProto, x: np.ndarray) -> Tuple[float, float]:
    """Write the (min, max) of the training inputs ``x`` (as the graph takes them) into
    ``model``'s metadata under ``INPUT_RANGE_KEY``, replacing any earlier value: ``build`` makes
    it the bundle's stage-1 ``input.value_range``, and a replay or profiling set on another
    scale is then told. Returns the range."""
    lo, hi = float(np.min(x)), float(np.max(x))
    kept = [p for p in model.metadata_props if p.key != INPUT_RANGE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = INPUT_RANGE_KEY, json.dumps([lo, hi])
    return lo, hi


def _cache_path(cache_dir: str, onnx_path: str, x: np.ndarray, names: Sequence[str], grid: int) -> str:
    """Cache file of the pooled features: named after the backbone file's and the data's bytes,
    the tensors and the grid. A backbone's weights kept in side files count too: its ``.onnx``
    stays byte for byte the same when only their values change."""
    folder = os.path.dirname(onnx_path)
    side = [sha256_file(os.path.join(folder, loc)) if os.path.isfile(os.path.join(folder, loc))
            else "missing " + loc for loc in tensor_locations(onnx_path)]
    h = hashlib.sha256()
    h.update(repr((sha256_file(onnx_path), x.shape, x.dtype.str, list(names), grid, side))
             .encode())
    h.update(np.ascontiguousarray(x).data)
    return os.path.join(cache_dir, "heads-features-%s.npz" % h.hexdigest()[:32])


def _read_cache(path: str, shapes) -> Optional[List[np.ndarray]]:
    """The cached arrays when ``path`` holds them with the expected shapes, else None."""
    try:  # a damaged cache file is recomputed and rewritten
        z = load_npz(path, "--cache")
        arrays = [z["a%d" % i] for i in range(len(shapes))]
    except (UsageError, KeyError):
        return None
    return arrays if [a.shape for a in arrays] == [tuple(s) for s in shapes] else None


def _write_cache(path: str, arrays: Sequence[np.ndarray]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.savez(f, **{"a%d" % i: a for i, a in enumerate(arrays)})


def make_heads(onnx_path: str, at: Sequence[str], x: np.ndarray, y: np.ndarray, out_path: str,
               spec: Optional[HeadSpec] = None, final: Optional[str] = None, holdout: float = 0.2,
               weight_decay: float = 1e-3, seed: int = 0, threads: int = 1,
               cache_dir: Optional[str] = None,
               log: Callable[[str], None] = lambda msg: None,
               inline_max_bytes: int = INLINE_MAX_BYTES) -> HeadsResult:
    """Attach and train one exit head per tensor in ``at``; writes ``out_path``. With
    ``cache_dir``, the pooled features are kept there and reused by a later call on the same
    backbone file, data, tensors and grid. A backbone over ``inline_max_bytes`` keeps its weights
    in its side files while it runs, and an output over it gets a side file beside it
    (``engines.heads_weights``). Raises ``HeadsError`` (a UsageError) with one line on bad
    input."""
    spec = spec or HeadSpec()
    if not 0.0 < holdout < 1.0:
        raise HeadsError("--holdout must be a fraction in (0, 1), got %g" % holdout)
    model, external = load_backbone(onnx_path, inline_max_bytes)
    source_dir = os.path.dirname(os.path.abspath(onnx_path))
    weights_dir = source_dir if external else None
    check_batch_one(model, HeadsError)
    final = check_spec(model, at, final)
    # other outputs of the backbone (exit heads it already has) are dropped with what feeds them
    model = only_output(model, final)
    x, batch, fixed = _check_input(model, x, onnx_path)
    names = list(at) + [final]
    probe: List[np.ndarray] = []
    session = run_tensors(model, names, x[:1], threads, batch, fixed, onnx_path,
                          lambda start, arrays: probe.extend(arrays), weights_dir)
    for name, t in zip(at, probe):
        if t.dtype != np.float32:
            raise HeadsError("tensor %r is %s: heads read float32 tensors" % (name, t.dtype))
        check_poolable(name, t.shape, spec)
    if probe[-1].ndim != 2:
        raise HeadsError("the final output %r has shape %s: a classifier's (batch, classes) logits "
                         "are needed" % (final, probe[-1].shape))
    num_classes = int(probe[-1].shape[1])
    check_labels(y, num_classes, final)

    cache = _cache_path(cache_dir, onnx_path, x, names, spec.grid) if cache_dir else None
    arrays = _read_cache(cache, [(len(x),) + pool(t, spec.grid).shape[1:] for t in probe]) if cache else None
    if arrays is None:
        arrays = [np.zeros((len(x),) + pool(t, spec.grid).shape[1:], np.float32) for t in probe]

        def keep(start, outs):
            for dst, t in zip(arrays, outs):
                dst[start:start + len(t)] = pool(t, spec.grid)
            if (start // batch) % 20 == 19:
                log("features: %d of %d samples" % (start + len(outs[0]), len(x)))

        log("computing features at %s for %d samples" % (", ".join(at), len(x)))
        run_tensors(model, names, x, threads, batch, fixed, onnx_path, keep, weights_dir, session)
        if cache:
            _write_cache(cache, arrays)
    else:
        log("features read from %s" % cache)
    session = None  # the backbone's weights in onnxruntime are let go before the heads train
    pooled, final_logits = arrays[:-1], arrays[-1]
    wrong = probabilities_problem(final_logits, "%s: output %r" % (onnx_path, final))
    if wrong:
        raise UsageError(wrong)

    train, hold = split_holdout(y, holdout, seed)
    taken = tensor_names(model)
    opset = opset_of(model)
    heads, reports = [], []
    for i, (name, feats) in enumerate(zip(at, pooled)):
        f = fit_input(feats, spec.kind)
        fitted = fit_head(f[train], y[train], f[hold], y[hold], num_classes,
                          kind="linear" if spec.kind == "linear" else "hidden", hidden=spec.hidden,
                          weight_decay=weight_decay, seed=seed + i)
        output = fresh_name("exit%d" % (i + 1), taken)
        taken.add(output)
        head = head_nodes(name, probe[i].shape, spec, fitted.params, output, opset)
        heads.append((output, head))
        macs = head_macs(name, probe[i].shape, onnx.TensorProto.FLOAT, head, output, opset)
        reports.append(HeadReport(stage=i + 1, tensor=name, output=output,
                                  tensor_shape=(1,) + tuple(probe[i].shape[1:]), macs=macs,
                                  holdout_accuracy=fitted.holdout_accuracy, iterations=fitted.iterations))
        log("head %s at %s: held-out accuracy %.4f after %d iterations"
            % (output, name, fitted.holdout_accuracy, fitted.iterations))
    multi = attach(model, heads, final, num_classes, x.shape[1:])
    value_range = record_input_range(multi, x)
    plan_stages(multi, at, {r.stage: r.output for r in reports}, final)  # as `build` will
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    try:
        side = write_model(multi, source_dir, out_path, inline_max_bytes,
                           [os.path.join(source_dir, loc) for loc in tensor_locations(onnx_path)])
    except ValueError as exc:  # a side file cut short since it was checked, --out's is the backbone's
        raise HeadsError("%s: cannot write the heads (%s)" % (out_path, first_line(exc)))
    try:
        backbone_macs: Optional[int] = count_macs(multi) - sum(r.macs for r in reports)
    except UsageError:  # a shape the counter cannot resolve: report the heads alone
        backbone_macs = None
    final_acc = float(np.mean(np.argmax(final_logits[hold], axis=1) == y[hold]))
    return HeadsResult(out_path=out_path, heads=reports, final=final, final_holdout_accuracy=final_acc,
                       backbone_macs=backbone_macs, num_train=len(train), num_holdout=len(hold),
                       input_range=value_range,
                       side_file=side_file_path(out_path) if side else None)

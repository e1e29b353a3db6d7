"""Model bundle: a directory with ``bundle.json`` + one ONNX file per stage + ``exit_profile.npz``.

Each stage file holds the stage's sub-model fused with its exit head: input = the previous cut
tensor (the image at stage 1), outputs = the next cut tensor (absent at the final stage) and the
exit logits (early-exit stages and the final stage). The manifest records, per stage, the file,
its SHA-256, tensor names/shapes/dtypes (batch dimension 1), ``flops`` (alpha, multiply-
accumulates counted from the graph, see ``engines.flops``) and ``input_bytes`` (beta, batch 1);
a stage whose weights live in ONNX external-data side files also lists those with their SHA-256
(``external_data``; the rules are ``engines.bundle_files``).

``load_bundle`` validates everything it reads and raises ``BundleError`` with one line naming
the file and field at fault; how the stages fit together (stage h's feature is stage h+1's
input, in shape and dtype) is ``engines.bundle_stages``.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import dataclass
from typing import Any, Container, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from agent.config.jsonfile import loads as json_loads
from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.ops.files import FileFault, read_text
from engines.bundle_fields import ManifestFields
from engines.bundle_files import (LOCATION_KEY, check_side_files, external_locations,
                                  mismatch_line)
from engines.bundle_stages import stages_problem, tensor_bytes

MANIFEST_NAME = "bundle.json"
MANIFEST_MAX_BYTES = 16 * 1024 * 1024  # a manifest is a few kB
COUNT_MAX = 2 ** 63 - 1  # flops and input_bytes: an int64, and exact enough as a float
_FLOAT_MAX = 1.7976931348623157e308  # the largest float: abs(v) <= it is finite (ints too)


def _count_text(count: int) -> str:
    text = str(count)
    return text if len(text) <= 24 else "a %d-digit number" % len(text.lstrip("-"))
EXIT_PROFILE_NAME = "exit_profile.npz"
FORMAT_NAME = "edge-agent-bundle"
FORMAT_VERSION = 1


# the fields a manifest, a stage and a tensor entry may hold: what make_manifest, stage_entry
# and tensor_entry write (``source`` is carried for people and never read, so it is free)
MANIFEST_KEYS = ("format", "version", "name", "num_classes", "flops_convention", "exit_profile",
                 "source", "stages")
STAGE_KEYS = ("index", "file", "sha256", "input", "feature_output", "logits_output", "has_exit",
              "flops", "input_bytes", "dynamic_batch", "external_data")
TENSOR_KEYS = ("name", "shape", "dtype")
# stage 1's input may also say what range of values the model's training inputs spanned
# (written by `build` from the metadata `heads` leaves; replay and profiling sets are compared)
INPUT_KEYS = TENSOR_KEYS + ("value_range",)


class BundleError(UsageError):
    """A bundle directory or manifest is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class StageSpec:
    """One stage of a bundle (sub-model fused with its exit head, if any)."""

    index: int  # 1-based stage number h
    onnx_path: str  # absolute path of the stage's ONNX file
    input_name: str  # graph input of the stage (previous cut tensor, or the image)
    input_shape: Tuple[int, ...]  # with batch dimension 1
    input_dtype: str  # numpy dtype name, e.g. "float32"
    feature_output: Optional[str]  # tensor handed to stage h+1; None at the final stage
    logits_output: Optional[str]  # exit/final head logits; None at a stage without a head
    has_exit: bool  # True at an early-exit stage (never at the final stage)
    flops: int  # alpha_h: multiply-accumulates per task (batch 1)
    input_bytes: int  # beta_h: bytes of the stage input per task (batch 1)
    sha256: str  # of the ONNX file
    feature_shape: Optional[Tuple[int, ...]] = None  # shape of feature_output (batch 1)
    num_classes: int = 0  # width of logits_output, 0 when there is none
    dynamic_batch: bool = False  # the ONNX input accepts any batch size
    input_value_range: Optional[Tuple[float, float]] = None  # stage 1: training inputs' [lo, hi]
    feature_dtype: Optional[str] = None  # numpy dtype of feature_output (= next stage input)
    external_data: Tuple[Tuple[str, str], ...] = ()  # (side file, its sha256) the manifest lists


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated bundle."""

    path: str  # absolute bundle directory
    name: str
    stages: Tuple[StageSpec, ...]
    num_classes: int
    exit_profile_path: Optional[str]  # absolute path, None when no profile has been written

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def early_exit_stages(self) -> Tuple[int, ...]:
        """1-based stages carrying an early-exit head."""
        return tuple(s.index for s in self.stages if s.has_exit)

    @property
    def exit_stages(self) -> Tuple[int, ...]:
        """Early-exit stages plus the final stage (the column order of an exit profile)."""
        return self.early_exit_stages + (self.num_stages,)

    def stage(self, index: int) -> StageSpec:
        """The stage with 1-based ``index``."""
        if not 1 <= index <= len(self.stages):
            raise BundleError("%s: no stage %r (bundle has stages 1..%d)"
                              % (self.path, index, len(self.stages)))
        return self.stages[index - 1]


def sha256_and_finds(path: str, needle: bytes) -> Tuple[str, bool]:
    """Hex SHA-256 of a file, read in 1 MiB blocks, and whether ``needle`` occurs in it (in the
    same pass: the loader parses a stage for side files only when it holds their key)."""
    h = hashlib.sha256()
    found, tail = False, b""  # tail: the last block's end, for a needle across two blocks
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if needle and not found:
                found = needle in tail + block[:len(needle) - 1] or needle in block
                tail = block[-(len(needle) - 1):] if len(needle) > 1 else b""
    return h.hexdigest(), found


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    return sha256_and_finds(path, b"")[0]


def tensor_locations(onnx_path: str) -> List[str]:
    """The external-data ``location`` of every tensor of the ONNX file ``onnx_path``, read from
    the mapped file without its weights (``engines.bundle_files.external_locations``);
    ``ValueError`` when the file is no ONNX model."""
    with open(onnx_path, "rb") as f:
        if not os.fstat(f.fileno()).st_size:  # an empty file cannot be mapped (nor name any)
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return external_locations(buf)


def value_range_problem(raw: Any) -> str:
    """Why ``raw`` is no value range ``[lo, hi]`` ("" when it is): two finite numbers, lo <= hi."""
    if not (isinstance(raw, list) and len(raw) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= _FLOAT_MAX
            for v in raw)):  # abs(v) <= max: finite, and an int no float holds is refused
        return "must be two finite numbers [lo, hi]"
    return "" if raw[0] <= raw[1] else "must have lo <= hi"


def write_manifest(directory: str, manifest: Dict[str, Any]) -> str:
    """Write ``manifest`` as ``bundle.json`` atomically; returns the file path."""
    path = os.path.join(directory, MANIFEST_NAME)
    write_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def not_a_bundle(path: str) -> str:
    """Why ``path`` cannot name a bundle although it exists ("" when it may): a regular file
    other than a bundle.json (it was read as a broken manifest)."""
    if os.path.isfile(path) and os.path.basename(path) != MANIFEST_NAME:
        return "is a file; expected a bundle directory (holding %s)" % MANIFEST_NAME
    return ""


def read_manifest(path: str) -> Tuple[str, Dict[str, Any]]:
    """Return (bundle directory, parsed manifest) for a bundle directory or its bundle.json."""
    path = os.path.abspath(os.fspath(path))
    if not_a_bundle(path):
        raise BundleError("%s: %s or its %s" % (path, not_a_bundle(path), MANIFEST_NAME))
    if os.path.isdir(path):
        directory, manifest_path = path, os.path.join(path, MANIFEST_NAME)
    else:
        directory, manifest_path = os.path.dirname(path), path
    if not os.path.exists(path):  # a mistyped path: say so rather than "no manifest in it"
        raise BundleError("%s: no such bundle directory (give the folder holding %s)"
                          % (path, MANIFEST_NAME))
    if not os.path.exists(manifest_path):
        raise BundleError("%s: no bundle manifest (expected %s)" % (path, MANIFEST_NAME))
    try:  # never blocks: a FIFO or device named bundle.json is refused, not opened for reading
        # json_loads: a number no float holds, a huge integer or a key given twice is refused
        obj = json_loads(read_text(manifest_path, "bundle manifest", MANIFEST_MAX_BYTES))
    except FileFault as exc:
        raise BundleError(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to be ours
        raise BundleError("%s: not valid JSON (%s)" % (manifest_path, type(exc).__name__
                                                       if isinstance(exc, RecursionError) else exc))
    if not isinstance(obj, dict):
        raise BundleError("%s: the manifest must be a JSON object" % manifest_path)
    return directory, obj


def _parse_stage(f: ManifestFields, obj, position: int, directory: str,
                 verify_files: Union[bool, Container[int]]) -> StageSpec:
    ctx = "stages[%d]" % position
    if not isinstance(obj, dict):
        raise BundleError("%s: %s must be an object" % (f.where, ctx))
    f.known(obj, STAGE_KEYS, ctx)
    index = f.get(obj, "index", int, ctx)
    if index != position + 1:
        raise BundleError("%s: %s.index is %d, expected %d (stages in order from 1)"
                          % (f.where, ctx, index, position + 1))
    rel = f.get(obj, "file", str, ctx)
    onnx_path = os.path.normpath(os.path.join(directory, rel))
    sha = f.get(obj, "sha256", str, ctx)
    side = f.side_files(obj, ctx)  # None in a manifest without the field
    if verify_files is True or (verify_files is not False and index in verify_files):
        if not os.path.isfile(onnx_path):
            raise BundleError("%s: %s.file %s does not exist" % (f.where, ctx, onnx_path))
        actual, mentions = sha256_and_finds(onnx_path, LOCATION_KEY)
        if actual != sha:
            raise BundleError(mismatch_line(f.where, ctx + ".file", rel, actual, sha))
        try:  # scanned only when it may name a side file: most stages hold none
            locations = tensor_locations(onnx_path) if mentions else []
        except ValueError as exc:
            raise BundleError("%s: %s.file %s is not a readable ONNX model (%s)"
                              % (f.where, ctx, rel, exc)) from None
        check_side_files(f.where, ctx, rel, onnx_path, directory, side, locations, sha256_file,
                         BundleError)
    inp = f.get(obj, "input", dict, ctx)
    feat = f.get(obj, "feature_output", dict, ctx, optional=True)
    logits = f.get(obj, "logits_output", dict, ctx, optional=True)
    flops = f.get(obj, "flops", int, ctx)
    input_bytes = f.get(obj, "input_bytes", int, ctx)
    if not (0 <= flops <= COUNT_MAX and 0 < input_bytes <= COUNT_MAX):
        raise BundleError("%s: %s needs flops in [0, 2**63) and input_bytes in (0, 2**63), got "
                          "%s and %s" % (f.where, ctx, _count_text(flops), _count_text(input_bytes)))
    for key, tensor in (("input", inp), ("feature_output", feat), ("logits_output", logits)):
        if tensor is not None:
            f.known(tensor, INPUT_KEYS if key == "input" and index == 1 else TENSOR_KEYS,
                    "%s.%s" % (ctx, key))
    value_range = inp.get("value_range")
    if value_range is not None and value_range_problem(value_range):
        raise BundleError("%s: field %s.input.value_range %s, got %.200r"
                          % (f.where, ctx, value_range_problem(value_range), value_range))
    num_classes = 0
    if logits is not None:
        lshape = f.get(logits, "shape", list, ctx + ".logits_output")
        num_classes = int(lshape[-1]) if lshape and isinstance(lshape[-1], int) else 0
    return StageSpec(
        index=index,
        onnx_path=onnx_path,
        input_name=f.get(inp, "name", str, ctx + ".input"),
        input_shape=f.shape(inp, "shape", ctx + ".input"),
        input_dtype=f.dtype(inp, "dtype", ctx + ".input"),
        feature_output=None if feat is None else f.get(feat, "name", str, ctx + ".feature_output"),
        logits_output=None if logits is None else f.get(logits, "name", str, ctx + ".logits_output"),
        has_exit=bool(f.get(obj, "has_exit", bool, ctx)),
        flops=flops,
        input_bytes=input_bytes,
        sha256=sha,
        feature_shape=None if feat is None else f.shape(feat, "shape", ctx + ".feature_output"),
        feature_dtype=None if feat is None else f.dtype(feat, "dtype", ctx + ".feature_output"),
        num_classes=num_classes,
        dynamic_batch=bool(f.get(obj, "dynamic_batch", bool, ctx, optional=True) or False),
        input_value_range=None if value_range is None else tuple(float(v) for v in value_range),
        external_data=side or (),
    )


def parse_bundle(obj: Dict[str, Any], directory: str, where: str = MANIFEST_NAME,
                 verify_files: Union[bool, Container[int]] = True) -> Bundle:
    """Validate a parsed manifest ``obj`` whose files live in ``directory`` (``verify_files``:
    as ``load_bundle``'s)."""
    f = ManifestFields(where, BundleError)
    f.known(obj, MANIFEST_KEYS, "")
    if obj.get("format") != FORMAT_NAME:
        raise BundleError("%s: field format must be %r, got %r" % (where, FORMAT_NAME, obj.get("format")))
    version = f.get(obj, "version", int, "")
    if version != FORMAT_VERSION:
        raise BundleError("%s: bundle format version %d, this edge-agent reads version %d"
                          % (where, version, FORMAT_VERSION))
    name = f.get(obj, "name", str, "")
    num_classes = f.get(obj, "num_classes", int, "")
    raw_stages = f.get(obj, "stages", list, "")
    if len(raw_stages) < 1:
        raise BundleError("%s: field stages is empty" % where)
    stages = tuple(_parse_stage(f, s, i, directory, verify_files) for i, s in enumerate(raw_stages))
    problem = stages_problem(stages, num_classes)  # feature h = input h+1, heads, sizes
    if problem:
        raise BundleError("%s: %s" % (where, problem))
    profile_rel = f.get(obj, "exit_profile", str, "", optional=True)
    profile_path = None
    if profile_rel is not None:
        candidate = os.path.normpath(os.path.join(directory, profile_rel))
        if os.path.exists(candidate):
            profile_path = candidate
        elif profile_rel != EXIT_PROFILE_NAME:
            # build names the default file before `profile` writes it (not profiled yet); any
            # other name was written by hand, and reading it as "no profile" would turn
            # threshold tuning off without a word
            raise BundleError("%s: field exit_profile names %s, which does not exist (%s)"
                              % (where, profile_rel, candidate))
    return Bundle(path=directory, name=name, stages=stages, num_classes=num_classes,
                  exit_profile_path=profile_path)


def load_bundle(path, verify_files: Union[bool, Container[int]] = True) -> Bundle:
    """Load and validate the bundle at ``path`` (its directory or its ``bundle.json``).

    With ``verify_files`` (default) every stage file must exist and match its SHA-256, and so
    must the side files it refers to (``engines.bundle_files``); given stage numbers, only
    those stages' files are (an agent reads only the stages it serves: hashing a large model's
    other stages at every start would cost it seconds to minutes for nothing).
    Raises ``BundleError`` (a ``UsageError``) with one line naming what is wrong.
    """
    directory, obj = read_manifest(path)
    return parse_bundle(obj, directory, where=os.path.join(directory, MANIFEST_NAME),
                        verify_files=verify_files)


def check_measurable(specs: Sequence[StageSpec]) -> None:
    """UsageError naming the stages of ``specs`` counted at 0 FLOPs (no Conv/Gemm/MatMul):
    capacities are FLOP/s, so such a stage has none to measure or serve with (mu would be 0, or
    its service time 0). A bundle may hold one; calibrating or serving it is refused."""
    zero = sorted(s.index for s in specs if not s.flops > 0)
    if zero:
        raise UsageError("stage(s) %s have flops 0 in the bundle's manifest; capacities are "
                         "FLOP/s, so give each stage its FLOP count (its \"flops\" field in "
                         "bundle.json)" % ",".join(map(str, zero)))


def tensor_entry(name: str, shape, dtype: str) -> Dict[str, Any]:
    """Manifest entry for one tensor."""
    return {"name": name, "shape": [int(d) for d in shape], "dtype": np.dtype(dtype).name}


def stage_entry(index: int, file: str, sha256: str, input_tensor: Dict[str, Any],
                feature: Optional[Dict[str, Any]], logits: Optional[Dict[str, Any]],
                has_exit: bool, flops: int, dynamic_batch: bool,
                external_data: Sequence[Dict[str, str]] = ()) -> Dict[str, Any]:
    """Manifest entry for one stage (``input_bytes`` derived from the input tensor);
    ``external_data`` ({file, sha256} of each side file) is written only when the stage has
    side files, so a bundle without any stays readable by agents that predate the field."""
    entry = {
        "index": index,
        "file": file,
        "sha256": sha256,
        "input": input_tensor,
        "feature_output": feature,
        "logits_output": logits,
        "has_exit": has_exit,
        "flops": int(flops),
        "input_bytes": tensor_bytes(input_tensor["shape"], input_tensor["dtype"]),
        "dynamic_batch": dynamic_batch,
    }
    if external_data:
        entry["external_data"] = [dict(e) for e in external_data]
    return entry


def make_manifest(name: str, num_classes: int, stages: List[Dict[str, Any]],
                  source: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A complete manifest object (``exit_profile`` always names ``exit_profile.npz``)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": name,
        "num_classes": int(num_classes),
        "flops_convention": "multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul per task",
        "exit_profile": EXIT_PROFILE_NAME,
        "source": source or {},
        "stages": stages,
    }

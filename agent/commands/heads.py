"""``edge-agent heads``: attach early-exit heads to a pretrained backbone, trained frozen."""

from __future__ import annotations

from agent.commands import seed_arg
from agent.commands.profile import THREADS_MAX, threads_arg

HELP = "attach early-exit heads to a backbone ONNX at named tensors, train them (backbone frozen)"


def add_arguments(parser) -> None:
    parser.add_argument("--onnx", required=True, metavar="BACKBONE.onnx",
                        help="the pretrained model, one data input, its classifier's logits as output")
    parser.add_argument("--at", required=True, metavar="T1,T2,...",
                        help="intermediate tensors, in graph order, to put a head on (they become "
                             "the cuts of `build`; no skip connection may cross one)")
    parser.add_argument("--data", required=True, metavar="LABELLED.npz",
                        help="x (N, ...) float32, or uint8 images (scaled to [0, 1] for a float input, as they are for a uint8 input), y (N,) labels")
    parser.add_argument("--out", required=True, metavar="MULTI_EXIT.onnx", help="multi-exit graph to write")
    parser.add_argument("--final", default=None, metavar="OUTPUT",
                        help="the backbone output holding the final head's logits (default: its only "
                             "output); the written graph keeps this name")
    parser.add_argument("--head", default="linear", choices=["linear", "mlp", "conv"],
                        help="head after pooling: linear (default), mlp (one hidden layer) or conv "
                             "(1x1 convolution on the pooled map, then linear)")
    parser.add_argument("--grid", type=int, default=1, metavar="G",
                        help="average-pool image tensors to a GxG map (default 1: global pooling)")
    parser.add_argument("--hidden", type=int, default=32,
                        help="hidden units (mlp) or channels (conv) (default 32)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="fraction of each class held out for early stopping and the reported "
                             "accuracy (default 0.2)")
    parser.add_argument("--weight-decay", type=float, default=1e-3,
                        help="L2 penalty on the head weights, on standardised features (default 1e-3)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the split and initial weights (default 0)")
    parser.add_argument("--threads", type=threads_arg, default=1,
                        help="onnxruntime intra-op threads, 1..%d (default 1)" % THREADS_MAX)
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="keep the pooled features in DIR and reuse them when the backbone file, "
                             "data, tensors and --grid are the same (default: no cache)")


def run(args) -> int:
    """Train and attach the heads; SIGTERM and SIGHUP end it as Ctrl-C does (one line, their
    exit status, no file half-written)."""
    from agent.commands.interrupts import as_interrupts

    with as_interrupts():
        return _run(args)


def _run(args) -> int:
    import logging
    import math
    import os

    from engines.heads import make_heads, parse_at
    from engines.heads_graph import HeadsError, HeadSpec
    from engines.profile import load_dataset

    from agent.ops.files import (FileFault, check_output_dir, check_output_file,
                                refuse_input_as_out)

    for opt, value, ok, what in (
            ("--grid", args.grid, args.grid >= 1, "a whole number >= 1"),
            ("--hidden", args.hidden, args.hidden >= 1, "a whole number >= 1"),
            ("--threads", args.threads, 1 <= args.threads <= THREADS_MAX, "1..%d" % THREADS_MAX),
            ("--weight-decay", args.weight_decay,
             math.isfinite(args.weight_decay) and args.weight_decay >= 0, "a finite number >= 0")):
        if not ok:  # the first option that is wrong, by name, with the value given
            raise HeadsError("%s: must be %s, got %g" % (opt, what, value))
    at = parse_at(args.at)
    if os.path.realpath(args.out) == os.path.realpath(args.onnx):
        raise HeadsError("--out %s is the --onnx backbone: write the multi-exit graph to another "
                         "file, so the backbone stays for a later run" % args.out)
    refuse_input_as_out(args.out, [("--data", args.data)])
    check_output_file(args.out, "--out")  # before any training
    if args.cache:
        check_output_dir(args.cache, "--cache")
    x, y = load_dataset(args.data, scale_uint8=False)  # scaled as the backbone's input takes it
    log = logging.getLogger("engines.heads")
    try:
        result = make_heads(args.onnx, at, x, y, args.out,
                            spec=HeadSpec(kind=args.head, grid=args.grid, hidden=args.hidden),
                            final=args.final, holdout=args.holdout,
                            weight_decay=args.weight_decay, seed=args.seed, threads=args.threads,
                            cache_dir=args.cache, log=log.info)
    except OSError as exc:  # a write that failed: the feature cache's or --out's
        cache = os.path.abspath(args.cache) if args.cache else None
        name = os.path.abspath(str(exc.filename)) if exc.filename else ""
        in_cache = cache is not None and (name == cache or name.startswith(cache + os.sep))
        what, path = ("--cache", args.cache) if in_cache else ("--out", args.out)
        raise FileFault("%s: cannot write %s: %s" % (what, path, exc.strerror or exc)) from None
    print("%s: %d %s heads trained on %d samples, held-out accuracy on %d"
          % (result.out_path, len(result.heads), args.head, result.num_train, result.num_holdout))
    if result.side_file:
        print("its weights are in %s (past protobuf's 2 GB limit): keep the two files together"
              % result.side_file)
    total = result.backbone_macs
    print("%-6s %-22s %-10s %-18s %10s %14s" % ("stage", "tensor", "output", "tensor shape",
                                                 "accuracy", "adds (MAC)"))
    for h in result.heads:
        share = " (%.2f%%)" % (100.0 * h.macs / total) if total else ""
        print("%-6d %-22s %-10s %-18s %9.2f%% %14d%s" % (h.stage, h.tensor, h.output,
                                                          "x".join(str(d) for d in h.tensor_shape),
                                                          100.0 * h.holdout_accuracy, h.macs, share))
    print("%-6s %-22s %-10s %-18s %9.2f%% %14s" % ("final", "-", result.final, "-",
                                                    100.0 * result.final_holdout_accuracy,
                                                    "backbone %d" % total if total else "-"))
    if result.input_range is not None:
        print("training inputs' values in [%.4g, %.4g]: recorded for build (a replay set on "
              "another scale is warned of)" % tuple(result.input_range))
    print("next: " + result.build_command())
    return 0

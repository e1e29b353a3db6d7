"""``edge-agent build``: cut a multi-exit ONNX model into a bundle of stages."""

from __future__ import annotations

HELP = "cut a multi-exit ONNX model into a bundle of stages (bundle.json + one ONNX per stage)"


def add_arguments(parser) -> None:
    parser.add_argument("--onnx", required=True, metavar="MULTI_EXIT.onnx",
                        help="the whole model with every exit head as a graph output")
    parser.add_argument("--cuts", required=True, metavar="T1,T2,...",
                        help="tensor names where the model is cut, in graph order (H-1 names make H stages)")
    parser.add_argument("--exits", default="", metavar="STAGE:OUTPUT,...",
                        help="early-exit heads: 1-based stage and the graph output holding its logits")
    parser.add_argument("--final", default=None, metavar="OUTPUT",
                        help="final head's logits (default: the one graph output that is not an exit)")
    parser.add_argument("--name", default=None, help="bundle name (default: the ONNX file name)")
    parser.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")


def run(args) -> int:
    from engines.build import build_bundle
    from engines.build_cuts import parse_cuts, parse_exits

    from agent.ops.files import check_output_dir, output_errors

    cuts, exits = parse_cuts(args.cuts), parse_exits(args.exits)
    check_output_dir(args.out, "--out")  # before the model is read and cut
    with output_errors("--out", args.out):
        bundle = build_bundle(args.onnx, cuts, exits, args.out, final_output=args.final,
                              name=args.name)
    print("bundle %s: %d stages, early exits at %s, %d classes"
          % (bundle.path, bundle.num_stages, list(bundle.early_exit_stages), bundle.num_classes))
    print("%-6s %-14s %-14s %-14s %14s %12s" % ("stage", "input", "feature_out", "logits_out",
                                                "flops (MAC)", "input_bytes"))
    for s in bundle.stages:
        print("%-6d %-14s %-14s %-14s %14d %12d" % (s.index, s.input_name, s.feature_output or "-",
                                                    s.logits_output or "-", s.flops, s.input_bytes))
    return 0

"""``edge-agent profile``: measure a bundle's exit profile on a labelled data set."""

from __future__ import annotations

from agent.config.checks import ENGINE_THREADS_MAX as THREADS_MAX  # as a node's engine_threads

HELP = "run a labelled data set through every stage once and write the bundle's exit profile"


def threads_arg(text: str) -> int:
    """``--threads``: a whole number in 1..THREADS_MAX (argparse's error otherwise)."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number, got %r" % text) from None
    if not 1 <= n <= THREADS_MAX:
        raise argparse.ArgumentTypeError("must be 1..%d, got %d" % (THREADS_MAX, n))
    return n


def add_arguments(parser) -> None:
    parser.add_argument("--bundle", required=True, metavar="DIR", help="bundle directory")
    parser.add_argument("--data", required=True, metavar="DATA.npz",
                        help="validation set: x (N, ...) float32 or uint8 images, y (N,) labels")
    parser.add_argument("--out", default=None, metavar="PROFILE.npz",
                        help="where to write the profile (default: the bundle's exit_profile.npz)")
    parser.add_argument("--backend", default="onnxruntime", choices=["auto", "tensorrt", "onnxruntime"],
                        help="engine backend (default onnxruntime)")
    parser.add_argument("--threads", type=threads_arg, default=1,
                        help="onnxruntime intra-op threads, 1..%d (default 1)" % THREADS_MAX)
    parser.add_argument("--embedding", default="auto", choices=["auto", "patchnorm", "raw", "none"],
                        help="input embedding stored per sample (DIMEE's pools): patchnorm (L2 "
                             "norm of each 4x4 patch of an image), raw (the flattened input), "
                             "none; auto (default) = patchnorm for images, raw for inputs of at "
                             "most 1024 values, else none")


def run(args) -> int:
    """Profile the bundle; SIGTERM and SIGHUP end it as Ctrl-C does (one line, their exit
    status, no file half-written)."""
    from agent.commands.interrupts import as_interrupts

    with as_interrupts():
        return _run(args)


def _run(args) -> int:
    import os

    from engines.bundle import EXIT_PROFILE_NAME, load_bundle
    from engines.exit_profile import exit_stats, save_exit_profile
    from engines.profile import load_dataset, profile_bundle

    from agent.ops.atomic import atomic_open
    from agent.ops.files import check_output_file, output_errors, refuse_input_as_out

    out = args.out
    if out:  # checked before anything is read or run
        check_output_file(out, "--out")  # a directory is refused, never given ".npz"
        if not out.endswith(".npz"):
            out += ".npz"  # numpy's own rule for a path, kept for a file written atomically
            check_output_file(out, "--out")
        refuse_input_as_out(out, [("--data", args.data)])
    bundle = load_bundle(args.bundle)
    if not out:
        out = os.path.join(bundle.path, EXIT_PROFILE_NAME)
        check_output_file(out, "--out")
    x, y = load_dataset(args.data, scale_uint8=False)  # scaled as stage 1's input takes it
    profile = profile_bundle(bundle, x, y, backend=args.backend, threads=args.threads,
                             embedding=args.embedding, data_path=args.data)
    with output_errors("--out", out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with atomic_open(out, "wb") as f:
            save_exit_profile(f, profile)
    print("exit profile of %s on %d samples -> %s" % (bundle.name, profile.num_samples, out))
    print("stored: confidence, correct, logits (%d classes), labels, embedding %s"
          % (profile.num_classes, "%s (%d values)" % (profile.embedding_kind,
                                                       profile.embedding.shape[1])
             if profile.embedding is not None else "none"))
    print("%-6s %-8s %10s %16s" % ("stage", "head", "accuracy", "mean confidence"))
    for k, stage in enumerate(profile.exit_stages):
        head = "final" if stage == profile.num_stages else "exit"
        print("%-6d %-8s %9.2f%% %16.3f" % (stage, head, 100.0 * profile.correct[:, k].mean(),
                                             profile.confidence[:, k].mean()))
    print("thresholds -> accuracy, fraction exiting per head")
    for c in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
        st = exit_stats(profile, [c] * len(profile.early_exit_stages))
        print("  c=%.2f   %6.2f%%   %s" % (c, 100.0 * st.accuracy,
                                           " ".join("%.3f" % f for f in st.exit_fraction)))
    return 0

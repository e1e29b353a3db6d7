"""``edge-agent submit``: send inputs to a source's client endpoint and print each answer."""

from __future__ import annotations

import argparse
import sys

from agent.config.checks import MAX_INTERVAL_S

# how long the connection to the source is watched before the first input: a refused
# connection or key is said then (a source started meanwhile is found)
CONNECT_WAIT_S = 3.0
# a wait per answer past a day is a mistake, as any agent period is, and past ~1e9 s overflows
TIMEOUT_MAX_S = int(MAX_INTERVAL_S)
HELP = "send inputs (an .npz/.npy file) to a source's client endpoint and print each answer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=None,
                        help="the source's client endpoint, e.g. tcp://10.0.0.10:5560")
    parser.add_argument("--images", required=True, metavar="FILE",
                        help=".npz with x (and optionally y, the labels) or .npy: one input "
                             "per row, shaped like the bundle's stage-1 input")
    parser.add_argument("--key", default=None, metavar="SECRET_FILE",
                        help="this client's NAME.key_secret (CURVE endpoints)")
    parser.add_argument("--server-key", default=None, metavar="KEY",
                        help="the source's public key (its NAME.key file or the z85 text)")
    parser.add_argument("--fleet", default=None, metavar="DIR",
                        help="a `fleet render` folder: endpoint and keys of --source from it")
    parser.add_argument("--source", default=None, help="with --fleet: the source to send to")
    parser.add_argument("--client", default="workstation",
                        help="with --fleet: the client keypair to use (default workstation)")
    parser.add_argument("--count", type=int, default=0,
                        help="send this many inputs, cycling through the file (default: each once)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds to wait for each answer (default 75: past the source's "
                             "own answer for a task it gave up on, 60 s by default)")


def _endpoint_and_keys(args):
    import os

    from agent.fleet.client import ClientKeys
    from agent.errors import UsageError
    from agent.fleet.manifest import require_manifest

    endpoint, key, server = args.endpoint, args.key, args.server_key
    named = "--key/--server-key"  # the options a key error is about
    if args.fleet:
        man = require_manifest(args.fleet)  # every entry checked: an object, fields typed
        node = man["nodes"].get(args.source or "")
        if node is None or not node.get("client"):
            raise UsageError("--source: %r is not a client-mode source of the fleet (sources: %s)"
                             % (args.source, ", ".join(n for n, v in man["nodes"].items()
                                                       if v.get("client"))))
        folder = args.fleet if os.path.isdir(args.fleet) else os.path.dirname(args.fleet)
        endpoint = endpoint or node["client"]
        if not key:
            named = "--client %s (the fleet's keys/clients/)" % args.client
        key = key or os.path.join(folder, "keys", "clients", args.client + ".key_secret")
        server = server or os.path.join(folder, "keys", args.source + ".key")
    if not endpoint:
        raise UsageError("--endpoint: needed (or --fleet DIR --source ID)")
    from agent.config.checks import check_endpoint

    check_endpoint(endpoint, "--endpoint", UsageError)  # a ZMQError traceback otherwise
    if bool(key) != bool(server):
        raise UsageError("--key and --server-key go together (a CURVE endpoint needs both)")
    try:
        keys = ClientKeys.load(key, server) if key else None
    except ValueError as exc:
        raise UsageError("%s: %s" % (named, exc)) from None
    return endpoint, keys


def _inputs(path: str):
    """Inputs ``x`` and labels ``y`` (or None) of ``--images``, checked: ``UsageError`` in one
    line for anything the send loop could not index, send or print."""
    from agent.errors import UsageError
    from engines.npzfile import load_npz
    from agent.ops.samples import checked_inputs, checked_labels

    data = load_npz(path, "--images", npy_as="x")  # a .npy named .npz too: by content
    if "x" not in data:
        raise UsageError("--images: cannot read inputs x from %s: it holds %s"
                         % (path, ", ".join(sorted(data)) or "no arrays"))
    x, y = data["x"], data.get("y")
    where = "--images: %s" % path
    x = checked_inputs(x, where)
    return x, (None if y is None else checked_labels(y, len(x), where))


def run(args: argparse.Namespace) -> int:
    from collections import Counter

    from agent.fleet.client import DEFAULT_TIMEOUT_S, Client, no_answer
    from agent.errors import UsageError

    if args.timeout is None:
        args.timeout = DEFAULT_TIMEOUT_S
    if args.count < 0:
        raise UsageError("--count: must be >= 0 (0: each input once), got %d" % args.count)
    if not 0 < args.timeout <= TIMEOUT_MAX_S:  # NaN and inf fail too
        raise UsageError("--timeout: must be > 0 and at most %d seconds (a day), got %r"
                         % (TIMEOUT_MAX_S, args.timeout))
    endpoint, keys = _endpoint_and_keys(args)
    x, y = _inputs(args.images)
    if not len(x):
        raise UsageError("--images: %s holds no inputs" % args.images)
    n = args.count or len(x)
    fates: Counter = Counter()
    explained = set()  # the source's detail lines printed so far
    with Client(endpoint, keys, name="submit", timeout_s=args.timeout) as client:
        problem = client.check_connection(min(args.timeout, CONNECT_WAIT_S))
        if problem:  # said now, not after a timeout per input
            raise UsageError("%s: %s; %d input(s) not sent" % (endpoint, problem, n))
        print("%-22s %-9s %-22s %5s %10s %4s %9s%s" % ("id", "outcome", "reason", "class",
                                                      "confidence", "exit", "delay ms",
                                                      "  label" if y is not None else ""))
        for i in range(n):
            a = client.infer(x[i % len(x)][None, ...])
            fates[a.outcome] += 1
            label = ""
            if y is not None:
                label = "  %d %s" % (int(y[i % len(x)]), "ok" if a.ok and a.cls == int(
                    y[i % len(x)]) else "-")
            print("%-22s %-9s %-22s %5d %10.3f %4d %9.1f%s"
                  % (a.id, a.outcome, a.reason or "-", a.cls, a.confidence, a.exit_stage,
                     a.delay_s * 1000.0, label))
            if a.detail and a.detail not in explained:  # each explanation once, below its row
                explained.add(a.detail)
                print("  %s: %s" % (a.id, a.detail))
            sys.stdout.flush()
            if a.reason != no_answer(a.id, args.timeout).reason:
                continue
            if i == 0:
                # nothing at all came back: the rest would each wait as long for nothing, and
                # a lone input says the same as a first one (no source there, or wrong keys)
                raise UsageError("no answer from %s within %g s: is its source running, and the "
                                 "endpoint (and keys) right?%s"
                                 % (endpoint, args.timeout, " %d input(s) not sent" % (n - 1)
                                    if n > 1 else ""))
            # a source that answered before and now does not: one gone (nothing listens, or
            # another key or program at the endpoint) would make every input left wait out
            # --timeout; one that is up but slow passes the check and the run goes on
            problem = client.check_connection(min(args.timeout, CONNECT_WAIT_S)) \
                if i + 1 < n else ""
            if problem:
                _summary(i + 1, fates)
                err = UsageError("%s: %s; %d input(s) not sent" % (endpoint, problem, n - i - 1))
                err.exit_status = 1  # answers came back: a failed run, not a mistaken command
                raise err
    _summary(n, fates)
    return 0 if fates["completed"] == n else 1


def _summary(sent: int, fates) -> None:
    print("%d sent: %s" % (sent, ", ".join("%d %s" % (fates[o], o) for o in
                                           ("completed", "rejected", "lost", "error")
                                           if fates[o])))
    sys.stdout.flush()

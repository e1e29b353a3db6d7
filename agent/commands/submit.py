"""``edge-agent submit``: send inputs to a source's client endpoint and print each answer."""

from __future__ import annotations

import argparse
import os
import sys

from agent.commands import seed_arg
from agent.config.checks import MAX_INTERVAL_S

# how long the connection to the source is watched before the first input: a refused
# connection or key is said then (a source started meanwhile is found)
CONNECT_WAIT_S = 3.0
# after Ctrl-C or SIGTERM: how long the answer in flight is waited for
INTERRUPT_WAIT_S = 1.0
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
    parser.add_argument("--client", default=None,
                        help="with --fleet: the client keypair to use (default workstation)")
    parser.add_argument("--count", type=int, default=0,
                        help="send this many inputs, cycling through the file (default: each once)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds to wait for each answer (default 75: past the source's "
                             "own answer for a task it gave up on, 60 s by default)")
    parser.add_argument("--rate", type=float, default=None, metavar="R",
                        help="send R inputs per second (Poisson arrivals) whatever is in "
                             "flight, for the delays under load (default: one at a time, each "
                             "answer awaited)")
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="with --rate: seed of the random arrival gaps (default 0)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write a run folder DIR/YYYYmmdd-HHMMSS (DIR/latest) with one "
                             "record per input, for `edge-agent report DIR`")
    parser.add_argument("--max-message-bytes", type=int, default=None, metavar="N",
                        help="the source's max_message_bytes (its node config; default: with "
                             "--fleet the one its fleet.json records, else the node config's "
                             "default): a larger input is refused before sending")


def _endpoint_and_keys(args):
    """The endpoint, the CURVE keys (or None) and the source's ``max_message_bytes`` as its
    fleet's ``fleet.json`` records it (None: no --fleet, or a render that did not record it)."""
    from agent.fleet.client import ClientKeys
    from agent.errors import UsageError
    from agent.fleet.manifest import require_manifest

    endpoint, key, server = args.endpoint, args.key, args.server_key
    named = "--key/--server-key"  # the options a key error is about
    limit = None
    if not args.fleet and (args.source or args.client):  # would be ignored: said instead
        raise UsageError("--%s: only with --fleet DIR (a `fleet render` folder); without it give "
                         "--endpoint, and --key/--server-key for a CURVE endpoint"
                         % ("source" if args.source else "client"))
    if args.fleet:
        man = require_manifest(args.fleet)  # every entry checked: an object, fields typed
        node = man["nodes"].get(args.source or "")
        if node is None or not node.get("client"):
            raise UsageError("--source: %r is not a client-mode source of the fleet (sources: %s)"
                             % (args.source, ", ".join(n for n, v in man["nodes"].items()
                                                       if v.get("client"))))
        folder = args.fleet if os.path.isdir(args.fleet) else os.path.dirname(args.fleet)
        endpoint = endpoint or node["client"]
        limit = node.get("max_message_bytes")  # checked by load_manifest: an int > 0
        client = args.client or "workstation"
        if not key:
            named = "--client %s (the fleet's keys/clients/)" % client
        key = key or os.path.join(folder, "keys", "clients", client + ".key_secret")
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
    return endpoint, keys, limit


def _inputs(args):
    """Inputs ``x`` (sent as stored: a source scales uint8 images for its float stage 1
    itself) and labels ``y`` (or None) of ``--images``, checked: ``UsageError`` in one line for
    anything the send loop could not index, send or print, or for labels no class of the
    fleet's bundle (``--fleet``, when its ``testbed.json`` names one here) could match."""
    from agent.errors import UsageError
    from engines.npzfile import load_npz
    from agent.ops.samples import checked_inputs, checked_labels
    from agent.commands.submit_checks import check_label_range, fleet_classes, unread_arrays

    path = args.images
    data = load_npz(path, "--images", npy_as="x")  # a .npy named .npz too: by content
    if "x" not in data:
        raise UsageError("--images: cannot read inputs x from %s: it holds %s"
                         % (path, ", ".join(sorted(data)) or "no arrays"))
    x, y = data["x"], data.get("y")
    where = "--images: %s" % path
    x = checked_inputs(x, where)
    if not len(x):
        raise UsageError("--images: %s holds no inputs" % path)
    y = None if y is None else checked_labels(y, len(x), where)
    classes, bundle = fleet_classes(args.fleet) if args.fleet else (0, "")
    check_label_range(y, classes, bundle, where=where)
    extra = unread_arrays(data)
    if extra:  # read as a replay set or `profile --data` reads it: said, not refused
        print("edge-agent submit: warning: %s: %s" % (where, extra), file=sys.stderr)
    return x, y


def run(args: argparse.Namespace) -> int:
    import signal

    from agent.commands.interrupts import as_interrupts
    from agent.fleet.client import DEFAULT_TIMEOUT_S
    from agent.errors import UsageError

    if args.timeout is None:
        args.timeout = DEFAULT_TIMEOUT_S
    if args.count < 0:
        raise UsageError("--count: must be >= 0 (0: each input once), got %d" % args.count)
    if not 0 < args.timeout <= TIMEOUT_MAX_S:  # NaN and inf fail too
        raise UsageError("--timeout: must be > 0 and at most %d seconds (a day), got %r"
                         % (TIMEOUT_MAX_S, args.timeout))
    if args.rate is not None:
        from agent.testbed.bounds import MAX_RATE, MIN_TASK_RATE_TASKS_S

        if not MIN_TASK_RATE_TASKS_S <= args.rate <= MAX_RATE:  # NaN and inf fail too
            raise UsageError("--rate: must be in [%g, %g] inputs per second, got %r"
                             % (MIN_TASK_RATE_TASKS_S, MAX_RATE, args.rate))
    if args.max_message_bytes is not None and args.max_message_bytes <= 0:
        raise UsageError("--max-message-bytes: must be > 0 (the source's max_message_bytes), "
                         "got %d" % args.max_message_bytes)
    endpoint, keys, limit = _endpoint_and_keys(args)
    x, y = _inputs(args)
    got: list = []  # signals not acted on yet (pyzmq may drop what their handler raised)
    # SIGTERM, SIGHUP as Ctrl-C: the answers so far, then the summary
    with as_interrupts((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), got.append):
        return _send_all(args, endpoint, keys, x, y, got, limit)


def _send_all(args, endpoint: str, keys, x, y, got: list, fleet_limit=None) -> int:
    """Send the inputs ``x`` (one per row), one at a time or at ``--rate``, printing each
    answer; the exit status. ``got``: the signals whose handler ran and that were not acted on
    yet (the client raises them again between its polls); ``fleet_limit``: the source's
    ``max_message_bytes`` as its fleet.json records it (None: not known), the client's limit
    unless ``--max-message-bytes`` gives one."""
    from agent.errors import UsageError
    from agent.fleet.client import Client
    from agent.commands.interrupts import raised_for, signal_name
    from agent.commands.submit_checks import check_size, wait_answers
    from agent.commands.submit_rate import send_at_rate
    from agent.commands.submit_tally import Tally, interrupted_line
    import time

    n = args.count or len(x)
    tally = Tally(y, len(x))
    tally.source = args.source if args.fleet else None
    given = args.max_message_bytes
    with Client(endpoint, keys, name="submit", timeout_s=args.timeout,
                max_message_bytes=fleet_limit if given is None else given) as client:
        def interrupted() -> None:
            if got:
                raise raised_for(got[-1])
        client.interrupted = interrupted
        # as stored: what goes on the wire
        check_size(args.images, client, x, n, "" if given is not None or fleet_limit is None
                   else "fleet.json's, for %s" % args.source)
        ended = ""  # the signal that ended the run early ("" when none did)
        try:
            problem = client.check_connection(min(args.timeout, CONNECT_WAIT_S))
            if problem:  # said now, not after a timeout per input
                raise UsageError("%s: %s; %d input(s) not sent" % (endpoint, problem, n))
            # the --out run folder only now: a refused connection leaves none for `report`
            tally.out = _records_out(args, client, n)
            if args.rate:
                send_at_rate(args, client, endpoint, x, n, tally, fleet_limit)
            for _ in () if args.rate else _answered(args, client, endpoint, x, n, tally,
                                                    fleet_limit):
                pass
        except KeyboardInterrupt as exc:
            del got[:]  # acted on: the wait below is not cut short by it again
            if tally.pending and tally.pending not in client.sent_at:
                # interrupted as send returned: the input may be out, its answer still comes
                client.sent_at[tally.pending] = time.monotonic()
            for tid, at in client.sent_at.items():  # one sent as the signal came: noted too
                if tid not in tally.sent_inputs:
                    tally.sent(tid, int(tid.rsplit("-", 1)[1]) - 1, at)
            try:  # the answers in flight, if they come at once (a second Ctrl-C: not awaited)
                for a in wait_answers(client, INTERRUPT_WAIT_S):
                    tally.add(a)
            except KeyboardInterrupt:
                pass
            in_flight = sorted(client.sent_at)
            ended = signal_name(exc)
            tally.abandon(in_flight, "interrupted (%s)" % ended)
            try:  # a closed terminal (SIGHUP) fails the print (EIO): the records are kept
                if tally.answered:
                    tally.summary()
                print(interrupted_line(ended, in_flight, n - tally.answered - len(in_flight)))
                sys.stdout.flush()
            except OSError:
                pass
            return int(getattr(exc, "exit_status", 130))
        finally:
            if tally.out is not None:
                tally.out.close(interrupted=ended or None, answered=tally.answered)
    tally.summary()
    return 0 if tally.fates["completed"] == n else 1


def _records_out(args, client, n: int):
    """The ``--out`` run folder's writer (``submit_records.RecordsOut``), or None."""
    from agent.commands.submit_records import RecordsOut, fleet_policy

    if not args.out:
        return None
    return RecordsOut(args.out, {
        "kind": "submit", "endpoint": client.endpoint,
        "source": args.source if args.fleet else None,
        "policy": fleet_policy(args.fleet) or None, "images": os.path.abspath(args.images),
        "count": n, "rate_tasks_s": args.rate or 0.0,
        "arrivals": "poisson" if args.rate else "one at a time",
        "seed": args.seed if args.rate else None, "timeout_s": args.timeout,
        "max_message_bytes": client.max_message_bytes})


def _answered(args, client, endpoint: str, x, n: int, tally, fleet_limit=None):
    """Send input after input of ``x`` (the connection checked) and record each answer,
    yielding the index of the input about to be sent; ``UsageError`` when the run cannot go on
    (said in one line). ``fleet_limit``: as ``_send_all``'s."""
    import time

    from agent.fleet.client import NotSent
    from agent.fleet.client_wire import no_answer
    from agent.errors import UsageError
    from agent.commands.submit_checks import file_refusal, no_answer_cause

    tally.header()
    for i in range(n):
        yield i
        tally.pending = "submit-%d-%d" % (os.getpid(), i + 1)  # in flight from before the send
        try:
            client.send(x[i % len(x)][None, ...], tally.pending)
        except NotSent as exc:  # 1,000 unanswered inputs queued for a source that takes none
            tid, tally.pending = tally.pending, ""
            tally.sent(tid, i, time.monotonic())
            tally.add(no_answer(tid, args.timeout, str(exc)), i)
            continue
        tally.sent(tally.pending, i, client.sent_at[tally.pending])
        tally.add(client.wait_for(tally.pending, args.timeout), i)
        a = tally.last
        left = " %d input(s) not sent" % (n - i - 1) if n > i + 1 else ""
        line = file_refusal(args.images, x, a, n - i - 1)
        if line:  # every input of the file has this dtype, shape and size: all would be refused
            err = UsageError(line)
            if i:
                tally.summary()
                err.exit_status = 1  # answers came back: a failed run
            raise err
        if a.reason != no_answer(a.id, args.timeout).reason or (i and i + 1 == n):
            continue
        # nothing came back: a source gone (nothing listens, or another key or program at
        # the endpoint) would make every input left wait out --timeout; one that is up but
        # slow passes the check and the run goes on
        problem = client.check_connection(CONNECT_WAIT_S if i == 0 else min(
            args.timeout, CONNECT_WAIT_S))
        if i == 0:  # nothing at all came back: a lone input says the same as a first one
            raise UsageError("no answer from %s within %g s: %s%s" % (
                endpoint, args.timeout,
                no_answer_cause(client, x, tally.pending, problem, fleet_limit),
                ";" + left if left else ""))
        if problem:
            tally.summary()
            err = UsageError("%s: %s;%s" % (endpoint, problem, left))
            err.exit_status = 1  # answers came back: a failed run, not a mistaken command
            raise err

"""What ``edge-agent submit`` checks besides its options: the class count of the fleet's
bundle (labels outside it are refused), arrays of ``--images`` it does not read, a source's
refusal of the file's dtype or shape (the same for every input of the file), the size of an
input's message (against the source's ``max_message_bytes``: ``--max-message-bytes``, else
the one its fleet's ``fleet.json`` records, else the node config's default), whether the
source took the connection (a handshake done) when no answer came, and whether the message
was big enough for ZeroMQ to drop the connection. Inputs are sent as stored: a source scales
uint8 images for its float stage 1 itself."""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Tuple

import numpy as np


def fleet_classes(fleet: str) -> Tuple[int, str]:
    """(class count, bundle path) of the bundle a `fleet render` folder's ``testbed.json``
    names (the workstation's copy of the model the fleet runs); (0, "") when the folder has
    none or it cannot be read (then labels are not checked against it)."""
    from agent.config.jsonfile import read_json_file
    from agent.errors import UsageError
    from engines.bundle import load_bundle

    folder = fleet if os.path.isdir(fleet) else os.path.dirname(fleet)
    path = os.path.join(folder, "testbed.json")
    if not os.path.isfile(path):
        return 0, ""
    try:
        bundle = read_json_file(path, UsageError, "testbed.json").get("bundle")
        if not isinstance(bundle, str) or not bundle:
            return 0, ""
        return int(load_bundle(bundle, verify_files=False).num_classes), bundle
    except (UsageError, OSError, ValueError, AttributeError):
        return 0, ""  # another machine's path, or no bundle at all: nothing known


def check_size(images: str, client: Any, x: Any, n: int, recorded: str = "") -> None:
    """``UsageError`` (``n`` inputs not sent) when the file's inputs ``x``, all of one size, are
    above the source's ``max_message_bytes`` (the client's limit: ``--max-message-bytes``, else
    the fleet's record of it, ``recorded`` saying so, else the node config's default): the
    source would refuse them, and above twice the limit ZeroMQ drops the connection. Weighed
    under the run's longest task id (the last input's), as it is sent."""
    from agent.errors import UsageError
    from agent.fleet.client import InputTooLarge

    try:
        client.frames(x[:1], "submit-%d-%d" % (os.getpid(), max(n, 1)))
    except InputTooLarge as exc:
        text = str(exc)
        if recorded:  # the limit is the source's own, as rendered: not "given" here
            text = text.replace("(given)", "(%s)" % recorded).replace(
                "give the client that limit", "render the fleet again")
        raise UsageError("--images: %s: %s%s; %d input(s) not sent"
                         % (images, text, "" if recorded else " (--max-message-bytes here)",
                            n)) from None


def dropped_for_size(client: Any, x: Any, tid: str, recorded: Optional[int] = None) -> str:
    """Why no answer came to the input ``x[:1]`` sent as ``tid`` when its message is over twice
    the source's ``max_message_bytes`` as known here (``recorded``: the fleet's record of it;
    else the node config's default), "" when it is not: ZeroMQ drops a connection whose message
    is over about twice the receiver's limit, so the source never saw it. ``check_size``
    refuses such an input first unless ``--max-message-bytes`` said more than that limit."""
    from agent.config.node import DEFAULT_MAX_MESSAGE_BYTES
    from agent.fleet.client_wire import task_frames
    from agent.protocol import wire

    limit = recorded or DEFAULT_MAX_MESSAGE_BYTES
    size = wire.frames_nbytes(task_frames(x[:1], tid, client.name))
    if size <= 2 * limit:
        return ""
    return ("its message of %d bytes is over twice the source's max_message_bytes %d (%s), and "
            "ZeroMQ drops a connection whose message is over about twice the source's "
            "max_message_bytes, so the source never sees the input; --max-message-bytes %d says "
            "it takes more: unless its node config sets max_message_bytes to at least %d, raise "
            "it there, or send smaller inputs"
            % (size, limit, "fleet.json's" if recorded else
               "the node config's default", client.max_message_bytes, size))


def no_answer_cause(client: Any, x: Any, tid: str, problem: str,
                    recorded: Optional[int] = None) -> str:
    """The likely cause said when no answer at all came to the input ``x[:1]`` sent as ``tid``
    (one input at a time or at ``--rate`` alike): ``problem`` (the connection check's finding)
    when there is one, else a message ZeroMQ dropped for its size (``dropped_for_size``;
    ``recorded`` as there), else what the connection's state suggests."""
    if problem:
        return problem
    dropped = dropped_for_size(client, x, tid, recorded)
    if dropped:
        return dropped
    if client.connected:
        return ("the endpoint took the connection, so --timeout may be too short for the "
                "fleet's delay, or a source there speaks another wire protocol (compare "
                "`edge-agent --version` here and there)" + _below_limit(client, x, tid))
    return "is its source running, and the endpoint (and keys) right?"



def _below_limit(client: Any, x: Any, tid: str) -> str:
    """The cause to add when the source took the connection yet never answered the input
    ``x[:1]`` sent as ``tid``, whose message fits the limit known here: a source whose own
    ``max_message_bytes`` is lower (not given here: no --fleet record, no
    --max-message-bytes) has ZeroMQ drop it unseen; "" for a message no source drops."""
    from agent.config.node import MIN_MAX_MESSAGE_BYTES
    from agent.fleet.client_wire import task_frames
    from agent.protocol import wire

    size = wire.frames_nbytes(task_frames(x[:1], tid, client.name))
    # a message up to twice the lowest limit a node config takes reaches any source
    if size <= 2 * MIN_MAX_MESSAGE_BYTES:
        return ""
    return (", or the source's max_message_bytes is below half this input's message of %d "
            "bytes (ZeroMQ then drops the connection and the source never sees the input): set "
            "it to at least %d in the source's node config, or give it as --max-message-bytes "
            "to have such inputs refused before sending" % (size, size))


def check_label_range(y: Any, classes: int, bundle: str, where: str) -> None:
    """Refuse (``UsageError``, one line) labels outside 0..classes-1 (-1: no label): no answer
    could ever match them."""
    from agent.errors import UsageError

    if y is None or classes <= 0:
        return
    bad = y[(y < -1) | (y >= classes)]
    if len(bad):
        raise UsageError("%s: y holds %d label(s) outside the %d classes of the fleet's bundle "
                         "%s (0..%d; -1: no label), e.g. %d"
                         % (where, len(bad), classes, bundle, classes - 1, int(bad[0])))


def unread_arrays(data: dict) -> str:
    """The warning for arrays of an ``--images`` archive besides ``x`` and ``y`` ("" when
    none): they are not sent (as a replay set's or a profile's extra arrays are not read)."""
    extra = sorted(k for k in data if k not in ("x", "y"))
    if not extra:
        return ""
    return ("array(s) %s not read: inputs come from x, labels from y" % ", ".join(extra))


def refused_kind_hint(x: Any, takes: Tuple[str, Tuple[int, ...]]) -> str:
    """The usual fix for inputs ``x`` (the file's array, one input per row) of another dtype or
    shape than stage 1 takes (``text.parse_input_refusal``), "" when none is known."""
    dtype, want = takes
    hints = []
    have = tuple(x.shape[1:])
    for axis in range(len(have) + 1):  # a missing axis of size 1 (a channel): which one
        if len(want) == len(have) + 1 and have[:axis] + (1,) + have[axis:] == want:
            hints.append("add the missing axis with np.expand_dims(x, %d)" % (axis + 1))
            break
    if x.dtype == np.uint8 and _float_name(dtype):
        if have != tuple(want):  # the dtype needs no fix: a source scales such inputs itself
            hints.append("uint8 images need no conversion: the source scales them to [0, 1] "
                         "for a float stage 1")
        else:  # the shape fits, so the source refused the uint8: it does not scale them
            hints.append("this source does not scale uint8 images: its replay set is not on "
                         "[0, 1] (or it is an agent before 0.2.0: upgrade it); convert them as "
                         "the model's training inputs were, e.g. x.astype(np.%s) / 255 for "
                         "[0, 1]" % dtype)
    return "; ".join(hints)


def _float_name(dtype: str) -> bool:
    """Whether ``dtype`` (a name from the network) is a numpy floating-point dtype."""
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def wait_answers(client: Any, wait_s: float) -> list:
    """Answers to inputs in flight that come within ``wait_s`` (all of them, or fewer)."""
    got = []
    deadline = time.monotonic() + wait_s
    while client.sent_at:
        ans = client.receive(max(0.0, deadline - time.monotonic()))
        if ans is None:
            break
        got.append(ans)
    return got


def file_refusal(images: str, x: Any, a: Any, left: int) -> str:
    """The one line that stops a run when answer ``a`` refused what every input of the file
    shares (one array: one dtype, shape and size): its dtype or shape (with the usual fix,
    ``refused_kind_hint``), or its size, above the source's ``max_message_bytes``; or refused
    this client itself (``revoked_client``: every later input would be too); "" for any other
    answer. ``left``: inputs not sent."""
    from agent.fleet.client_wire import task_frames
    from agent.protocol import wire
    from agent.protocol.text import parse_input_refusal

    rest = "; %d input(s) not sent" % left if left else ""
    if a.reason == "revoked_client":
        return ("the source refuses this client's key (revoked_client: it is no longer in the "
                "source's client_keys_dir): ask its operator to allow the key again%s" % rest)
    if a.reason != "bad_input":
        return ""
    takes = parse_input_refusal(a.detail)
    if takes:
        hint = refused_kind_hint(x, takes)
        return ("--images: %s: inputs %s %s each, stage 1 takes %s %s each%s%s"
                % (images, x.dtype.name, tuple(x.shape[1:]), takes[0], takes[1],
                   "; " + hint if hint else "", rest))
    if "max_message_bytes" in a.detail:  # the wire check's "oversized" refusal
        size = wire.frames_nbytes(task_frames(x[:1], a.id, "submit"))
        return ("--images: %s: the source refused an input's message of %d bytes as above its "
                "max_message_bytes (%s): raise max_message_bytes in the source's node config, "
                "or give its limit as --max-message-bytes to have such inputs refused before "
                "sending%s" % (images, size, a.detail, rest))
    return ""

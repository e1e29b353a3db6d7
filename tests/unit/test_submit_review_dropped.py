"""``edge-agent submit`` to a source whose ``max_message_bytes`` is lower than submit knows
(no ``--fleet`` record, no ``--max-message-bytes``): ZeroMQ drops the connection of a larger
message unseen, and the line ending the run names that cause, over real sockets."""

from __future__ import annotations

import numpy as np
import zmq

from agent import cli
from tests.unit.test_submit_run import _endpoint

SOURCE_LIMIT = 4096  # the stand-in source's ZMQ_MAXMSGSIZE, as a node config's max_message_bytes


def _run_against_small_limit(tmp_path, x):
    images = str(tmp_path / "in.npz")
    np.savez(images, x=x)
    endpoint = _endpoint()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)  # takes connections, never answers, drops big messages
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, SOURCE_LIMIT)
    sock.bind(endpoint)
    try:
        return cli.main(["submit", "--images", images, "--endpoint", endpoint, "--timeout",
                         "0.5"])
    finally:
        sock.close()
        ctx.term()


def test_no_answer_to_a_message_a_lower_source_limit_drops_names_that_limit(tmp_path, capsys):
    """Rule: when no answer comes to an input whose message fits the limit submit knows but is
    over twice the lowest limit a node config takes, the error line (exit 2) names the
    message's size and the source's max_message_bytes as a cause, with its fix, besides a short
    --timeout or another wire protocol."""
    x = np.zeros((2, 1, 64, 64), np.float32)  # 16 KiB an input: over twice SOURCE_LIMIT
    assert _run_against_small_limit(tmp_path, x) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the endpoint took the connection" in err[0], err
    assert "or the source's max_message_bytes is below half this input's message of " in err[0]
    assert "give it as --max-message-bytes" in err[0] and err[0].endswith(
        "; 1 input(s) not sent"), err


def test_a_message_no_source_limit_drops_is_not_blamed_on_the_limit(tmp_path, capsys):
    """Rule: a message within twice the lowest max_message_bytes a node config takes reaches
    any source: no answer to it says nothing about the source's message limit."""
    assert _run_against_small_limit(tmp_path, np.zeros((2, 1, 4, 4), np.float32)) == 2
    err = capsys.readouterr().err
    assert "the endpoint took the connection" in err and "max_message_bytes" not in err, err

"""``edge-agent submit --rate`` interrupted with many inputs in flight: the interrupted line
names them in the order they were sent, consecutive ones as one run, over a real socket."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np

from tests.unit.test_cli import _silent_router
from tests.unit.test_submit_run import REPO, _endpoint

IN_FLIGHT = 12  # past 9, where ids ordered as text (1, 10, 11, 12, 2, ...) leave send order


def test_the_interrupted_line_names_inputs_in_flight_in_send_order_as_runs(tmp_path):
    """Rule: after Ctrl-C with inputs in flight, the interrupted line names them in the order
    they were sent (submit-P-2 before submit-P-10), consecutive ids as one run
    (submit-P-1..12), and its count matches the records, each lost "not awaited"."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    endpoint = _endpoint()
    ctx, sock = _silent_router(endpoint)  # a source that takes inputs and never answers
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "submit", "--images", images, "--endpoint",
             endpoint, "--rate", "200", "--count", str(IN_FLIGHT), "--timeout", "600",
             "--out", str(tmp_path / "runs")], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        for _ in range(IN_FLIGHT):  # every input is out: all in flight
            assert sock.poll(60000), "no input came"
            sock.recv_multipart()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        sock.close()
        ctx.term()
    assert proc.returncode == 130 and err == "", (proc.returncode, err)
    with open(str(tmp_path / "runs" / "latest" / "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    prefix = recs[0]["id"].rsplit("-", 1)[0]
    assert out.splitlines()[-1] == (
        "interrupted (SIGINT): %d input(s) in flight (%s-1..%d: sent, answer not awaited), 0 "
        "not sent" % (IN_FLIGHT, prefix, IN_FLIGHT)), out
    assert len(recs) == IN_FLIGHT and all(
        r["status"] == "lost" and r["reason"] == "not awaited: interrupted (SIGINT)"
        for r in recs), recs


def test_ids_in_flight_are_named_in_send_order_with_gaps_kept():
    """Rule: the interrupted line orders ids by their sequence number, not as text, and keeps
    the gaps between runs (inputs answered meanwhile are not named)."""
    from agent.commands.submit_tally import interrupted_line

    ids = ["submit-7-10", "submit-7-9", "submit-7-11", "submit-7-2", "submit-7-3"]
    assert interrupted_line("SIGTERM", ids, 4) == (
        "interrupted (SIGTERM): 5 input(s) in flight (submit-7-2..3 submit-7-9..11: sent, "
        "answer not awaited), 4 not sent")

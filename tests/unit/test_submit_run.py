"""``edge-agent submit`` over real sockets: the summary's accuracy and delay, Ctrl-C and SIGTERM
mid-run, a --timeout shorter than the fleet's delay, labels no class can match, arrays it
does not read, and a file whose dtype or shape the source refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from agent import cli
from tests.unit.test_cli import _router_answering, _silent_router

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _endpoint():
    from agent.testbed.ports import free_ports

    return "tcp://127.0.0.1:%d" % free_ports(1)[0]


def _run_with(endpoint, answer_input, argv):
    """``cli.main(argv)`` while a stand-in source at ``endpoint`` answers as
    ``_router_answering`` says (class 7 for every answered input)."""
    ctx, stop, t = _router_answering(endpoint, answer_input)
    try:
        return cli.main(argv)
    finally:
        stop.set()
        t.join(5)
        ctx.term()


def test_summary_gives_accuracy_over_completed_labelled_inputs_and_their_delay(tmp_path, capsys):
    """Rule: with labels, the summary says the accuracy over completed inputs that have a label
    (-1: none; a lost input does not count), and the mean and p95 delay of completed answers,
    in ms; the per-input rows are unchanged."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((5, 1, 28, 28), np.float32), y=np.array([7, 7, 3, -1, 7]))
    endpoint = _endpoint()
    assert _run_with(endpoint, lambda k: k != 4, ["submit", "--images", images, "--endpoint",
                                                  endpoint, "--timeout", "0.5"]) == 1
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[1:] == ["completed", "-", "7", "0.900", "1", rows[1].split()[6],
                                   "7", "ok"], rows
    assert rows[-2] == "5 sent: 4 completed, 1 lost", rows
    line = rows[-1]
    assert line.startswith("completed: accuracy 66.7 % (2 of 3 labelled), delay mean "), line
    mean_ms, p95_ms = (float(p.split()[-2]) for p in line.split("delay ")[1].split(", "))
    # a loopback answer can take under 0.05 ms: printed 0.0 (one decimal)
    assert line.endswith(" ms") and 0 <= mean_ms <= p95_ms, line


def test_summary_without_labels_gives_the_delay_only(tmp_path, capsys):
    """Rule: without labels the summary's second line is the delay of completed answers only."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    endpoint = _endpoint()
    assert _run_with(endpoint, lambda k: True, ["submit", "--images", images, "--endpoint",
                                                endpoint]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[-2] == "2 sent: 2 completed" and rows[-1].startswith("completed: delay mean ")


def _submit_process(images, endpoint, interrupt_wait_s=None):
    """`edge-agent submit` in a child process; ``interrupt_wait_s``: how long it waits for the
    answers in flight after an interrupt (the command's own 1 s when None; longer, so a loaded
    machine's late scheduling cannot make the answer miss it)."""
    args = ["submit", "--images", images, "--endpoint", endpoint, "--timeout", "60"]
    code = ("import sys, agent.commands.submit as s\n" + (
        "s.INTERRUPT_WAIT_S = %r\n" % interrupt_wait_s if interrupt_wait_s else "") +
        "from agent.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.Popen(
        [sys.executable, "-c", code] + args, cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("signum,status,name", [(signal.SIGINT, 130, "SIGINT"),
                                                (signal.SIGTERM, 143, "SIGTERM"),
                                                (signal.SIGHUP, 129, "SIGHUP")])
def test_an_interrupt_names_the_input_in_flight_and_those_not_sent(tmp_path, signum, status,
                                                                   name):
    """Rule: Ctrl-C, SIGTERM or SIGHUP (a closed terminal) while an answer is awaited ends the
    run with the summary of the answers so far and one line naming the input sent and not
    answered and how many were not sent; exit 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP), no
    traceback."""
    from agent.protocol import wire

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((4, 1, 28, 28), np.float32))
    endpoint = _endpoint()
    ctx, sock = _silent_router(endpoint)
    try:
        proc = _submit_process(images, endpoint)
        assert sock.poll(60000), "no input came"
        first = sock.recv_multipart()  # the first input is sent: it is in flight now
        tid = wire.decode(first[1:]).fields["id"]
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        sock.close()
        ctx.term()
    assert proc.returncode == status and err == "", (proc.returncode, err)
    assert out.splitlines()[-1] == ("interrupted (%s): 1 input(s) in flight (%s: sent, answer "
                                    "not awaited), 3 not sent" % (name, tid)), out
    assert " sent: " not in out  # nothing was answered: no summary of answers


def test_an_answer_that_comes_just_after_ctrl_c_is_printed_and_counted(tmp_path):
    """Rule: after Ctrl-C the answer in flight is still waited for (up to 1 s; here longer,
    see ``_submit_process``): it gets its row and counts in the summary, and the last line
    says nothing is in flight."""
    import time

    from agent.protocol import wire

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([7, 7, 7]))
    endpoint = _endpoint()
    ctx, sock = _silent_router(endpoint)
    try:
        proc = _submit_process(images, endpoint, interrupt_wait_s=60.0)
        assert sock.poll(60000), "no input came"
        ident, *frames = sock.recv_multipart()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)  # the answer comes after the interrupt, well within the 1 s it waits
        fields = {"id": wire.decode(frames).fields["id"], "attempt": 0, "source": "cam",
                  "exit_stage": 2, "cls": 7, "confidence": 0.9, "worker": "w1", "hops": 1,
                  "resends": 0, "created": 1.0}
        sock.send_multipart([ident] + wire.encode(wire.Kind.RESULT, "cam", fields))
        out, err = proc.communicate(timeout=60)
    finally:
        sock.close()
        ctx.term()
    rows = out.splitlines()
    assert proc.returncode == 130 and err == "", (proc.returncode, err)
    assert rows[1].split()[1] == "completed" and rows[-3] == "1 sent: 1 completed", rows
    assert rows[-2].startswith("completed: accuracy 100.0 % (1 of 1 labelled)"), rows
    assert rows[-1] == "interrupted (SIGINT): 0 input(s) in flight, 2 not sent", rows


def _fleet_folder(tmp_path, endpoint, bundle):
    (tmp_path / "fleet.json").write_text(json.dumps(
        {"nodes": {"cam": {"client": endpoint, "role": "source", "stage": 0}}}))
    (tmp_path / "testbed.json").write_text(json.dumps({"bundle": bundle}))
    # --key/--server-key given: the folder's keys are not read
    return ["--fleet", str(tmp_path), "--source", "cam"]


def test_labels_outside_the_fleet_bundles_classes_are_refused_before_sending(tmp_path, capsys):
    """Rule: with --fleet, labels outside the classes of the bundle its testbed.json names
    (the demo's 10) are one error line before anything is sent, exit 2; labels inside them
    (and -1, no label) are sent."""
    from agent.net.security import generate_keypair

    bundle = os.path.join(REPO, "engines", "demo", "bundle")
    endpoint = _endpoint()
    fleet = _fleet_folder(tmp_path, endpoint, bundle)
    _, secret = generate_keypair(str(tmp_path / "keys" / "clients"), "workstation")
    generate_keypair(str(tmp_path / "keys"), "cam")
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([1, 42, 10]))
    assert cli.main(["submit", "--images", images] + fleet) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert out == "" and len(err) == 1, err
    assert ("y holds 2 label(s) outside the 10 classes of the fleet's bundle %s (0..9; -1: no "
            "label), e.g. 42" % bundle) in err[0] and images in err[0], err


def test_arrays_besides_x_and_y_are_named_in_one_warning_and_the_run_goes_on(tmp_path, capsys):
    """Rule: an .npz with arrays besides x and y is read as replay sets and profile data are
    (x and y only), and the arrays left out are named in one warning line."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32), y=np.array([7, 7]),
             z=np.zeros(3), w=np.ones(2))
    endpoint = _endpoint()
    assert _run_with(endpoint, lambda k: True, ["submit", "--images", images, "--endpoint",
                                                endpoint]) == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == ["edge-agent submit: warning: --images: %s: array(s) w, "
                                        "z not read: inputs come from x, labels from y" % images]
    assert "2 sent: 2 completed" in out


@pytest.mark.parametrize("x,detail,hint", [
    (np.zeros((5, 28, 28), np.uint8), "input uint8 (1, 28, 28); stage 1 takes float32 "
     "(1, 1, 28, 28)", "add the missing axis with np.expand_dims(x, 1); uint8 images need no "
     "conversion: the source scales them to [0, 1] for a float stage 1"),
    (np.zeros((5, 1, 28, 28), np.uint8), "input uint8 (1, 1, 28, 28); stage 1 takes float32 "
     "(1, 1, 28, 28)", "this source does not scale uint8 images: its replay set is not on "
     "[0, 1] (or it is an agent before 0.2.0: upgrade it); convert them as the model's "
     "training inputs were, e.g. x.astype(np.float32) / 255 for [0, 1]"),
    (np.zeros((5, 28, 28), np.float32), "input float32 (1, 28, 28); stage 1 takes float32 "
     "(1, 1, 28, 28)", "add the missing axis with np.expand_dims(x, 1)"),
])
def test_a_file_whose_dtype_or_shape_the_source_refuses_stops_at_the_first_input(
        tmp_path, capsys, x, detail, hint):
    """Rule: the source refusing an input's dtype or shape refuses every input of the file
    (one dtype and shape): the run stops after the first, with one error line saying what the
    file holds, what stage 1 takes, the usual fix, and how many inputs were not sent (exit 2),
    instead of one refused row per input. A uint8 file's dtype needs no fix (the source scales
    it for a float stage 1): only its shape does, and the line says so; a uint8 file of stage
    1's shape refused for its dtype meets a source that does not scale (before 0.2.0), and the
    line says to upgrade it or convert the file."""
    import zmq

    from agent.protocol import wire

    images = str(tmp_path / "in.npz")
    np.savez(images, x=x)
    endpoint = _endpoint()
    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)  # answers as a source does an input of another dtype/shape
    src.setsockopt(zmq.LINGER, 0)
    src.bind(endpoint)
    got = []

    def answer():
        while src.poll(2000):
            ident, *frames = src.recv_multipart()
            tid = wire.decode(frames).fields["id"]
            got.append(tid)
            src.send_multipart([ident] + wire.encode(wire.Kind.RESULT, "cam", wire.answer_fields(
                tid, "cam", "error", "bad_input", 1.0, detail)))

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint]) == 2
    finally:
        t.join(10)
        src.close(0)
        ctx.term()
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert len(got) == 1 and len(rows) == 3 and rows[2].endswith(": " + detail), rows
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        "edge-agent submit: error: --images: %s: inputs %s %s each, stage 1 takes float32 "
        "(1, 28, 28) each; %s; 4 input(s) not sent" % (images, x.dtype.name, x.shape[1:], hint))


def test_a_clients_wait_asks_whether_it_was_interrupted_between_polls():
    """Rule: while an answer is awaited the client polls in slices and calls ``interrupted``
    between them, so an interrupt whose exception pyzmq dropped (its handler runs inside a
    pyzmq call, which discards what it raised: under load about 1 SIGTERM in 5 was lost, the
    run then waiting out --timeout) still stops the wait. ``submit`` raises it there again."""
    from agent.fleet.client import Client

    class Stop(Exception):
        pass

    asked = []

    def interrupted():
        asked.append(1)
        if len(asked) >= 3:
            raise Stop

    endpoint = _endpoint()
    ctx, sock = _silent_router(endpoint)
    try:
        with Client(endpoint, timeout_s=60.0) as client:
            client.interrupted = interrupted
            with pytest.raises(Stop):
                client.receive(60.0)  # nothing answers: only the hook ends it
    finally:
        sock.close()
        ctx.term()
    assert len(asked) == 3

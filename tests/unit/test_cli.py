"""The console script: every subcommand offers --help, and misuse is one line with exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agent import cli


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_subcommand_is_offered_and_has_help(command, capsys):
    """Each name in COMMANDS has a module, and `edge-agent NAME --help` prints usage, exit 0."""
    assert cli._load(command) is not None, "agent/commands/%s.py is missing" % command
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: edge-agent " + command)


def test_python_dash_m_agent_is_the_console_script():
    """`python -m agent --version` runs the same entry point as `edge-agent`; the version
    names the wire protocol, which every agent of a fleet must share (a rolling upgrade
    checks it device by device)."""
    from agent.protocol.wire import VERSION

    out = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "edge-agent %s (wire protocol %d)" % (
        __import__("agent").__version__, VERSION)


def test_no_subcommand_lists_the_commands_and_exits_2(capsys):
    """A bare `edge-agent` lists the subcommands and fails (nothing was asked)."""
    assert cli.main([]) == 2
    assert "testbed" in capsys.readouterr().out


def test_help_imports_no_runtime_libraries():
    """`edge-agent --help` loads every command module for its one-line help; command modules
    keep their heavy imports inside ``run``, so none of numpy, zmq, onnxruntime or scipy is
    imported (a fresh interpreter, so other tests' imports do not count)."""
    code = ("import sys\nfrom agent.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'zmq', 'onnxruntime', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["heads", "plan", "scenario", "simulate", "submit", "testbed"])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "x"])
def test_a_seed_numpy_cannot_take_is_a_usage_error(command, seed, capsys):
    """``--seed`` takes 0..2^32-1 on every command that has one: anything else is argparse's
    one-line usage error (exit 2) naming the option, not a traceback from numpy."""
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--seed", seed])
    assert exc.value.code == 2
    assert "argument --seed: must be an integer in 0..4294967295" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--endpoint", "notanendpoint"], "--endpoint: must be a ZeroMQ endpoint"),
    (["--endpoint", "tcp://127.0.0.1:99999"], "--endpoint: port must be a number in 1..65535"),
    (["--endpoint", "tcp://127.0.0.1:5999", "--count", "-5"], "--count: must be >= 0"),
])
def test_submit_misuse_is_one_line_before_anything_is_sent(tmp_path, capsys, extra, message):
    """``submit`` checks its endpoint and count first: one error line, exit 2 (a malformed
    endpoint was a ZMQError traceback, a port out of range timed out per input, a negative
    count printed "-5 sent")."""
    import numpy as np

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    assert cli.main(["submit", "--images", images] + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_submit_with_a_client_name_the_fleet_has_no_key_for_names_that_client(tmp_path, capsys):
    """``--fleet DIR --client NAME`` without a key for NAME: one line naming ``--client`` and
    the file it looked for, not options the user never gave (``--key``)."""
    import json

    import numpy as np

    (tmp_path / "keys" / "clients").mkdir(parents=True)
    (tmp_path / "fleet.json").write_text(json.dumps(
        {"nodes": {"cam": {"client": "tcp://127.0.0.1:5999", "role": "source", "stage": 0}}}))
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    assert cli.main(["submit", "--fleet", str(tmp_path), "--source", "cam", "--client",
                     "laptop", "--images", images]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--client laptop" in err[0] and "laptop.key_secret" in err[0]
    assert "--key" not in err[0]


def test_submit_with_a_public_key_for_key_says_so_before_its_mode(tmp_path, capsys):
    """Rule: ``--key NAME.key`` (the public key file, mode 0644, where the secret key goes)
    is one line saying the file holds no secret key and which file to give, not a chmod
    advice that would only lead to that message next; a real secret key readable by others
    is still refused with the chmod."""
    import os

    from agent.net.security import generate_keypair

    public, secret = generate_keypair(str(tmp_path), "workstation")
    server, _ = generate_keypair(str(tmp_path), "cam")
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    argv = ["submit", "--images", images, "--endpoint", "tcp://127.0.0.1:5999",
            "--server-key", server]
    assert oct(os.stat(public).st_mode & 0o777) == "0o644"
    assert cli.main(argv + ["--key", public]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "%s holds no secret-key; give the NAME.key_secret file" % public \
        in err[0] and "chmod" not in err[0], err
    os.chmod(secret, 0o644)
    assert cli.main(argv + ["--key", secret]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has mode 0644" in err[0] and "chmod 600" in err[0], err


@pytest.mark.parametrize("nodes,entry,message", [
    ({"cam1": "x"}, "nodes.cam1", 'must be an object, got "x"'),
    ({"cam1": None}, "nodes.cam1", "must be an object, got null"),
    ({"cam1": [1]}, "nodes.cam1", "must be an object, got [1]"),
    ({"cam1": {"client": 5560, "role": "source"}}, "nodes.cam1.client",
     "must be a string, got 5560"),
    ({"cam1": {"client": "tcp://127.0.0.1:5999", "metrics": ["x"]}}, "nodes.cam1.metrics",
     'must be a string, got ["x"]'),
    ({"cam1": {"client": "tcp://127.0.0.1:5999", "role": {}}}, "nodes.cam1.role",
     "must be a string, got {}"),
    ({"cam1": {"client": "tcp://127.0.0.1:5999", "stage": "0"}}, "nodes.cam1.stage",
     'must be a stage number (0 for a source), got "0"'),
    ({"cam1": {"client": "tcp://127.0.0.1:5999", "stage": True}}, "nodes.cam1.stage",
     "must be a stage number (0 for a source), got true"),
])
@pytest.mark.parametrize("command", ["status", "submit"])
def test_a_fleet_json_entry_of_the_wrong_type_is_one_line_naming_it(
        tmp_path, capsys, nodes, entry, message, command):
    """Rule: ``status --fleet`` and ``submit --fleet`` read fleet.json through one checker:
    a node entry that is not an object, or one of its fields of the wrong type, is one error
    line naming the file and the entry, exit 2 (it was an AttributeError traceback), before
    any endpoint is read or input sent."""
    import json

    (tmp_path / "fleet.json").write_text(json.dumps({"nodes": nodes}))
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    argv = (["status", "--fleet", str(tmp_path)] if command == "status" else
            ["submit", "--fleet", str(tmp_path), "--source", "cam1", "--images", images])
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert out == "" and len(err) == 1, err
    assert err[0] == "edge-agent %s: error: %s: %s: %s" % (
        command, tmp_path / "fleet.json", entry, message), err


def _silent_router(endpoint):
    """A ROUTER that accepts connections and never answers (a source that has stopped
    answering, or another node's socket at a mistyped port)."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    return ctx, sock


def test_submit_to_an_endpoint_that_never_answers_stops_after_the_first_input(tmp_path, capsys):
    """Rule: when nothing at all comes back for the first input (a source that takes the
    connection and never answers), ``submit`` does not wait as long again for every other
    input: one error line naming the endpoint, that it took the connection (so --timeout may
    be too short, or the source speaks another wire protocol) and how many inputs were not
    sent, exit 2."""
    from agent.testbed.ports import free_ports

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    ctx, sock = _silent_router(endpoint)
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint,
                         "--timeout", "0.3"]) == 2
    finally:
        sock.close()
        ctx.term()
    out, err = capsys.readouterr()
    assert len([l for l in out.splitlines() if " lost " in l]) == 1
    err = err.strip().splitlines()
    assert len(err) == 1 and "no answer from %s" % endpoint in err[0] and "2 input(s)" in err[0]
    # it took the connection: too short a --timeout, or another wire protocol, not "no source"
    assert "the endpoint took the connection, so --timeout may be too short for the fleet's " \
        "delay, or a source there speaks another wire protocol" in err[0], err[0]
    assert "is its source running" not in err[0]


def test_submit_where_nothing_listens_says_so_before_sending(tmp_path, capsys):
    """Rule: a refused connection (no source running at the endpoint) is one error line naming
    the endpoint, said after the connection wait (at most --timeout), not after a timeout per
    input; nothing is sent, exit 2."""
    from agent.testbed.ports import free_ports

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]  # nothing listens there
    assert cli.main(["submit", "--images", images, "--endpoint", endpoint,
                     "--timeout", "0.5"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # not even the table's header: nothing was sent
    err = err.strip().splitlines()
    assert len(err) == 1 and endpoint in err[0] and "nothing listens there" in err[0] \
        and "3 input(s) not sent" in err[0], err


def test_submit_prints_the_sources_explanation_of_a_refused_input_once(tmp_path, capsys):
    """Rule: an input the source refuses (``error`` / ``bad_input``) is followed by the source's
    detail line (what was wrong with it), printed once however many inputs it explains; the
    exit status says not every input completed."""
    import threading

    import zmq

    from agent.protocol import wire
    from agent.testbed.ports import free_ports

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    why = "input holds NaN, inf or values beyond +-1e+06"  # one input's fault, not the file's
    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)  # stands in for a source: the same answer a source sends
    src.bind(endpoint)

    def answer(n):
        for _ in range(n):
            ident, *frames = src.recv_multipart()
            tid = wire.decode(frames).fields["id"]
            src.send_multipart([ident] + wire.encode(wire.Kind.RESULT, "cam", wire.answer_fields(
                tid, "cam", "error", "bad_input", 1.0, why)))

    t = threading.Thread(target=answer, args=(3,), daemon=True)
    t.start()
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint,
                         "--timeout", "30"]) == 1
    finally:
        t.join(5)
        src.close(0)
        ctx.term()
    lines = capsys.readouterr().out.splitlines()
    assert len([l for l in lines if "bad_input" in l and " error " in l]) == 3
    explained = [l for l in lines if l.endswith(": " + why)]
    assert len(explained) == 1 and lines.index(explained[0]) == 2, lines  # below the first row
    assert lines[-1] == "3 sent: 3 error"


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.float32(1)}, "x must be an array of inputs, one per row, got a single value"),
    ({"x": np.array(["a", "b"])}, "x has dtype str"),
    ({"x": np.zeros((3, 2), np.float32), "y": np.array([1])},
     "y must hold one label per input (x has 3 inputs, y is shaped (1,))"),
    ({"x": np.zeros((3, 2), np.float32), "y": np.int64(1)}, "y is shaped ()"),
    ({"x": np.zeros((3, 2), np.float32), "y": np.array(["a", "b", "c"])},
     "y must hold whole-number class labels, got dtype str"),
    ({"x": np.zeros((2, 2), np.float32), "y": np.array([1.0, 2.5])},
     "y must hold whole-number class labels (-1: none), got 2.5"),
])
def test_submit_inputs_it_cannot_send_are_one_line_before_anything_is_sent(
        tmp_path, capsys, arrays, message):
    """Rule: an --images file whose x is a single value or of a type no source takes, or whose
    y is not one whole-number label per input, is one error line naming the file, exit 2,
    before anything is sent (these were TypeError, IndexError and ValueError tracebacks)."""
    images = str(tmp_path / "in.npz")
    np.savez(images, **arrays)
    assert cli.main(["submit", "--images", images, "--endpoint", "tcp://127.0.0.1:5999"]) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert out == "" and len(err) == 1 and images in err[0] and message in err[0], err


def test_submit_reads_a_npy_array_whatever_its_name_says(tmp_path, capsys):
    """Rule: an --images file is read by its content: a .npy array saved under an .npz name
    is read as its inputs (it was an AttributeError traceback); a 0-d .npy is one line."""
    images = tmp_path / "in.npz"
    np.save(str(tmp_path / "a.npy"), np.float32(1))
    assert cli.main(["submit", "--images", str(tmp_path / "a.npy"),
                     "--endpoint", "tcp://127.0.0.1:5999"]) == 2
    assert "got a single value" in capsys.readouterr().err
    with open(str(images), "wb") as f:
        np.save(f, np.zeros((0, 2), np.float32))
    assert cli.main(["submit", "--images", str(images), "--endpoint", "tcp://127.0.0.1:5999"]) == 2
    assert "holds no inputs" in capsys.readouterr().err


def test_submit_of_a_fifo_or_a_folder_is_one_line_without_waiting(tmp_path, capsys):
    """Rule: --images must be a regular file: a FIFO (which would block the read until a
    writer came) or a folder is one line naming it, exit 2."""
    import os

    fifo = str(tmp_path / "in.npz")
    os.mkfifo(fifo)
    for path, kind in ((fifo, "is a FIFO"), (str(tmp_path), "is a directory")):
        assert cli.main(["submit", "--images", path, "--endpoint", "tcp://127.0.0.1:5999"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and path in err[0] and kind in err[0], err


@pytest.mark.parametrize("shape,extra", [((1, 1, 28, 28), []), ((3, 1, 28, 28), ["--count", "1"])])
def test_submit_of_a_single_input_to_an_endpoint_that_never_answers_is_one_error_line(
        tmp_path, capsys, shape, extra):
    """Rule: with one input to send (one in the file, or --count 1), nothing coming back is
    the same "no answer from ENDPOINT" error line, exit 2, as for the first of many (it was a
    "1 sent: 1 lost" summary, exit 1)."""
    from agent.testbed.ports import free_ports

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros(shape, np.float32))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    ctx, sock = _silent_router(endpoint)
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint,
                         "--timeout", "0.3"] + extra) == 2
    finally:
        sock.close()
        ctx.term()
    out, err = capsys.readouterr()
    assert len([l for l in out.splitlines() if " lost " in l]) == 1 and " sent: " not in out
    err = err.strip().splitlines()
    assert len(err) == 1 and "no answer from %s within 0.3 s" % endpoint in err[0], err
    assert "not sent" not in err[0]


def _router_answering(endpoint, answer_input):
    """A ROUTER standing in for a source, served by a thread of its own: it answers each
    input ``k`` (0, 1, ...) for which ``answer_input(k)`` is True with a completed answer,
    leaves those it is False for unanswered, and is closed (the source gone) at the first
    ``k`` it is None for. Returns (context, stop event, thread): set the event, join the
    thread (it closes the socket), then end the context."""
    import threading

    import zmq

    from agent.protocol import wire

    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)
    src.setsockopt(zmq.LINGER, 0)
    src.bind(endpoint)
    stop = threading.Event()

    def serve():
        k = 0
        try:
            while not stop.is_set():
                if not src.poll(50):
                    continue
                ident, *frames = src.recv_multipart()
                what = answer_input(k)
                if what is None:
                    return
                if what:
                    fields = {"id": wire.decode(frames).fields["id"], "attempt": 0,
                              "source": "cam", "exit_stage": 1, "cls": 7, "confidence": 0.9,
                              "worker": "w1", "hops": 1, "resends": 0, "created": 1.0}
                    src.send_multipart([ident] + wire.encode(wire.Kind.RESULT, "cam", fields))
                k += 1
        finally:
            src.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return ctx, stop, t


def test_submit_stops_when_its_source_is_gone_mid_run(tmp_path, capsys):
    """Rule: a source that answered and then went away (nothing listens at its endpoint any
    more) stops the run at the first input without an answer: the rows so far, their summary,
    then one error line naming the endpoint, why, and how many inputs were not sent; exit 1
    (answers came back: a failed run, as a lost input makes it), instead of waiting out
    --timeout for every input left."""
    import time

    from agent.testbed.ports import free_ports

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    ctx, stop, t = _router_answering(endpoint, lambda k: True if k == 0 else None)
    t0 = time.monotonic()
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint, "--count", "50",
                         "--timeout", "0.5"]) == 1
    finally:
        stop.set()
        t.join(5)
        ctx.term()
    took = time.monotonic() - t0
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert [r.split()[1] for r in rows[1:-2]] == ["completed", "lost"], rows
    assert rows[-2] == "2 sent: 1 completed, 1 lost" and rows[-1].startswith("completed: delay")
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-agent submit: error: %s: nothing listens "
                                               "there" % endpoint), err
    assert err[0].endswith("48 input(s) not sent"), err
    assert took < 20, took  # not 48 more waits


def test_submit_goes_on_when_its_source_is_up_but_slow(tmp_path, capsys):
    """Rule: an input the source does not answer within --timeout, while the source is still
    there, is one "lost" row and the run goes on with the next input (exit 1: not every
    input completed); only a source that is gone stops it."""
    from agent.testbed.ports import free_ports

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    ctx, stop, t = _router_answering(endpoint, lambda k: k != 1)
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint,
                         "--timeout", "0.5"]) == 1
    finally:
        stop.set()
        t.join(5)
        ctx.term()
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert [r.split()[1] for r in rows[1:-2]] == ["completed", "lost", "completed"], rows
    assert rows[-2] == "3 sent: 2 completed, 1 lost" and err == "", (rows, err)
    assert rows[-1].startswith("completed: delay mean "), rows


@pytest.mark.parametrize("command", ["calibrate", "profile", "heads"])
@pytest.mark.parametrize("value", ["0", "1025", "two"])
def test_threads_outside_what_an_agent_runs_is_refused_alike_by_every_command(
        command, value, capsys):
    """Rule: ``--threads`` takes 1..1024, as a node config's ``engine_threads`` does, in every
    command that builds engines (calibrate took 0 and any large number): exit 2, one error
    line naming the option."""
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--threads", value])  # refused before required options are missed
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("edge-agent %s: error: argument --threads: must be" % command), err


@pytest.mark.parametrize("argv,codes", [
    (["scenario", "mlci-demo", "-o", "{tmp}/m.json"], (141,)),
    (["--help"], (0, 141)), (["plan", "--help"], (0, 141)),  # argparse >= 3.9 ignores it
])
def test_a_reader_gone_from_stdout_ends_the_command_quietly(tmp_path, argv, codes):
    """`edge-agent plan --json | head`: once the reader of stdout has gone, the command ends
    with a SIGPIPE's status (141) and nothing on stderr, not a BrokenPipeError traceback."""
    import os

    r, w = os.pipe()
    os.close(r)  # every write to w now fails with EPIPE, as after `head` has exited
    try:
        proc = subprocess.run([sys.executable, "-m", "agent"]
                              + [a.replace("{tmp}", str(tmp_path)) for a in argv],
                              stdout=w, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode in codes, proc.stderr
    assert proc.stderr == b""


def test_a_broken_pipe_of_the_command_itself_is_not_taken_for_stdout(monkeypatch):
    """A BrokenPipeError from a pipe the command opened (stdout still read) is a real error and
    propagates: only a reader gone from stdout is the quiet SIGPIPE ending."""
    def broken(argv):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_main", broken)
    assert not cli.stdout_gone()
    with pytest.raises(BrokenPipeError):
        cli.main(["status"])

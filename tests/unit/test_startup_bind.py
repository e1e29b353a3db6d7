"""What ``run`` says of its endpoints: the ``serving:`` line names the endpoints the sockets
were bound at (a host name is resolved, an interface named), and a bind that fails names the
endpoint at fault and why: a host that does not resolve or an address that is none of this
machine's is not told to free a port. Real ``python -m agent run`` processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from agent.config.node import dump_config, parse_config
from agent.errors import EXIT_CONFIG
from agent.net.addrfamily import RESOLVE_WAIT_S
from agent.testbed.ports import free_ports
from engines.demo import DEMO_BUNDLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 60.0  # a source's start on a loaded 2-core machine takes seconds, not a minute


def _source(tmp_path, control: str, data: str) -> str:
    """A source config of the demo bundle with these bind endpoints; its path."""
    c, d = free_ports(2)
    obj = {"node_id": "s1", "role": "source", "stage": 0, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": str(tmp_path / "state"), "security": "none",
           "control_bind": control, "data_bind": data, "arrival_rate_tasks_s": 0.5,
           "drain_timeout_s": 1.0,
           "peers": [{"id": "w1", "stage": 1, "last_stage": 4,
                      "control_address": "tcp://127.0.0.1:%d" % c,
                      "data_address": "tcp://127.0.0.1:%d" % d}]}
    path = tmp_path / "s1.toml"
    path.write_text(dump_config(parse_config(obj, str(tmp_path))))
    return str(path)


def _run(path: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", path], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            universal_newlines=True, **kw)


def test_the_serving_line_names_the_endpoints_bound_not_the_names_configured(tmp_path):
    """Rule: a source configured to bind ``tcp://localhost:PORT`` says it serves at the
    address the socket took (``tcp://127.0.0.1:PORT``), for control and data alike."""
    c, d = free_ports(2)
    proc = _run(_source(tmp_path, "tcp://localhost:%d" % c, "tcp://localhost:%d" % d))
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()  # a thread: an agent that never says "serving" must not hang the test
    serving = []
    try:
        end = time.monotonic() + WAIT_S
        while time.monotonic() < end and proc.poll() is None and not serving:
            serving = [line for line in list(lines) if " serving: " in line]
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT_S)
        reader.join(WAIT_S)
    serving = [line for line in lines if " serving: " in line]
    assert serving, "".join(lines[-20:])
    serving = serving[0]
    assert "control tcp://127.0.0.1:%d, data tcp://127.0.0.1:%d," % (c, d) in serving, serving
    assert "localhost" not in serving


def test_a_bind_on_a_name_that_does_not_resolve_says_so_and_names_the_endpoint(tmp_path):
    """Rule: ``control_bind`` on a host name that does not resolve exits 78 with one line
    naming control_bind, the endpoint and that the host does not resolve; it is not told to
    free the port (libzmq says "No such device": it took the name for an interface).
    The agent waits ``RESOLVE_WAIT_S`` for the name, and the ``run`` process under test keeps
    that default: where the DNS server answers for .invalid only later (slow or unreachable),
    the line says instead that resolving the host takes longer than that, the same fault."""
    c, d = free_ports(2)
    endpoint = "tcp://nosuch-host.invalid:%d" % c
    proc = _run(_source(tmp_path, endpoint, "tcp://127.0.0.1:%d" % d))
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == EXIT_CONFIG, err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    whys = ["the host nosuch-host.invalid does not resolve",
            "resolving the host nosuch-host.invalid takes longer than %g s" % RESOLVE_WAIT_S]
    assert any("control_bind: cannot bind %s: %s (give an address of this machine"
               % (endpoint, why) in line for why in whys), line
    assert "free the port" not in line and "No such device" not in line, line


def test_a_bind_on_an_address_of_another_machine_says_so(tmp_path):
    """Rule: ``data_bind`` on an address this machine does not have (192.0.2.7, TEST-NET-1)
    exits 78 naming data_bind (control_bind was bound), the endpoint and that the address is
    none of this machine's."""
    c, d = free_ports(2)
    endpoint = "tcp://192.0.2.7:%d" % d
    proc = _run(_source(tmp_path, "tcp://127.0.0.1:%d" % c, endpoint))
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == EXIT_CONFIG, err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    assert "data_bind: cannot bind %s: 192.0.2.7 is no address of this machine (give an " \
           "address of this machine, an interface name, or * for all)" % endpoint in line, line

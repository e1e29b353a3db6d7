"""Local agent processes for the testbed: free ports, readiness over sd_notify, clean stops.

Each agent is a separate ``python -m agent run --config FILE`` process with its stderr in a log
file. Readiness uses systemd's notify protocol for real: the testbed binds one unix datagram
socket, passes it to every child as ``NOTIFY_SOCKET`` (as systemd does) and waits for
``READY=1`` from each child's pid, so the same agent code path runs under the testbed and under
systemd.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional

from agent.config.node import NodeConfig, dump_config
from agent.errors import UsageError


def free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
    """``n`` distinct TCP ports that are free on ``host`` right now.

    All sockets stay open until every port is chosen, so the same port is never handed out
    twice; another program could still take one before the agent binds it, which the agent
    then reports as a bind error.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NotifyListener:
    """The receiving end of the sd_notify protocol for child processes (READY=1 per pid).

    A daemon thread reads every datagram as it comes: agents keep sending STATUS and WATCHDOG
    messages while they serve, and a unix datagram socket nobody reads would fill up and block
    their sends.
    """

    def __init__(self, directory: Optional[str] = None):
        self._dir = tempfile.mkdtemp(prefix="edge-notify-", dir=directory)
        self.path = os.path.join(self._dir, "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        # SO_PASSCRED lets the kernel attach the sender's pid, as systemd reads it
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.settimeout(0.2)
        self.ready_pids: set = set()
        self.status: Dict[int, str] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        creds_size = 12  # struct ucred: pid, uid, gid (3 x int32)
        while not self._closed.is_set():
            try:
                data, anc, _flags, _addr = self._sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(payload[:4], sys.byteorder)
            if pid is None:
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                if line.strip() == "READY=1":
                    self.ready_pids.add(pid)
                elif line.startswith("STATUS="):
                    self.status[pid] = line[len("STATUS="):]

    def poll(self) -> None:
        """Kept for callers that poll; the reader thread does the work."""

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
        self._sock.close()
        try:
            os.remove(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


class AgentProcess:
    """One ``edge-agent run`` child with its log file."""

    def __init__(self, node_id: str, config_path: str, log_path: str, notify_path: str,
                 python: str = sys.executable):
        self.node_id = node_id
        self.config_path = config_path
        self.log_path = log_path
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = notify_path
        # one thread per numeric library: many agents share few cores
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        # the children run this very package, installed or not (a checkout run in place)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in
                                                      env.get("PYTHONPATH", "").split(os.pathsep)
                                                      if p])
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [python, "-m", "agent", "run", "--config", config_path],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=os.path.dirname(config_path))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask the agent to stop (SIGTERM): it drains and writes its final stats."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit status."""
        self.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
        self._log.close()
        return self.proc.returncode


def wait_ready(procs: Iterable[AgentProcess], listener: NotifyListener, timeout_s: float,
               on_tick: Optional[Callable[[], None]] = None, clock=time.monotonic) -> None:
    """Wait until every process has sent READY=1; raise ``UsageError`` naming a failed one."""
    procs = list(procs)
    deadline = clock() + timeout_s
    while True:
        listener.poll()
        pending = [p for p in procs if p.pid not in listener.ready_pids]
        if not pending:
            return
        for p in pending:
            rc = p.poll()
            if rc is not None:
                raise UsageError("agent %s exited with status %s before it was ready (log %s: %s)"
                                 % (p.node_id, rc, p.log_path, p.log_tail()))
        if clock() > deadline:
            raise UsageError("agents %s not ready after %.0f s (logs in %s)"
                             % ([p.node_id for p in pending], timeout_s,
                                os.path.dirname(pending[0].log_path)))
        if on_tick:
            on_tick()
        time.sleep(0.05)


class LocalAgents:
    """A set of agent processes of one run: configs on disk, start with readiness, stop all.

    Use as a context manager so every process is stopped (SIGTERM, then SIGKILL) on any error.
    """

    def __init__(self, run_dir: str, python: str = ""):
        self.run_dir = run_dir
        self.python = python or sys.executable
        self.configs: Dict[str, NodeConfig] = {}
        self.paths: Dict[str, str] = {}
        self.procs: Dict[str, AgentProcess] = {}
        self.listener = NotifyListener()
        self._fresh = False

    def write(self, cfgs: Dict[str, NodeConfig]) -> None:
        """Write one ``<name>.toml`` per config into the run directory.

        A directory left by an earlier testbed run is removed at the first write: sources
        append to records.jsonl, and old records would count as this run's.
        """
        if not self._fresh:
            if os.path.isdir(self.run_dir):
                shutil.rmtree(self.run_dir)
            os.makedirs(self.run_dir)
            self._fresh = True
        for n, cfg in cfgs.items():
            self.configs[n] = cfg
            self.paths[n] = os.path.join(self.run_dir, n + ".toml")
            with open(self.paths[n], "w", encoding="utf-8") as f:
                f.write(dump_config(cfg))

    def start(self, ids: Iterable[str], ready_timeout_s: float = 90.0,
              on_tick: Optional[Callable[[], None]] = None) -> List[AgentProcess]:
        """Start the named agents and wait for READY=1 from each."""
        started = []
        for n in ids:
            self.procs[n] = AgentProcess(n, self.paths[n], os.path.join(self.run_dir, n + ".log"),
                                         self.listener.path, self.python)
            started.append(self.procs[n])
        wait_ready(started, self.listener, ready_timeout_s, on_tick=on_tick)
        return started

    def check_alive(self) -> None:
        """Raise ``UsageError`` naming an agent that exited on its own."""
        for n, p in self.procs.items():
            rc = p.poll()
            if rc is not None:
                raise UsageError("agent %s exited with status %s during the run (log %s: %s)"
                                 % (n, rc, p.log_path, p.log_tail()))

    def stop(self, names: Iterable[str]) -> None:
        """SIGTERM the named agents at once, then wait for each (SIGKILL after a timeout)."""
        procs = [self.procs.pop(n) for n in list(names) if n in self.procs]
        for p in procs:
            p.terminate()
        for p in procs:
            p.stop()

    def stop_all(self) -> None:
        self.stop(list(self.procs))

    def __enter__(self) -> "LocalAgents":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        self.listener.close()

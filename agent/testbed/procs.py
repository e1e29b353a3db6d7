"""Local agent processes for the testbed: readiness over sd_notify, clean stops.

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
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from agent.config.node import NodeConfig, dump_config
from agent.errors import UsageError
from agent.ops.sdnotify import NOTIFY_DIR_PREFIX, NOTIFY_SOCKET_NAME, remove_stale_notify_dirs
from agent.testbed.deaths import AgentDied, error_line, how_it_ended, read_log_tail
from agent.testbed.ports import claim_fds
from agent.testbed.sigdefer import DeferredSignals


# an agent's argv: python <launcher> run --config FILE (a plug-in's launcher registers its
# policies, then calls agent.cli.main)
AGENT_LAUNCHER = ("-m", "agent")

class NotifyListener:
    """The receiving end of the sd_notify protocol for child processes (READY=1 per pid).

    A daemon thread reads every datagram as it comes: agents keep sending STATUS and WATCHDOG
    messages while they serve, and a unix datagram socket nobody reads would fill up and block
    their sends.
    """

    def __init__(self, directory: Optional[str] = None):
        remove_stale_notify_dirs(directory)  # those of testbeds killed before their clean-up
        self._dir = tempfile.mkdtemp(prefix=NOTIFY_DIR_PREFIX, dir=directory)
        self.path = os.path.join(self._dir, NOTIFY_SOCKET_NAME)
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
        shutil.rmtree(self._dir, ignore_errors=True)  # our own mkdtemp: the socket file only


class AgentProcess:
    """One ``edge-agent run`` child with its log file (appended to, so a restarted node's log
    keeps its earlier runs)."""

    def __init__(self, node_id: str, config_path: str, log_path: str, notify_path: str,
                 python: str = sys.executable, launcher: Sequence[str] = AGENT_LAUNCHER,
                 prefix: Sequence[str] = ()):
        self.node_id = node_id
        self.config_path = config_path
        self.log_path = log_path
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # many agents share few cores
            env.setdefault(name, "1")
        # the children run this very package, installed or not (a checkout run in place)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(
            [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self._terminated = False
        self._log = open(log_path, "ab")
        argv = ["run", "--config", config_path, "--parent-pid", str(os.getpid())]  # stop with us
        self.proc = subprocess.Popen(
            list(prefix) + [python] + list(launcher) + argv,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            # a session of its own: a terminal's Ctrl-C signals the whole foreground group, and
            # an agent taking it would exit before the testbed stops it (read as a crash)
            cwd=os.path.dirname(config_path), start_new_session=True,
            pass_fds=claim_fds())  # its ports stay this run's while it lives (testbed.ports)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Optional[int]:
        """The exit status, or None while the agent runs."""
        return self.proc.poll()

    @property
    def returncode(self) -> Optional[int]:
        """The exit status once the process has been waited for (None before)."""
        return self.proc.returncode

    def log_lines(self, lines: int, max_bytes: int = 4000) -> List[str]:
        """The last ``lines`` lines of the agent's log (within its last ``max_bytes``)."""
        return read_log_tail(self.log_path, lines, max_bytes)

    def last_error(self) -> str:
        """The log's last error line (``agent.testbed.deaths.error_line``); else its last
        line."""
        lines = [l.strip() for l in self.log_lines(60, 16000) if l.strip()]
        return error_line(lines) or (lines[-1] if lines else "(empty log)")

    def terminate(self) -> None:
        """Ask the agent to stop (SIGTERM): it drains and writes its final stats.

        Sent once: the agent restores the default handler when its loop ends, so a second
        SIGTERM during its clean-up would kill it before it has written everything.
        """
        if not self._terminated and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout_s: float = 15.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit status."""
        self.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            reap(self.proc, 5.0)
        self._log.close()
        return self.proc.returncode

    def kill(self, timeout_s: float = 10.0) -> Optional[int]:
        """SIGKILL (no chance to save anything) and wait; returns the exit status."""
        self.proc.kill()
        reap(self.proc, timeout_s)
        self._log.close()
        return self.proc.returncode


def reap(proc: subprocess.Popen, timeout_s: float) -> Optional[int]:
    """``proc.wait(timeout_s)``, and where that times out, ``os.waitpid`` for as long again.

    A Ctrl-C that lands inside ``Popen.wait`` right after it took its own wait lock leaves the
    lock held (CPython takes it outside its ``try``), and every later ``wait`` then times out
    with the process dead and never reaped: the testbed's SIGKILL after a second Ctrl-C met
    this. ``os.waitpid`` reaps it all the same."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped meanwhile by Popen itself
            return proc.returncode
        if pid == proc.pid:
            proc.returncode = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                               else os.WEXITSTATUS(status))
            return proc.returncode
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        time.sleep(0.05)


def wait_ready(procs: Iterable[AgentProcess], listener: NotifyListener, timeout_s: float,
               on_tick: Optional[Callable[[], None]] = None, clock=time.monotonic) -> None:
    """Wait until every process has sent READY=1; raise ``UsageError`` naming a failed one."""
    procs = list(procs)
    deadline = clock() + timeout_s
    while True:
        pending = [p for p in procs if p.pid not in listener.ready_pids]
        if not pending:
            return
        for p in pending:
            rc = p.poll()
            if rc is not None:
                raise UsageError("agent %s %s before it was ready: %s (log %s)"
                                 % (p.node_id, how_it_ended(rc), p.last_error(), p.log_path))
        if clock() > deadline:
            raise UsageError("agents %s not ready after %.0f s (logs in %s)"
                             % ([p.node_id for p in pending], timeout_s,
                                os.path.dirname(pending[0].log_path)))
        if on_tick:
            on_tick()
        time.sleep(0.05)


class LocalAgents:
    """A set of agent processes of one run: configs on disk, start with readiness, stop all.

    Use as a context manager (or call ``close``) so every process is stopped (SIGTERM, then
    SIGKILL) on any error. ``fresh`` empties the run directory at the first write (a testbed
    run); without it the directory is shared with other files and kept.
    """

    def __init__(self, run_dir: str, python: str = "", fresh: bool = True,
                 launcher: Sequence[str] = AGENT_LAUNCHER,
                 wrap: Optional[Callable[[str], List[str]]] = None):
        self.run_dir = run_dir
        # argv prefix per node id (e.g. ``ip netns exec NS`` for its namespace)
        self.wrap = wrap or (lambda name: [])
        self.injected: set = set()  # agents a fault took down on purpose: not a failure
        self.python = python or sys.executable
        self.launcher = tuple(launcher)
        self.configs: Dict[str, NodeConfig] = {}
        self.paths: Dict[str, str] = {}
        self.procs: Dict[str, AgentProcess] = {}
        self._listener: Optional[NotifyListener] = None
        self._emptied = not fresh

    @property
    def listener(self) -> NotifyListener:
        """The sd_notify socket the agents report to (opened at the first start)."""
        if self._listener is None:
            self._listener = NotifyListener()
        return self._listener

    def write(self, cfgs: Dict[str, NodeConfig]) -> None:
        """Write one ``<name>.toml`` per config into the run directory.

        A directory left by an earlier testbed run is removed at the first write: sources
        append to records.jsonl, and old records would count as this run's.
        """
        if not self._emptied:
            if os.path.isdir(self.run_dir):
                shutil.rmtree(self.run_dir)
            self._emptied = True
        os.makedirs(self.run_dir, exist_ok=True)
        for n, cfg in cfgs.items():
            self.configs[n] = cfg
            self.paths[n] = os.path.join(self.run_dir, n + ".toml")
            with open(self.paths[n], "w", encoding="utf-8") as f:
                f.write(dump_config(cfg))

    def launch(self, ids: Iterable[str]) -> List[AgentProcess]:
        """Start the named agents (written before) without waiting for them."""
        started = []
        for n in ids:
            self.procs[n] = AgentProcess(n, self.paths[n], os.path.join(self.run_dir, n + ".log"),
                                         self.listener.path, self.python, self.launcher,
                                         self.wrap(self.configs[n].node_id))
            started.append(self.procs[n])
        return started

    def start(self, ids: Iterable[str], ready_timeout_s: float = 90.0,
              on_tick: Optional[Callable[[], None]] = None) -> List[AgentProcess]:
        """Start the named agents and wait for READY=1 from each."""
        started = self.launch(ids)
        wait_ready(started, self.listener, ready_timeout_s, on_tick=on_tick)
        return started

    def check_alive(self) -> None:
        """Raise ``AgentDied`` naming an agent that ended without the testbed stopping it."""
        for n, p in self.procs.items():
            rc = p.poll()
            if rc is not None and n not in self.injected:
                cfg = self.configs[n]
                raise AgentDied(n, "worker, stage %d" % cfg.stage if cfg.stage else "source",
                                rc, p.log_path)

    def stop(self, names: Iterable[str], timeout_s: float = 15.0) -> None:
        """SIGTERM the named agents at once, wait up to ``timeout_s`` for each, then SIGKILL.
        A Ctrl-C (or SIGTERM, SIGHUP) while they drain is raised once every one of them is
        SIGKILLed and reaped: none may outlive the testbed. Signals after that first one are
        held from the instant it is taken (``first_acts``) until the kills are done."""
        with DeferredSignals(first_acts=True):
            # listed until stopped or killed: an interrupt before the ``try`` leaves them to
            # ``close``, not running unlisted
            stopping = [(n, self.procs[n]) for n in list(names) if n in self.procs]
            try:
                for _, p in stopping:
                    p.terminate()
                for _, p in stopping:
                    p.stop(timeout_s)
            except BaseException:
                for _, p in stopping:
                    p.kill()  # one reaped already is left as it is
                raise
            finally:
                for n, p in stopping:
                    if self.procs.get(n) is p:
                        del self.procs[n]

    def kill(self, name: str) -> None:
        """SIGKILL one agent, as a power cut would stop it."""
        self.procs.pop(name).kill()

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """Stop every agent still running (see ``stop``)."""
        self.stop(list(self.procs), timeout_s)

    def close(self) -> None:
        """Stop every agent and close the notify socket."""
        try:
            self.stop_all()
        finally:
            if self._listener is not None:
                with DeferredSignals():  # its folder goes even on Ctrl-C pressed again
                    self._listener.close()
                self._listener = None

    def __enter__(self) -> "LocalAgents":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The netns testbed network: one namespace per device, routed veths through a hub namespace.

A *device* is a group of agents with the same topology ``host`` (an agent without one is a
device of its own); the agents of a device share its namespace and talk to each other over
its loopback. Device k (1-based) has ``eth0`` at 10.200.k.2/24; the hub namespace holds the
other end ``h<k>`` at 10.200.k.1 and routes between devices. Every directed link between two
devices is shaped on the sender's ``eth0`` (``agent.testbed.shaping``): a topology link with
``rate_bytes_s`` shapes both directions between its two devices unless the reverse link is
listed with its own fields.

Namespace names are ``eatb<pid>-hub`` and ``eatb<pid>-d<k>`` (pid: the testbed's), so
``cleanup_stale`` can remove what a killed testbed left without touching a running one.
``plan_network`` and ``setup_commands`` are pure; ``Network`` runs the commands and removes
everything again (namespaces, and with them their veths, qdiscs and processes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from agent.errors import UsageError
from agent.testbed import delayshim, shaping
from agent.testbed.deaths import how_it_ended
from agent.testbed.topology import Topology, TopologyError

PREFIX = "eatb"  # namespace names: PREFIX<pid>-hub, PREFIX<pid>-d<k>
SUBNET = "10.200"  # device k: SUBNET.k.2, its hub side SUBNET.k.1
MAX_DEVICES = 250
DEV = "eth0"  # a device's interface to the hub

Cmd = List[str]


class NetnsError(UsageError):
    """The netns network cannot be set up (the message names the command and its error)."""


@dataclass(frozen=True)
class Device:
    """One namespace: the agents sharing a ``host``."""

    name: str  # the topology's host label (or the agent id)
    ns: str  # namespace name
    index: int  # k: its subnet SUBNET.k.0/24
    nodes: Tuple[str, ...]

    @property
    def address(self) -> str:
        return "%s.%d.2" % (SUBNET, self.index)

    @property
    def gateway(self) -> str:
        return "%s.%d.1" % (SUBNET, self.index)

    @property
    def hub_dev(self) -> str:
        return "h%d" % self.index


@dataclass(frozen=True)
class Shaped:
    """One directed, shaped link between two devices."""

    src: int  # device index
    dst: int
    rate_bytes_s: Optional[float]  # None: not rate-limited (delay or loss only)
    delay_ms: float = 0.0
    loss: float = 0.0

    @property
    def minor(self) -> int:
        """Its HTB class on the sender: 1:(10 + destination index)."""
        return 10 + self.dst


@dataclass(frozen=True)
class NetPlan:
    """The namespaces, addresses and shaped links of one netns testbed."""

    prefix: str  # PREFIX<pid>
    devices: Tuple[Device, ...]
    shaped: Tuple[Shaped, ...]
    delay_line: str = "netem"  # how a link's delay_ms is made: "netem" or "nfqueue" (the shim)

    @property
    def hub(self) -> str:
        return self.prefix + "-hub"

    def device_of(self, node: str) -> Device:
        for d in self.devices:
            if node in d.nodes:
                return d
        raise KeyError(node)

    def address_of(self, node: str) -> str:
        return self.device_of(node).address

    def namespaces(self) -> List[str]:
        return [self.hub] + [d.ns for d in self.devices]

    def link(self, src_node: str, dst_node: str) -> Optional[Shaped]:
        a, b = self.device_of(src_node).index, self.device_of(dst_node).index
        for s in self.shaped:
            if (s.src, s.dst) == (a, b):
                return s
        return None


def plan_network(topo: Topology, prefix: Optional[str] = None) -> NetPlan:
    """Group the agents into devices by ``host`` and list the shaped device-to-device links."""
    prefix = prefix or "%s%d" % (PREFIX, os.getpid())
    groups: Dict[str, List[str]] = {}
    for n in topo.node_ids():
        groups.setdefault(topo.host_of(n) or n, []).append(n)
    if len(groups) > MAX_DEVICES:
        raise TopologyError("--network netns: at most %d devices, got %d"
                            % (MAX_DEVICES, len(groups)))
    devices = tuple(Device(name, "%s-d%d" % (prefix, k), k, tuple(nodes))
                    for k, (name, nodes) in enumerate(groups.items(), start=1))
    index = {n: d.index for d in devices for n in d.nodes}
    listed = {(l.src, l.dst) for l in topo.links}
    pairs: Dict[Tuple[int, int], Tuple[Shaped, str]] = {}
    for l in topo.links:
        if l.rate_bytes_s is None and not l.delay_ms and not l.loss:
            continue
        a, b = index[l.src], index[l.dst]
        if a == b:
            continue  # one device: its loopback
        for (x, y), reverse in (((a, b), False), ((b, a), True)):
            if reverse and (l.dst, l.src) in listed:
                continue  # the reverse link is listed with its own fields
            s = Shaped(x, y, l.rate_bytes_s, l.delay_ms, l.loss)
            name = "%s->%s" % ((l.dst, l.src) if reverse else (l.src, l.dst))
            if (x, y) in pairs and pairs[(x, y)][0] != s:
                raise TopologyError("links %s and %s join the same two devices with different "
                                    "rate/delay/loss" % (pairs[(x, y)][1], name))
            pairs.setdefault((x, y), (s, name))
    return NetPlan(prefix, devices, tuple(p[0] for p in pairs.values()))


def ns_exec(ns: str) -> Cmd:
    """Prefix of a command run inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns]


def setup_commands(plan: NetPlan) -> List[Cmd]:
    """Every command that builds the plan's network, in order."""
    hub = plan.hub
    cmds: List[Cmd] = [["ip", "netns", "add", ns] for ns in plan.namespaces()]
    cmds += [["ip", "-n", hub, "link", "set", "lo", "up"],
             ns_exec(hub) + ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]]
    for d in plan.devices:
        cmds += [
            ["ip", "-n", hub, "link", "add", "name", d.hub_dev, "type", "veth", "peer", "name",
             DEV, "netns", d.ns],
            ["ip", "-n", hub, "addr", "add", d.gateway + "/24", "dev", d.hub_dev],
            ["ip", "-n", hub, "link", "set", d.hub_dev, "up"],
            ["ip", "-n", d.ns, "link", "set", "lo", "up"],
            ["ip", "-n", d.ns, "addr", "add", d.address + "/24", "dev", DEV],
            ["ip", "-n", d.ns, "link", "set", DEV, "up"],
            ["ip", "-n", d.ns, "route", "add", "default", "via", d.gateway],
        ]
        cmds += [shaping.one_packet_per_send(d.ns, DEV),
                 shaping.one_packet_per_send(hub, d.hub_dev)]
        cmds += shaping.root_commands(d.ns, DEV) + shaping.root_commands(hub, d.hub_dev)
    by_index = {d.index: d for d in plan.devices}
    for s in plan.shaped:
        src, dst = by_index[s.src], by_index[s.dst]
        netem_ms = s.delay_ms if plan.delay_line == "netem" else 0.0
        cmds += shaping.link_commands(src.ns, DEV, s.minor, dst.address, s.rate_bytes_s,
                                      netem_ms)
        if s.loss:
            cmds.append(shaping.loss_filter(src.ns, DEV, shaping.LINK_PREF - s.minor, s.loss,
                                            dst.address))
    return cmds


def shim_queues(plan: NetPlan) -> Dict[str, Dict[int, float]]:
    """With the NFQUEUE delay line: {namespace: {queue: delay ms}} of the delayed links (a
    link's queue number is its HTB minor, unique on its sender)."""
    if plan.delay_line != "nfqueue":
        return {}
    by_index = {d.index: d for d in plan.devices}
    out: Dict[str, Dict[int, float]] = {}
    for s in plan.shaped:
        if s.delay_ms:
            out.setdefault(by_index[s.src].ns, {})[s.minor] = s.delay_ms
    return out


def shim_rules(plan: NetPlan) -> List[Cmd]:
    """The iptables rules that send each delayed link's packets to its shim queue."""
    by_index = {d.index: d for d in plan.devices}
    return [delayshim.rule(by_index[s.src].ns, by_index[s.dst].address, s.minor)
            for s in plan.shaped if s.delay_ms and plan.delay_line == "nfqueue"]


def run_command(cmd: Sequence[str]) -> str:
    """Run one ip/tc command; ``NetnsError`` with its error line when it fails."""
    try:
        p = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError("%s: %s" % (" ".join(cmd), exc)) from None
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NetnsError("%s: %s" % (" ".join(cmd), err[-1] if err else "status %d"
                                     % p.returncode))
    return p.stdout.decode("utf-8", "replace")


def support_problem() -> Optional[str]:
    """Why this process cannot build a netns network (None: it can). As root it tries: a
    scratch namespace with an HTB qdisc on its loopback."""
    if not hasattr(os, "geteuid") or not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    missing = [c for c in ("ip", "tc") if shutil.which(c) is None]
    if missing:
        return "%s not found: install iproute2" % " and ".join(missing)
    if os.geteuid() != 0:
        return "not root"
    ns = "%s%d-probe" % (PREFIX, os.getpid())
    try:
        run_command(["ip", "netns", "add", ns])
        run_command(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"])
    except NetnsError as exc:
        return "cannot build a shaped namespace here (%s)" % exc
    finally:
        delete_namespace(ns)
    return None


def userns_wrapper() -> Optional[Cmd]:
    """Argv prefix that runs a command as root of a new user, network and mount namespace
    (a private /run for ``ip netns``), or None where user namespaces are not allowed."""
    if shutil.which("unshare") is None:
        return None
    wrap = ["unshare", "-Urnm", "sh", "-c",
            'mount -t tmpfs tmpfs /run && ip link set lo up && exec "$@"', "sh"]
    probe = "ip netns add p && tc -n p qdisc add dev lo root handle 1: htb"  # what a run needs
    try:
        ok = subprocess.run(wrap + ["sh", "-c", probe], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return wrap if ok else None


def kernel_has_netem() -> bool:
    """Whether ``tc`` can add a netem qdisc here (tried on a scratch namespace's loopback)."""
    ns = "%s%d-probe" % (PREFIX, os.getpid())
    try:
        run_command(["ip", "netns", "add", ns])
        run_command(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem",
                     "delay", "1ms"])
        return True
    except NetnsError:
        return False
    finally:
        delete_namespace(ns)


def namespace_pids(ns: str) -> List[int]:
    """Processes running in namespace ``ns``."""
    try:
        out = run_command(["ip", "netns", "pids", ns])
    except NetnsError:
        return []
    return [int(x) for x in out.split() if x.isdigit()]


def delete_namespace(ns: str) -> None:
    """Kill what runs in ``ns`` and delete it (its veths and qdiscs go with it)."""
    for pid in namespace_pids(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def testbed_namespaces() -> List[str]:
    """Names of every namespace a netns testbed made (``ip netns list``)."""
    try:
        out = run_command(["ip", "netns", "list"])
    except NetnsError:
        return []
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def _owner_alive(ns: str) -> bool:
    digits = ns[len(PREFIX):].split("-")[0]
    if not digits.isdigit() or int(digits) == os.getpid():
        return False
    try:
        os.kill(int(digits), 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True


def cleanup_stale(include_running: bool = False) -> Tuple[List[str], List[str]]:
    """Delete the namespaces of testbeds that no longer run; (deleted, kept in use)."""
    deleted, kept = [], []
    for ns in testbed_namespaces():
        if not include_running and _owner_alive(ns):
            kept.append(ns)
            continue
        delete_namespace(ns)
        deleted.append(ns)
    return deleted, kept


class Network:
    """A netns network built from a plan; ``close`` (or leaving the ``with``) removes it."""

    def __init__(self, plan: NetPlan):
        self.plan = plan
        self._up = False
        self._shims: List[subprocess.Popen] = []  # NFQUEUE delay lines, one per namespace

    def __enter__(self) -> "Network":
        self.setup()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def setup(self) -> None:
        """Create the namespaces, veths, routes and qdiscs (everything is removed again when a
        command fails)."""
        self._up = True
        try:
            for cmd in setup_commands(self.plan):
                run_command(cmd)
            for ns, queues in shim_queues(self.plan).items():  # bound before their rules
                self._shims.append(delayshim.start(ns, queues))
            for cmd in shim_rules(self.plan):
                run_command(cmd)
        except delayshim.ShimError as exc:
            self.close()
            raise NetnsError("delay shim: %s" % exc) from None
        except BaseException:
            self.close()
            raise

    def wrap(self, node: str) -> Cmd:
        """Argv prefix that runs a command in ``node``'s namespace."""
        return ns_exec(self.plan.device_of(node).ns)

    def run(self, cmds: Sequence[Cmd]) -> None:
        """Run commands on the live network (fault injection)."""
        for cmd in cmds:
            run_command(cmd)

    def problem(self) -> Optional[str]:
        """Why the network no longer is what the plan says (a delay shim died), or None."""
        dead = [p for p in self._shims if p.poll() is not None]
        if dead:
            return "a delay shim %s: its links drop every packet" % how_it_ended(
                dead[0].returncode)
        return None

    def close(self) -> None:
        """Delete every namespace of the plan (and the processes in them)."""
        if not self._up:
            return
        self._up = False
        for p in self._shims:
            if p.poll() is None:
                p.kill()
            p.communicate()
        self._shims = []
        for ns in reversed(self.plan.namespaces()):
            delete_namespace(ns)

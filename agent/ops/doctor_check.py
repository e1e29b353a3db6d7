"""One line of ``edge-agent doctor``'s report: ``Check`` and its statuses (OK, WARN, FAIL);
the service user's access to a file, as the fixes of the checks word it; and a node config's
addresses (``check_addresses``): the host names among its binds, its metrics_host and its
peers' addresses, resolved all at once for at most ``agent.net.addrfamily.RESOLVE_WAIT_S`` (as
the agent waits for them at start), so doctor is never held up longer by a slow DNS; and the
open-file limit an agent gets (``check_open_files``)."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str  # what was checked, e.g. "onnxruntime"
    status: str  # OK | WARN | FAIL
    detail: str  # what was seen
    fix: str = ""  # what to do about a WARN or FAIL

    def line(self) -> str:
        """``STATUS name: detail [-> fix]`` as printed."""
        text = "%-4s %s: %s" % (self.status, self.name, self.detail)
        return text + ("\n     fix: " + self.fix if self.fix else "")

    def to_json(self) -> Dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def closed_to(user: str, path: str, want: int) -> Optional[Tuple[str, str]]:
    """(the folder or file, why) where ``user`` (the service user) is stopped from ``want``
    (``os.R_OK`` to read, ``os.W_OK | os.X_OK`` to write in a folder) at ``path``, or at a
    folder above it it may not enter. Run as that user, doctor asks the system
    (``os.access``); run as root (``sudo edge-agent doctor``), which may do what the agent may
    not, it judges by owner, group and mode bits; run as anyone else its own tries tell. None
    when it may, when there is no such user or it is root, when a file cannot be looked at
    here (the caller's own check says why) or where an ACL decides (not judged)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    me = pw.pw_uid == os.geteuid()
    if pw.pw_uid == 0 or not (me or os.geteuid() == 0):
        return None
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    path = os.path.abspath(path)
    folders = []
    here = os.path.dirname(path)
    while here not in folders:
        folders.insert(0, here)
        here = os.path.dirname(here)
    for where, bits in [(f, os.X_OK) for f in folders] + [(path, want)]:
        try:
            st = os.stat(where)
        except OSError:
            return None
        if me:
            allowed = os.access(where, bits)
        elif _has_acl(where):
            return None
        else:
            shift = 6 if st.st_uid == pw.pw_uid else 3 if st.st_gid in groups else 0
            allowed = (st.st_mode >> shift) & bits == bits
        if not allowed:
            verb = ("enter" if where != path else "read" if want == os.R_OK else "write in")
            return where, "user %s may not %s %s (owner %s, mode %04o)" % (
                user, verb, where, _owner(st.st_uid), stat.S_IMODE(st.st_mode))
    return None


def access_fix(user: str, path: str, want: int = os.R_OK, more: Sequence[str] = ()) -> str:
    """The fix of ``path`` the service ``user`` may not read (``want`` as ``closed_to``'s):
    ``sudo chown USER PATH`` (``more``: other files in the same command), which keeps what the
    file holds (moving a calibration profile away would lose its measurements; ``calibrate``
    run with sudo leaves one root's, mode 0600); where a folder above it is the one closed,
    letting the user through that folder."""
    closed = closed_to(user, path, want)
    then = "then run doctor " + ("again" if runs_as(user) else "as that user")
    if closed is not None and closed[0] != os.path.abspath(path):
        return ("let %s through %s (sudo chmod o+x %s) or keep it where that user can reach "
                "it, %s" % (user, closed[0], shlex.quote(closed[0]), then))
    if closed is None and os.geteuid() != 0 and not runs_as(user):  # doctor's user refused?
        try:
            if os.stat(path).st_uid == pwd.getpwnam(user).pw_uid:
                return "it is %s's: run doctor as that user (sudo -u %s ...)" % (user, user)
        except PermissionError:  # a folder above it is closed to doctor's user
            return "run doctor as %s (sudo -u %s ...): this user may not reach it" % (user, user)
        except (OSError, KeyError):
            pass  # no such user: the chown below
    return "sudo chown %s %s, %s" % (user, " ".join(shlex.quote(p) for p in [path] + list(more)),
                                      then)


def files_closed(paths: Sequence[str], user: Optional[str] = None) -> Optional[str]:
    """``PATH is not writable by USER (owner OWNER, mode 0644); sudo chown USER PATH ...`` for
    the first of the existing files ``paths`` that ``user`` (None: this process's) may not
    write, the chown naming every such file (a ``run`` with sudo leaves them all root's while
    the folder stays the service user's); None when it may write them all (and for root, or a
    user without a name)."""
    if user is None:
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return None
    closed = [p for p in paths if os.path.lexists(p) and closed_to(user, p, os.W_OK) is not None]
    if not closed:
        return None
    try:
        st = os.stat(closed[0])
    except OSError:
        return None
    return "%s is not writable by %s (owner %s, mode %04o); %s" % (
        closed[0], user, _owner(st.st_uid), stat.S_IMODE(st.st_mode),
        access_fix(user, closed[0], os.W_OK, closed[1:]))


def state_dir_closed(user: str, path: str, why: Optional[str]) -> Optional[Check]:
    """The "state dir" FAIL where the service ``user`` may not write in the folder ``path``
    (``run`` exits 78 on it), with ``sudo chown``: by its owner and mode when doctor runs as
    another user (root), by ``why`` (what creating a file there as doctor's user gave, None
    when it worked) when it runs as that user. None otherwise, a missing folder among them."""
    mine = runs_as(user)
    if not os.path.isdir(path) or mine and why != os.strerror(errno.EACCES):
        return None  # missing (run makes it), or no refusal as that user (read-only: a WARN)
    closed = closed_to(user, path, os.W_OK | os.X_OK)
    if closed is None and not mine:
        return None
    return Check("state dir", FAIL, "%s: run exits 78 on it" % (
        closed[1] if closed else "%s: %s" % (path, why)), access_fix(user, path, os.W_OK | os.X_OK))


def runs_as(user: str) -> bool:
    """True when doctor runs as ``user``: what it may not do there, the agent may not either."""
    try:
        return pwd.getpwnam(user).pw_uid == os.geteuid()
    except KeyError:
        return False


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def _has_acl(path: str) -> bool:
    """True when an access ACL may grant more than the mode bits show."""
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except (AttributeError, OSError):  # no xattrs on this system or file system: no ACL
        return False


BIND_FIELDS = ("control_bind", "data_bind", "client_bind")
PEER_FIX = "fix the peer's address in the config, or this host's name resolution (DNS, /etc/hosts)"
BIND_FIX = "bind on an address of this machine, an interface name, or * for all"
METRICS_FIX = ("set metrics_host to an address of this machine or a name that resolves to one "
               "(0.0.0.0 or :: for all), or metrics_port = 0")


def metrics_host_of(cfg: Any) -> Optional[str]:
    """The host the metrics server of node config ``cfg`` binds, as it binds it (no brackets),
    when it names one to check: None where metrics are off (``metrics_port = 0``), for an IP
    address (nothing to resolve) and for "" (every IPv4 address)."""
    from agent.net import addrfamily as af
    from agent.ops.metrics_server import bind_host

    if not getattr(cfg, "metrics_port", 0):
        return None
    host = bind_host(getattr(cfg, "metrics_host", ""))
    return host if host and af.literal_family(host) is None else None


def _metrics_text(host: str, fams: Any, wait_s: float) -> Tuple[str, str]:
    """(status, text) of ``metrics_host`` ``host`` (a name or ``*``) that resolves to the
    families ``fams`` (None: not within ``wait_s``). The metrics server binds what the name
    resolves to: an interface name or ``*``, which ZeroMQ binds take, give it nothing."""
    from agent.net.addrfamily import IPV4, IPV6

    if host == "*":
        return FAIL, ("* is no address to the metrics server (use 0.0.0.0, or :: for IPv6 and "
                      "IPv4): run cannot serve metrics there (exits 78)")
    if fams is None:
        return WARN, "resolving host %s takes longer than %g s" % (host, wait_s)
    if not fams:
        return FAIL, ("the host %s does not resolve (the metrics server binds addresses, not "
                      "interface names): run cannot serve metrics there (exits 78)" % host)
    if IPV6 in fams and IPV4 not in fams:  # the metrics server's family rule (make_server)
        return OK, "host %s has IPv6 addresses only: serves on IPv6" % host
    return OK, "host %s: serves on its IPv4 address" % host


def check_addresses(cfg: Any, wait_s: Optional[float] = None,
                    resolve: Any = None) -> Optional[Check]:
    """The "node addresses" line of node config ``cfg`` (None when it names no host: only
    addresses and ``*``): each ``peers[i].control_address`` / ``data_address`` whose host
    does not resolve here, or takes longer than ``wait_s`` to (WARN: the agent starts but
    never reaches that peer; ``agent.net.addrfamily.resolution_problem``), and each bind on
    a host or interface name with the address family its socket takes (``wants_ipv6``): a
    name that is no interface and does not resolve is a FAIL (``run`` cannot bind it and exits
    78), a slow one a WARN. All names are resolved at once, ``wait_s`` (default
    ``RESOLVE_WAIT_S``) at most; ``resolve``: the resolver (default the system's). Where
    ``metrics_port`` > 0, a ``metrics_host`` name is checked as the metrics server binds it
    (``metrics_host_of``): one that does not resolve, and ``*``, are a FAIL naming
    metrics_host (``run`` cannot serve metrics there and exits 78), a slow one a WARN."""
    from agent.net import addrfamily as af

    wait = af.RESOLVE_WAIT_S if wait_s is None else wait_s
    binds = [(f, getattr(cfg, f)) for f in BIND_FIELDS if getattr(cfg, f, "")]
    peers = [("peers[%d].%s" % (i, f), getattr(p, f), p.id) for i, p in enumerate(cfg.peers)
             for f in ("control_address", "data_address")]
    hosts = {f: af.endpoint_host(ep) for f, ep in binds + [p[:2] for p in peers]}
    names = [h for h in hosts.values() if h and h != "*" and af.literal_family(h) is None]
    metrics = metrics_host_of(cfg)  # the metrics server binds it too (run exits 78 if not)
    if not names and metrics is None:
        return None
    names += [metrics] if metrics not in (None, "*") else []
    got = af.resolve_all(names, wait, resolve or af.getaddrinfo_families)  # all at once

    def known(host: str):  # what resolve_all found (None: not within the wait)
        return got.get(host)

    worst, said, fixes = OK, [], []  # what each name gives, the fixes of its faults
    for f, ep in binds:
        host = hosts[f]
        if host not in names:
            continue
        nic = af.interface_families(host)
        fams = nic if nic is not None else known(host)
        v6 = af.wants_ipv6(ep, bind=True, wait_s=wait, resolve=known)
        what = "interface %s" % host if nic is not None else "host %s" % host
        if fams is None:
            status, text = WARN, "resolving %s takes longer than %g s" % (what, wait)
        elif not fams:
            status, text = FAIL, ("%s: run cannot bind it (exits 78)" % (
                "interface %s has no address" % host if nic is not None else
                "the host %s does not resolve and no interface has that name" % host))
        elif v6:  # no IPv4 address to take (wants_ipv6's rule)
            status, text = OK, "%s has IPv6 addresses only: listens on IPv6" % what
        else:  # its IPv4 address, even where it has IPv6 ones too
            status, text = OK, "%s: listens on its IPv4 address" % what
        worst = _worse(worst, status)
        said.append("%s %s: %s" % (f, ep, text))
        if status != OK and BIND_FIX not in fixes:
            fixes.append(BIND_FIX)
    if metrics is not None:
        status, text = _metrics_text(metrics, known(metrics), wait)
        worst = _worse(worst, status)
        said.append("metrics_host %s: %s" % (metrics, text))
        if status != OK:
            fixes.append(METRICS_FIX)
    fine = []  # the peers' host names that resolve
    for f, ep, peer in peers:
        problem = af.resolution_problem(ep, wait, known)
        if problem:
            worst = _worse(worst, WARN)
            said.append("%s %s: %s: the agent starts, but cannot reach peer %s there"
                        % (f, ep, problem, peer))
            if PEER_FIX not in fixes:
                fixes.append(PEER_FIX)
        elif hosts[f] in names and hosts[f] not in fine:
            fine.append(hosts[f])
    if fine:
        said.append("the peers' host name%s %s resolve%s" % (
            "" if len(fine) == 1 else "s", ", ".join(fine), "s" if len(fine) == 1 else ""))
    return Check("node addresses", worst, "; ".join(said),
                 "; ".join(fixes) + (", then run doctor --config again" if fixes else ""))


def _worse(a: str, b: str) -> str:
    """The worse of two statuses."""
    order = (OK, WARN, FAIL)
    return max(a, b, key=order.index)



AGENT_UNIT = "/etc/systemd/system/edge-agent@.service"  # where install puts the agent's unit
SYSTEMCTL_WAIT_S = 5.0  # one ``systemctl show``: the manager answers at once, or is not there
UNIT_LIMIT_FIX = ("give the unit LimitNOFILE=65536 (sudo systemctl edit edge-agent@NAME: "
                  "[Service] LimitNOFILE=65536, or install the shipped unit again), then "
                  "sudo systemctl restart edge-agent@NAME")
SHELL_LIMIT_FIX = ("raise the hard open-file limit where the agent is started (ulimit -Hn "
                   "65536 as root, nofile in /etc/security/limits.conf, a container's "
                   "--ulimit nofile=65536); under edge-agent@.service, LimitNOFILE=65536")


def unit_limits(units: Sequence[str], systemctl: str) -> Dict[str, str]:
    """{unit: its ``LimitNOFILE`` as systemd shows it ("65536", "infinity")} from one
    ``systemctl show`` run with ``systemctl``; {} when that fails (no manager running)."""
    try:
        proc = subprocess.run([systemctl, "show", "-p", "LimitNOFILE"] + list(units),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=SYSTEMCTL_WAIT_S)
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [ln.split("=", 1)[1].strip() for ln in proc.stdout.splitlines()
              if ln.startswith("LimitNOFILE=")]
    return dict(zip(units, values)) if proc.returncode == 0 and len(values) == len(units) else {}


def check_open_files(ctx: Any) -> Check:
    """The "open files" line: this process's soft and hard ``RLIMIT_NOFILE`` (``run`` takes
    the hard one, at most ``OPEN_FILES_WANTED``) and, where the agent's unit is installed and
    systemctl answers, each instance's ``LimitNOFILE`` (the instances: the configs in
    /etc/edge-agent, else the node ids of ``ctx.configs``); WARN where what the agent gets
    (the units', when known, else this process's) is below ``OPEN_FILES_LOW``."""
    import resource

    from agent.ops.openfiles import OPEN_FILES_LOW, OPEN_FILES_WANTED

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    takes = OPEN_FILES_WANTED if hard == inf else min(hard, OPEN_FILES_WANTED)
    said = ["this process: soft %s, hard %s (run takes %d)" % (
        "unlimited" if soft == inf else soft, "unlimited" if hard == inf else hard, takes)]
    limits: Dict[str, str] = {}
    systemctl = shutil.which("systemctl")
    if systemctl and os.path.isfile(ctx.path(AGENT_UNIT)):
        etc = ctx.path("/etc/edge-agent")
        names = sorted(n[:-len(".toml")] for n in (os.listdir(etc) if os.path.isdir(etc)
                                                    else []) if n.endswith(".toml"))
        names = names or [c.node_id for c in getattr(ctx, "configs", [])]
        limits = unit_limits(["edge-agent@%s.service" % n for n in names[:8]], systemctl)
    said += ["%s LimitNOFILE=%s" % kv for kv in sorted(limits.items())]
    low = [u for u, v in sorted(limits.items()) if v.isdigit() and int(v) < OPEN_FILES_LOW]
    if low:
        return Check("open files", WARN, "; ".join(said) + ": below %d for %s, and every client "
                     "and peer connection takes one (an ipc:// client endpoint aborts the agent "
                     "past it)" % (OPEN_FILES_LOW, ", ".join(low)), UNIT_LIMIT_FIX)
    if not limits and takes < OPEN_FILES_LOW:
        return Check("open files", WARN, "; ".join(said) + ": an agent started here gets %d, "
                     "below %d, and every client and peer connection takes one (an ipc:// "
                     "client endpoint aborts the agent past it)" % (takes, OPEN_FILES_LOW),
                     SHELL_LIMIT_FIX)
    return Check("open files", OK, "; ".join(said))

"""One line of ``edge-agent doctor``'s report: ``Check`` and its statuses (OK, WARN, FAIL);
and the service user's access to a file, as the fixes of the checks word it."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

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


def access_fix(user: str, path: str, want: int = os.R_OK) -> str:
    """The fix of ``path`` the service ``user`` may not read (``want`` as ``closed_to``'s):
    ``sudo chown USER PATH``, which keeps what the file holds (moving a calibration profile
    away would lose its measurements; ``calibrate`` run with sudo leaves one root's, mode
    0600); where a folder above it is the one closed, letting the user through that folder."""
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
    return "sudo chown %s %s, %s" % (user, shlex.quote(path), then)


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

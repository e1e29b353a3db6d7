"""``edge-agent doctor --config NODE.toml``: the start-up checks ``run`` makes of one node.

Run as the service user (``sudo -u edge-agent ... doctor --config /etc/edge-agent/NODE.toml``),
it finds what would make that agent exit 78 before it is started: a config it cannot read or
parse, a state directory it cannot write, a bundle whose files do not match, keys it cannot
read or that are unsafe, a config that does not fit the bundle, a knob or placement its policy
refuses. Each step is the agent's own start-up code (``agent.node.build``) in the order the
agent runs it, with the line the agent would print as the detail; nothing is loaded onto an
accelerator, no socket is bound and nothing is written.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

from agent.errors import UsageError
from agent.ops.doctor import FAIL, OK, Check

CONFIG_FIX = "fix the file (docs/formats.md, 'Node config'), then run doctor --config again"
# a file the service user may not read or write: the deploy walkthrough's chown lines
ACCESS_FIX = ("give the service user access (the chown lines of docs/deployment.md, step 2), "
              "and run doctor as that user")


def check_node(path: str) -> Tuple[List[Check], Any]:
    """The checks of the node config at ``path`` (one per start-up step, up to the first that
    fails) and the parsed config (None when it does not load)."""
    from agent.config.node import load_config

    try:
        cfg = load_config(path)
    except UsageError as exc:
        return [Check("node config", FAIL, _line(exc), _fix(exc, CONFIG_FIX))], None
    out = [Check("node config", OK, "%s: %s %s, policy %s, bundle %s"
                 % (path, cfg.role, cfg.node_id, cfg.policy, cfg.bundle))]
    for name, step, fix in _steps(cfg):
        try:
            detail = step()
        except UsageError as exc:
            out.append(Check(name, FAIL, _line(exc), _fix(exc, fix)))
            break
        out.append(Check(name, OK, detail))
    return out, cfg


def _steps(cfg: Any) -> List[Tuple[str, Callable[[], str], str]]:
    """(check name, step returning what it saw, fix) in the order ``build`` runs them."""
    from agent.net.keyfiles import load_public_key
    from agent.net.security import security_from_config
    from agent.node import build
    from engines.bundle import load_bundle

    got = {}

    def files() -> str:
        build.preflight(cfg)
        return "state_dir %s writable; its files and the bundle's are regular files" % (
            cfg.state_dir)

    def bundle() -> str:
        got["bundle"] = b = load_bundle(cfg.bundle)
        build.check_config(cfg, b)
        return "%s: %d stages, files match their sha256; the config fits it" % (
            b.name, len(b.stages))

    def keys() -> str:
        security_from_config(cfg)
        if cfg.security != "curve":
            return "security = %r: no keys" % cfg.security
        for p in cfg.peers:
            load_public_key(p.public_key)
        return "CURVE: own keys and %d peer key(s) read" % len(cfg.peers)

    def policy() -> str:
        b = got["bundle"]
        build.configured_policy(cfg, b, build.build_view(cfg, b, build.open_exit_profile(b)))
        return "%s made and configured for %s" % (cfg.policy, cfg.node_id)

    return [("node files", files, "make state_dir writable by the service user"),
            ("node bundle", bundle, "copy the bundle again, or fix the config's stages"),
            ("node keys", keys, "chown the keys to the service user (docs/deployment.md)"),
            ("node policy", policy, CONFIG_FIX)]


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _fix(exc: Exception, fix: str) -> str:
    return ACCESS_FIX if "Permission denied" in str(exc) else fix

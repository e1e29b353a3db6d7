"""TOML writing of node configs, behind ``agent.config.node.dump_config``.

Only what ``NodeConfig`` holds is written: strings, numbers, booleans, lists and flat tables.
The config is read through ``dataclasses.fields`` of the instance, so this module needs no
import of the config types (``agent.config.node`` imports it, not the other way round).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, List, Mapping


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("%s: cannot write non-finite number %r" % (where, v))
        return repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        return '"%s"' % "".join(out)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join("%s = %s" % (_toml_key(k), _toml_value(x, where))
                               for k, x in v.items()) + "}"
    raise ValueError("%s: cannot write %r as TOML" % (where, v))


def _toml_key(k: Any) -> str:
    k = str(k)
    if k and all(c.isalnum() or c in "_-" for c in k) and k.isascii():
        return k
    return _toml_value(k, "key")


def to_toml(cfg: Any) -> str:
    """TOML text for a ``NodeConfig`` (see ``agent.config.node.dump_config``)."""
    lines: List[str] = ["# edge-agent node config (written by dump_config)"]
    for f in fields(cfg):
        if f.name in ("peers", "policy_knobs"):
            continue
        lines.append("%s = %s" % (f.name, _toml_value(getattr(cfg, f.name), f.name)))
    if cfg.policy_knobs:
        lines.append("")
        lines.append("[policy_knobs]")
        for k, v in cfg.policy_knobs.items():
            lines.append("%s = %s" % (_toml_key(k), _toml_value(v, "policy_knobs." + str(k))))
    for p in cfg.peers:
        lines.append("")
        lines.append("[[peers]]")
        for f in fields(p):
            lines.append("%s = %s" % (f.name, _toml_value(getattr(p, f.name), "peers." + f.name)))
    return "\n".join(lines) + "\n"

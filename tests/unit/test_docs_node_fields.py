"""docs/formats.md's "Node config" section documents every field of ``NodeConfig``.

The rule: every field of ``agent.config.node.NodeConfig`` (``dataclasses.fields``) is named,
backquoted, in a row of the section's table of fields ("Other fields and their defaults"), or
is a key of the section's TOML example (the fields every node config has: ``node_id``,
``role``, ``peers``, ...), which shows them with their meaning instead.
"""

from __future__ import annotations

import dataclasses
import os
import re

from agent.config.node import NodeConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORMATS_DOC = os.path.join(REPO, "docs", "formats.md")


def node_config_section() -> str:
    with open(FORMATS_DOC, "r", encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## Node config\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_every_node_config_field_is_in_formats_md():
    section = node_config_section()
    table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    example = section.split("```toml", 1)[1].split("```", 1)[0]
    example_keys = set(re.findall(r"^\[*\s*([a-z_]+)\s*(?:=|\]{1,2})", example, re.M))
    names = [f.name for f in dataclasses.fields(NodeConfig)]
    assert len(names) > 40 and table and example_keys
    missing = [n for n in names if "`%s`" % n not in table and n not in example_keys]
    assert not missing, "docs/formats.md's node-config table lacks: " + ", ".join(missing)

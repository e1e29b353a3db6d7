"""`fleet render` reads a topology's ``agent`` table as the testbed does: a CURVE key pasted
where a key file's path belongs is refused before any file is written, naming the field, the
key never shown (not even in part where its "/"s would fold as a path's). Real files in
tmp_path."""

from __future__ import annotations

import pytest

from agent.cli import main
from tests.unit.test_testbed_inline_keys import (FOLDING_KEYS, WORDS, assert_not_shown,
                                                 write_topology)


@pytest.mark.parametrize("field", sorted(WORDS))
@pytest.mark.parametrize("key", list(FOLDING_KEYS.values()), ids=list(FOLDING_KEYS))
def test_fleet_render_refuses_a_key_in_the_agent_table_writing_nothing(tmp_path, capsys, key,
                                                                       field):
    """Rule: `fleet render` with a 40-character z85 key in agent.secret_key_path or
    agent.public_key_path exits 2 naming the field in the node config's words, writes no
    output folder (no testbed.json holding the key) and shows no part of the key."""
    path = write_topology(tmp_path, {field: key})
    inv = tmp_path / "hosts.txt"
    inv.write_text("".join("%s 10.0.0.%d\n" % (n, 10 + i)
                        for i, n in enumerate(["cam", "w1", "w2", "w3", "w4"])),
                encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["fleet", "render", "--topology", path, "--inventory", str(inv),
               "--out", str(out), "--root", str(tmp_path / "root")])
    cap = capsys.readouterr()
    assert rc == 2, cap.err
    assert ": agent.%s: " % field in cap.err and WORDS[field] in cap.err, cap.err
    assert_not_shown(key, cap.out + cap.err)
    assert not out.exists()

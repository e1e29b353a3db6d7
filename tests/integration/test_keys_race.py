"""``edge-agent keys generate`` runs started at once into one folder, without ``--force``.

Rule: exactly one run makes the pair and exits 0; every other one exits 2 with the one line
``... already exists; pass --force to replace it`` and removes nothing it did not make. The pair
on disk is the winner's (the public key it printed is the one in NAME.key, and NAME.key_secret
holds the secret of that key), both files are there with their modes (0600 secret, 0644
public), and no temporary file is left. Before, a run checked that the files were absent and
then renamed over them: two runs could both exit 0 with different keys (one's secret lost), and
a loser removed the winner's fresh files as if they were its own.

The runs are real processes (``python -m agent keys generate``) forked from one interpreter that
has done the imports (``forked_agent``), so that they reach the write together, not one
interpreter start apart; the rule holds whatever their order, so no timing is asserted.
"""

from __future__ import annotations

import os
import re
import stat

import pytest

from agent.net.keyfiles import load_public_key, load_secret_key_file

from .forked_agent import ForkedAgent

pytest.importorskip("zmq")

RUNS = 8  # processes started together in each round
ROUNDS = 4  # fresh folders, each raced for by RUNS processes
REFUSED = re.compile(r"^edge-agent keys generate: error: (.*/)?n1\.key(_secret)? already exists; pass "
                     r"--force to replace it$")


def test_concurrent_keys_generate_without_force_makes_one_pair_and_one_winner(tmp_path):
    """Of RUNS concurrent runs into one folder, one exits 0 and its printed public key is the
    pair on disk (secret and public belonging together); the others exit 2 with the "already
    exists" line; both files are there, and nothing else is."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with ForkedAgent(str(tmp_path), env, str(tmp_path / "server.log")) as server:
        for r in range(ROUNDS):
            folder = tmp_path / ("round%d" % r) / "keys"  # made by the runs themselves
            runs = [(["keys", "generate", "--dir", str(folder), "--name", "n1"], str(tmp_path),
                     str(tmp_path / ("r%d-%d" % (r, i)))) for i in range(RUNS)]
            results = server.run_many(runs, timeout_s=120.0, at_once=RUNS)
            codes = [rc for rc, _, _ in results]
            assert codes.count(0) == 1, "round %d: exit statuses %s; stderr: %s" % (
                r, codes, [err for _, err, _ in results])
            winner = codes.index(0)
            for i, (rc, err, _) in enumerate(results):
                if i == winner:
                    assert err == "", err
                    continue
                assert rc == 2, (r, i, rc, err)
                lines = err.splitlines()
                assert len(lines) == 1 and REFUSED.match(lines[0]), err
            assert sorted(os.listdir(str(folder))) == ["n1.key", "n1.key_secret"]
            with open(runs[winner][2] + ".out") as f:
                printed = f.read().splitlines()[-1].encode("ascii")
            public = load_public_key(str(folder / "n1.key"))
            assert printed == public, "round %d: the winner printed another key" % r
            # load_secret_key_file checks that its secret-key line belongs to its public one
            assert load_secret_key_file(str(folder / "n1.key_secret"))[0] == public
            assert stat.S_IMODE(os.stat(str(folder / "n1.key_secret")).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(str(folder / "n1.key")).st_mode) == 0o644

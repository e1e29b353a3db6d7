"""``submit`` stops at the first answer saying the source refuses its key: every later input
would be refused alike (a revoked client sent 46 more inputs, each answered the same)."""

from __future__ import annotations

import numpy as np

from agent.commands.submit_checks import file_refusal
from agent.fleet.client_wire import Answer

X = np.zeros((3, 1, 28, 28), np.float32)


def test_a_revoked_client_answer_stops_the_run_naming_the_key_and_the_inputs_not_sent():
    """Rule: an `error` / `revoked_client` answer is a line that stops the run (the key, the
    operator's fix, how many inputs were not sent); other answers that concern one input only
    (completed, rejected for overload) stop nothing."""
    revoked = Answer("submit-1-1", "error", "revoked_client", -1, 0.0, 0, 0.01,
                     "this client's key is no longer allowed by the source")
    line = file_refusal("images.npz", X, revoked, 2)
    assert line.startswith("the source refuses this client's key (revoked_client")
    assert "ask its operator to allow the key again; 2 input(s) not sent" in line
    assert file_refusal("images.npz", X, revoked, 0).endswith("allow the key again")
    done = Answer("submit-1-2", "completed", "", 3, 0.9, 1, 0.01)
    busy = Answer("submit-1-3", "rejected", "overload", -1, 0.0, 0, 0.0, retry_s=0.2)
    assert file_refusal("images.npz", X, done, 1) == ""
    assert file_refusal("images.npz", X, busy, 1) == ""

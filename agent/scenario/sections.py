"""Errors about a scenario's policy sections (``knobs.mdi-exit``, ``knobs.dimee``,
``knobs.mlci``), raised while a policy plans or simulates, named after the scenario file.

Each section's knobs are read by its policy's parser when the file is read (the registry's
``section`` readers, called by ``check_scenario_knobs``), so ``load_scenario``'s errors name the
file. What a section says about the rest of the scenario (a level's devices, a tier's stages,
the exit profile) is checked by the policy when it plans or simulates; ``naming_the_file`` puts
the path before those errors in turn. Pure: no I/O.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from agent.errors import UsageError
from agent.policies.setting import ScenarioError


@contextmanager
def naming_the_file(path: str) -> Iterator[None]:
    """Within: an error about a policy section's knob, raised while a policy plans or
    simulates a scenario read from ``path`` (``knobs.mlci.levels[1]: no worker on ...``, or
    ``mlci.prefixes[2]: ...`` as the policy names it on a node), becomes a ``ScenarioError``
    ``path: knobs.<section>.<key>: ...``, as the errors found when the file is read."""
    from agent.policies.registry import section_names

    try:
        yield
    except UsageError as exc:
        msg = str(exc)
        if msg.startswith("knobs."):
            raise ScenarioError("%s: %s" % (path, msg)) from None
        if any(msg.startswith(name + ".") for name in section_names()):
            raise ScenarioError("%s: knobs.%s" % (path, msg)) from None
        raise

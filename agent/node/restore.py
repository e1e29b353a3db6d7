"""The policy's saved state and the measured link rates taken back at start-up, from
``<state_dir>/state.json`` (``agent.ops.state``: checked like input before any policy sees it).

A state of this policy is restored; another policy's is ignored (its routing would be wrong
here); one the policy's ``restore`` fails on is a WARNING naming the policy and the error, and
the node starts without it, from a policy made afresh. Link rates measured before a restart
seed the links' estimates.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Optional, Tuple

from agent.node.hooks import NodeHooks
from agent.node.outbox import Outbox
from agent.ops.state import LINK_RATES_KEY, StateStore
from agent.policies.api import AgentPolicy
from agent.policies.thresholds import thresholds_to_wire

log = logging.getLogger("agent.run")  # start-up lines keep the command's name


def restore_policy(policy: AgentPolicy, hooks: NodeHooks, store: StateStore,
                   remake: Callable[[], AgentPolicy]) -> Tuple[AgentPolicy, Optional[dict]]:
    """Restore the policy's saved routing and thresholds when they are this policy's; the
    policy and the saved state (None: none usable). A state the policy's ``restore`` fails on
    (DIMEE: a count above 2**63) is a WARNING, and the node starts from ``remake()``, a policy
    made afresh (what the failed restore took in part is not kept), without the saved state."""
    saved = hooks.load_state()
    if saved and saved.get("policy") == policy.name:
        try:
            policy.restore(saved)
            log.info("restored policy state from %s: routing %s thresholds %s", store.path,
                     json.dumps(policy.routing(), sort_keys=True),
                     json.dumps(thresholds_to_wire(policy.thresholds()), sort_keys=True))
        except Exception as exc:  # any policy's: a saved state must never stop the start
            log.warning("saved state %s not restored: policy %s cannot take it (%s: %.200s); "
                        "starting without it", store.path, policy.name, type(exc).__name__, exc)
            return remake(), None
    elif saved:  # another policy's routing or thresholds would be wrong for this one
        log.info("ignoring saved state of policy %r (now %r)", saved.get("policy"), policy.name)
    return policy, saved


def restore_link_rates(outbox: Outbox, saved: Optional[dict]) -> None:
    """Rates measured before a restart as the links' priors (``LinkRates.seed``), so a
    restarted sender does not plan with a configured rate it had found wrong."""
    rates = (saved or {}).get(LINK_RATES_KEY)
    seeded = outbox.link_rates.seed(rates) if isinstance(rates, dict) else {}
    outbox.view.link_rate_bytes_s.update(seeded)
    if seeded:
        log.info("link rates measured before the restart: %s",
                 json.dumps({p: round(r) for p, r in sorted(seeded.items())}))

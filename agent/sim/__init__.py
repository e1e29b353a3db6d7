"""Discrete-event simulator of a fleet serving one multi-exit DNN.

Model (DTO-EE paper, Section 2): sources produce Poisson tasks; a worker of stage h is a
processor-sharing server of capacity mu (FLOP/s) that needs alpha_h FLOP per task (M/D/1-PS;
FIFO and exponential work are options); a hop to stage h costs beta_h / r (or, with
``link_model="shared"``, passes through the link as a server of r bytes/s). Every task carries
a sample index into the scenario's exit profile and, at a stage with an exit head, leaves when
``engines.exit_profile.should_exit(confidence, threshold)``; without a profile it leaves with
probability 1 - I_h. Time runs in slots: at each boundary the policy is asked for a decision,
which takes effect after its configuration rounds (``rounds * round_delay_s``, 2 ms each by
default) while the old strategy keeps serving. The dynamic mode redraws source rates and
worker power modes at every boundary. Results are per-task records (``SimResult``) with
summaries: mean/p50/p95 delay, accuracy, completed, rejected, unfinished.

Policy hook contract (``agent.policies.sim_api.SimPolicy``); the event loop never changes for a new
policy:

- ``start_slot(view: SlotView) -> Decision``: called at time 0 and every slot boundary with the
  slot's scenario and the decision in force. ``Decision.routing`` ``{node: {successor: p}}``
  and ``Decision.thresholds`` ``{stage: c}`` (either None to keep the current one) apply after
  ``Decision.rounds`` configuration rounds. Table-driven policies (DTO-EE, CF, BF, NGTO, GA)
  need nothing else: the engine samples the table per task. Before the first decision applies,
  routing is uniform and thresholds are 1.0.
- ``per_task = True`` and ``route(node, task, view) -> successor id or None``: a per-task
  decision each time ``task`` leaves ``node`` (source or worker). None holds the task in the
  node's output queue; held tasks are re-offered oldest first after every tick.
- ``per_node_thresholds = True`` and ``threshold(node, stage, view) -> c``: the threshold a
  node applies at its exit check, for policies whose nodes adapt thresholds on their own.
- ``admission = True`` and ``admit(source, task, view) -> bool``: admission control at sources;
  refused tasks are recorded as rejected.
- ``tick_s`` and ``on_tick(view)``: a periodic hook, e.g. to publish queue state to neighbours
  (a policy keeps its own snapshot to model staleness) or to adapt rates and thresholds.
- ``per_task_exit = True`` and ``on_head(node, task, stage, view) -> bool``: the exit decision
  at every head (True answers now, False forwards through ``route``); also called at the last
  stage and at a terminal worker, where the task is answered whatever it returns.
- ``per_task_answer = True`` and ``answer_correct(node, task, stage, view) -> bool or None``:
  the correctness of a task's answer when it is not the exit head's (an ensemble).
- ``tiered = True``: the policy runs on scenarios with terminal workers (``workers[i].terminal``:
  answer every task at their stage) and restart links (``links[i].restart``: to a stage-1
  worker, carrying the raw input); every other policy refuses them in one line.
- ``sample_rows``: the exit-profile rows tasks carry unless ``SimConfig.sample_rows`` says
  ("test" for a policy that learns on the validation rows).
- ``extra_summary(result, scenario)``: the policy's own numbers in the report.

``view`` is the running ``Simulator``: ``now_s``, ``scenario`` (this slot's setting),
``input_queue(node)`` (tasks at the node's server), ``output_queue(node)`` (tasks held there),
``compute_delay_s(node)`` (alpha/mu now), ``link_delay_s(src, dst)`` (beta/r),
``sample_of(task)`` (its profile row), ``successors(node)``, ``names``/``index``/``succ`` for
the topology. ``SimResult.answered_by`` names the worker that answered each task. A queue-based policy such as
MDI-Exit reads its own input/output queue and its neighbours' published state there and
decides per task; it must not change the view's state.
"""

from __future__ import annotations

from agent.sim.config import SimConfig
from agent.sim.engine import Simulator, simulate
from agent.sim.environment import DynamicConfig, scale_capacities, with_source_rate
from agent.policies.sim_api import Decision, FixedPolicy, PlannerPolicy, SimPolicy, SlotView
from agent.sim.results import COMPLETED, REJECTED, UNFINISHED, SimResult

__all__ = [
    "SimConfig", "Simulator", "simulate", "DynamicConfig", "scale_capacities",
    "with_source_rate", "Decision", "FixedPolicy", "PlannerPolicy", "SimPolicy", "SlotView",
    "SimResult", "COMPLETED", "REJECTED", "UNFINISHED",
]

"""``edge-agent testbed``: run policies on a multi-process topology and compare them."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List

from agent.config.checks import MAX_INTERVAL_S
from agent.errors import UsageError
from agent.commands import seed_arg
from agent.testbed.mdimode import MDI_MODES, with_mdi_mode  # noqa: F401 - report's, tests' import

HELP = ("start agents as local processes (or drive a running fleet), push load at several rates, "
        "collect per-task records and compare policies")

DEFAULT_POLICIES = "dtoee,cf,bf"
DEFAULT_RATES = "35%,60%,80%"
MAX_DURATION_S = int(MAX_INTERVAL_S)  # --duration at most a day per (policy, rate)
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topology", metavar="FILE", default=None,
                        help="topology JSON or the name of a shipped one (default, slow-link, "
                             "slow-link-unconfigured, mdi-local, "
                             "mdi-2-node, mdi-3-node-mesh, mdi-3-node-circular, mdi-5-node-mesh; "
                             "dimee, mlci; an mdi-* name + \"-noee\" turns early exit off); "
                             "default: the shipped heterogeneous topology on the demo bundle; "
                             "with a \"fleet\" object it drives agents already running elsewhere")
    parser.add_argument("--mdi-mode", choices=sorted(MDI_MODES), default=None,
                        help="mdi-exit scenario: admission (Alg. 3 at the sources: the camera "
                             "produces at --rates, one arrival per mu is admitted and the rest "
                             "rejected; fixed thresholds), adapt (Alg. 4 threshold adaptation, Poisson arrivals) "
                             "or fixed (neither); default: the topology's knobs")
    parser.add_argument("--policies", default=None,
                        help="comma-separated policies to compare (default %s; on a fleet: the "
                             "policy it runs, the only one it may name)" % DEFAULT_POLICIES)
    parser.add_argument("--rates", default=None,
                        # argparse %-expands help texts: every literal % is written %%
                        help="comma-separated total arrival rates over all sources: tasks/s, or "
                             "N%% of the topology's capacity (default: the topology's \"rates\", "
                             "else " + DEFAULT_RATES.replace("%", "%%") + ")")
    parser.add_argument("--duration", type=float, default=6.0, metavar="S",
                        help="measured seconds of load per run, after the topology's warm-up "
                             "(default 6)")
    parser.add_argument("--out", metavar="DIR", default="testbed-out",
                        help="each run gets its own folder DIR/YYYYmmdd-HHMMSS (DIR/latest "
                             "points to it) holding configs, agent logs, records, results.json "
                             "and plots (default ./testbed-out)")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write the results object {\"runs\": [...]} to FILE")
    parser.add_argument("--no-plots", action="store_true",
                        help="skip the delay/accuracy-vs-rate plots")
    parser.add_argument("--seed", type=seed_arg, default=1, help="seed of the sources' arrivals")
    parser.add_argument("--network", choices=("loopback", "netns"), default="loopback",
                        help="loopback (default): every agent on 127.0.0.1, senders pace their "
                             "messages to the link rates they are told; netns: one network "
                             "namespace per device (agents with the same topology host share "
                             "one), links shaped in the kernel (HTB); needs root or user "
                             "namespaces, and iproute2")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove the network namespaces (and the processes in them) that "
                             "netns testbeds no longer running left behind, then exit")
    # set by the command on itself when it re-runs inside a user namespace (never again)
    parser.add_argument("--in-userns", action="store_true", help=argparse.SUPPRESS)


def parse_list(text: str, what: str) -> List[str]:
    """Split a comma-separated option (``what``: its name in errors, e.g. ``--policies``);
    empty items are a usage error."""
    items = [t.strip() for t in text.split(",")]
    if not items or any(not t for t in items):
        raise UsageError("%s: expected a comma-separated list, got %r" % (what, text))
    return items


def parse_rates(text: str, capacity_tasks_s: float, what: str = "--rates") -> List[float]:
    """Rates in tasks/s; ``N%`` means N percent of ``capacity_tasks_s``. Each must be above 0
    and at most MAX_RATE tasks/s; errors name ``what`` and quote the item as written."""
    from agent.testbed.bounds import MAX_RATE

    out = []
    for item in parse_list(text, what):
        pct = item.endswith("%")
        try:
            v = float(item[:-1] if pct else item)
        except ValueError:
            raise UsageError("%s: %r is not a number or a percentage" % (what, item))
        if not v > 0:  # also NaN
            raise UsageError("%s: %r must be > 0" % (what, item))
        if pct and capacity_tasks_s == float("inf"):
            raise UsageError("%s: %r needs the topology's capacity, but its workers have no "
                             "emulate_capacity_flops; give rates in tasks/s" % (what, item))
        rate = v / 100.0 * capacity_tasks_s if pct else v
        if not rate <= MAX_RATE:  # also infinite
            raise UsageError("%s: %r must be in (0, %g] tasks/s%s" % (what, item, MAX_RATE, (
                " (up to %.4g%% of the capacity, %.4g tasks/s)" % (
                    MAX_RATE / capacity_tasks_s * 100.0, capacity_tasks_s)) if pct else ""))
        v = round(rate, 2)
        if not v > 0:  # the runs and their folders name rates to 0.01 tasks/s
            raise UsageError("%s: %r is %.3g tasks/s, below 0.01" % (what, item, rate))
        if v in out:
            raise UsageError("%s: %r gives %g tasks/s twice" % (what, text, v))
        out.append(v)
    return out


def cleanup() -> int:
    """``--cleanup``: delete what stopped netns testbeds left."""
    from agent.testbed.netns import cleanup_stale

    deleted, kept = cleanup_stale()
    for ns in deleted:
        print("deleted namespace %s" % ns)
    for ns in kept:
        print("kept namespace %s: its testbed still runs" % ns)
    if not deleted and not kept:
        print("no testbed namespaces")
    return 0


def _reexec_in_userns(problem: str) -> int:
    """Namespaces cannot be built here (not root): run this very command again as root of a
    new user namespace."""
    import subprocess

    from agent.testbed.netns import userns_wrapper

    wrap = userns_wrapper()
    if wrap is None:
        raise UsageError("--network netns: %s, and user namespaces are not allowed here "
                         "either" % problem)
    child = subprocess.Popen(wrap + [sys.executable, "-m", "agent"] + sys.argv[1:]
                             + ["--in-userns"])
    while True:  # Ctrl-C reaches the child too: wait for it to clean up and exit
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def network_plan(topo):
    """The netns plan of a topology, checked against this kernel (a ``UsageError`` naming
    what is missing)."""
    import dataclasses

    from agent.testbed import delayshim
    from agent.testbed.inject import fault_commands
    from agent.testbed.netns import kernel_has_netem, plan_network

    plan = plan_network(topo)
    for i, f in enumerate(topo.faults):  # one it cannot inject: refused before anything starts
        if f.kind not in ("kill", "stop", "restart"):
            fault_commands(f, i, plan)
    if any(s.delay_ms for s in plan.shaped) and not kernel_has_netem():
        problem = delayshim.support_problem()
        if problem:
            raise UsageError("links: delay_ms needs sch_netem, which this kernel lacks, or the "
                             "NFQUEUE delay shim: %s" % problem)
        plan = dataclasses.replace(plan, delay_line="nfqueue")
    return plan


def _partial(result) -> bool:
    """A rate's result summarised from what it wrote before it was cut short."""
    return result.note.startswith("partial")


def run(args: argparse.Namespace) -> int:
    if args.cleanup:
        return cleanup()
    if args.in_userns:  # the re-run's agents stop with the command the user started, SIGKILLed too
        from agent.ops.parent import stop_with_parent
        stop_with_parent(os.getppid())
    if args.network == "netns":
        from agent.testbed.netns import support_problem

        problem = support_problem()
        if problem is not None and not args.in_userns \
                and "not found" not in problem and "Linux" not in problem:
            return _reexec_in_userns(problem)
        if problem is not None:
            raise UsageError("--network netns: %s" % problem)
    from agent.commands.interrupts import as_interrupts

    with as_interrupts():  # cleaned up as for Ctrl-C: a hang-up left namespaces, no results
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from agent.policies.registry import lookup
    from agent.testbed.local import TestbedSettings, bundle_stages, default_remaining
    from agent.testbed.driver import load_bundle_for
    from agent.testbed.rundir import RunLock, check_outputs, new_run_dir
    from agent.testbed.faults import check_faults
    from agent.testbed.prerun import check_node_configs, check_tiers
    from agent.testbed.topology import load_topology
    from agent.testbed.topology_bundle import capacity_tasks_s, check_against_bundle
    from agent.testbed.bounds import check_load

    if not 0 < args.duration <= MAX_DURATION_S:
        raise UsageError("--duration: must be > 0 seconds and at most %d, got %r"
                         % (MAX_DURATION_S, args.duration))
    check_outputs(args.out, args.json)  # checked now, not after the whole run
    given = parse_list(args.policies, "--policies") if args.policies is not None else None
    for i, p in enumerate(given or ()):
        lookup(p, "--policies", "agent")
        if p in given[:i]:  # one folder per policy: its second run would overwrite the first
            raise UsageError("--policies: %r gives %s twice" % (args.policies, p))
    if args.topology is not None and not args.topology.strip():  # "$TOPO" unset: no default
        from agent.testbed.presets import preset_problem

        raise UsageError(preset_problem(args.topology))
    topo = load_topology(args.topology)
    policies = _policies(topo, given)
    if args.mdi_mode and "mdi-exit" not in policies:
        raise UsageError("--mdi-mode sets the mdi-exit policy's knobs, and --policies has no "
                         "mdi-exit")
    topo = with_mdi_mode(topo, args.mdi_mode)
    check_tiers(topo, policies)
    bundle = load_bundle_for(topo)
    stages = bundle_stages(bundle)
    check_against_bundle(topo, stages)
    cap = capacity_tasks_s(topo, stages, default_remaining(topo, bundle))
    what = ("--rates" if args.rates is not None or not topo.rates
            else "%s: rates" % (topo.path or "topology"))
    rates = parse_rates(args.rates if args.rates is not None else topo.rates or DEFAULT_RATES,
                        cap, what)  # --rates "" is a mistake, not the defaults
    check_load(rates, topo.warmup_s + float(args.duration), what)
    check_faults(topo.faults, args.network, topo.warmup_s, float(args.duration))
    if topo.fleet is not None and (topo.faults or args.network != "loopback"):
        raise UsageError("--network netns and faults are for local agents, not a fleet")
    plan = network_plan(topo) if args.network == "netns" else None
    check_node_configs(topo, bundle, policies, rates, float(args.duration), args.seed)
    if topo.fleet is not None:  # a source it cannot reach, or a replay input it would refuse:
        from agent.testbed.fleet import fleet_inputs  # refused before a run folder is made

        fleet_inputs(topo, bundle, check=True)
    out_dir = new_run_dir(os.path.abspath(args.out))
    lock = RunLock(out_dir)
    net = None
    try:
        if plan is not None:
            from agent.testbed.netns import Network, cleanup_stale

            cleanup_stale()  # what a killed netns testbed left
            net = Network(plan)
            net.setup()
        # a fleet's sources were checked above: the run does not connect to check them again
        settings = TestbedSettings(duration_s=float(args.duration), out_dir=out_dir,
                                   network=net, sources_checked=topo.fleet is not None)
        return _run_in(args, topo, bundle, policies, rates, cap, out_dir, lock, settings)
    finally:
        from agent.testbed.sigdefer import DeferredSignals

        with DeferredSignals():  # Ctrl-C again must not leave namespaces behind
            if net is not None:
                net.close()
            lock.close()


def _policies(topo, given):
    """The policies to run: ``given`` (--policies), else the default; on a fleet only the
    policy it runs, found before anything is made (``fleet_policies``)."""
    from agent.policies.registry import lookup

    if topo.fleet is None:
        return given if given is not None else parse_list(DEFAULT_POLICIES, "--policies")
    from agent.testbed.fleet import fleet_policies

    policies = fleet_policies(topo, given)
    for p in policies:
        lookup(p, "fleet.policy", "agent")
    return policies


def _run_in(args, topo, bundle, policies, rates, cap, out_dir, lock, settings) -> int:
    """Run every (policy, rate) in the run folder; print and write the results."""
    from agent.testbed.deaths import RunSpoiled, cut_short_lines
    from agent.testbed.driver import run_all
    from agent.testbed.phasecheck import lines_under_table
    from agent.testbed.report import (PLOT_NAMES, admitted_lines, error_lines, format_table,
                                      write_json, write_plots)
    from agent.testbed.exits import initial_thresholds
    from agent.testbed.fleet import capacity_origin, lost_hint
    from agent.testbed.runtopo import link_lines, write_run_info

    # testbed.json and the topology the run uses: `report` reads both from this folder alone
    write_run_info(out_dir, {
        "topology": args.topology or "default", "mdi_mode": args.mdi_mode,
        "policies": policies, "rates": rates, "duration_s": settings.duration_s,
        "seed": args.seed, "network": args.network,
        "faults": [f.label() for f in topo.faults]}, topo)
    print("run folder: %s" % out_dir)
    # the links as the run applies them (loopback: the senders' pacing; netns: the kernel's)
    emulated, net_lines = link_lines(topo, settings.network.plan if settings.network else None)
    print("topology: %s (%d sources, %d workers, %d stages; bundle %s)"
          % (topo.path, len(topo.sources), len(topo.workers), topo.num_stages, bundle.path))
    print("emulated: %s" % emulated)
    for line in net_lines:
        print(line)
    for f in topo.faults:
        print("fault: %s" % f.label())
    if cap != float("inf"):
        tiers = topo.multi_stage and len({w.stages for w in topo.workers}) > 1  # DIMEE, MLCI
        print("capacity: %.1f tasks/s %s%s%s; rates %s tasks/s"
              % (cap, "without early exits" if initial_thresholds(topo, ()) is None
                 else "at the initial thresholds",
                 capacity_origin(topo), " (tiers: the devices' sum, as if each served "
                 "whole tasks; a rate in % of it is no load level)" if tiers else "",
                 ", ".join("%g" % r for r in rates)))
    sys.stdout.flush()
    extra = {"topology": topo.path, "mdi_mode": args.mdi_mode, "emulated": emulated,
             "network": args.network,
             "capacity_tasks_s": None if cap == float("inf") else cap,
             "duration_s": settings.duration_s, "warmup_s": topo.warmup_s}
    total = len(policies) * len(rates)

    def save(runs, complete: bool) -> None:
        # after every (policy, rate): an interrupted or failed testbed keeps what finished;
        # results.json last, so a reader that sees a run in it finds its plots too. A rate cut
        # short (Ctrl-C, an agent's death) goes under "partial", apart from the finished runs;
        # --json gets the same, so an interrupted run leaves it too (complete: false)
        cut = [r.to_json() for r in runs if _partial(r)]
        runs = [r for r in runs if not _partial(r)]
        if not args.no_plots and runs:
            write_plots(out_dir, runs)
        for path in [os.path.join(out_dir, "results.json")] + ([args.json] if args.json else []):
            write_json(path, runs, dict(extra, complete=complete, runs_planned=total, partial=cut))

    finished: list = []

    def on_result(runs) -> None:
        finished[:] = runs
        save(runs, False)

    try:
        runs = run_all(topo, bundle, policies, rates, settings, seed=args.seed,
                       on_result=on_result)
        save(runs, True)  # in here: Ctrl-C while it writes is said as every interrupt is
    except KeyboardInterrupt as exc:
        cut = [r for r in finished if _partial(r)]
        if finished:  # Ctrl-C may have cut the last save short: write what finished again
            save(finished, len(finished) - len(cut) == total)
        try:
            print("\ninterrupted: %d of %d runs finished, %s%s"
                  % (len(finished) - len(cut), total, "kept in %s" % os.path.join(
                      out_dir, "results.json") if finished else "nothing to keep (the agents' "
                      "logs are under %s)" % out_dir,
                     " (the run cut short: under \"partial\")" if cut else ""), file=sys.stderr)
        except OSError:  # a hung-up terminal (EIO): the namespaces and lock are still released
            pass
        return getattr(exc, "exit_status", 130)
    except RunSpoiled as exc:  # an agent or the network died: what finished is kept, status 1
        print("\n".join(["edge-agent testbed: error: %s" % exc.line()] + exc.tail_lines() + (
            cut_short_lines([r for r in finished if _partial(r)], os.path.join(
                out_dir, "results.json"), sum(1 for r in finished if not _partial(r)), total))),
            file=sys.stderr)
        return 1
    except UsageError as exc:
        if not finished:
            raise
        raise UsageError("%s (%d of %d runs finished, kept in %s)"
                         % (exc, sum(1 for r in finished if not _partial(r)), total,
                            out_dir)) from None
    print()
    print(format_table(runs))
    print()
    phases = lines_under_table(out_dir, runs)  # as report prints them again
    if phases:
        print("\n".join(phases))
        print()
    print("delay and accuracy over tasks created after a %.1f s warm-up; created/completed/lost "
          "over the whole run.\nmodel = eq. 8 (processor sharing; each link a shared server of "
          "its rate, wire overhead counted)\nfor the routing (after the warm-up) and exit "
          "ratios each run used; fifo sim = the simulator on the same routing\nwith FIFO "
          "workers and serialised links, as the agents run." % topo.warmup_s)
    if any(r.link_utilisation for r in runs):
        print("link util = the busiest shaped link: wire bytes its sender sent over the time "
              "from the rate's first task\nto its last record, and the link's real rate (every "
              "link's in results.json: link_utilisation,\nwith the senders' estimates)")
    print("emulated: %s" % emulated)
    for line in admitted_lines(runs):  # the admission-control runs (mdi-exit)
        print(line)
    if not args.no_plots:
        for name in PLOT_NAMES:
            print("plot: %s" % os.path.join(out_dir, name))
    print("results: %s" % os.path.join(out_dir, "results.json"))
    lost = sum(r.lost for r in runs)
    ends = ["LOST %d task(s): %s" % (lost, lost_hint(topo, out_dir))] if lost else []
    for line in error_lines(runs) + ends:  # errors: inputs a source refused, in its own words
        print(line, file=sys.stderr)
    return 1 if lost or any(r.error for r in runs) else 0

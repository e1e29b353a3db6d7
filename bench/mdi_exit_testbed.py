"""MDI-Exit on the paper's topologies in the testbed (real agent processes, demo bundle).

Two scenarios, as in the MDI-Exit paper's Section V:

- admission: fixed thresholds (0.8), a camera offering ``CAMERA_RATE`` frames/s at the source
  (above what any topology can serve); Alg. 3 admits one arrival per mu and records the rest as
  rejected; the admitted rate per topology (Fig. 3-4 style).
- adapt: a fixed Poisson rate, Alg. 4 moves the thresholds; accuracy per topology (Fig. 5-6
  style), and the arrivals the source rejected because its node was full (``overload``: the
  presets give every node room for 80 tasks, above T_Q2 and T_O, so this stays 0 unless the
  fleet falls far behind).

Each run is ``edge-agent testbed --topology mdi-<name> --mdi-mode <mode> --policies mdi-exit``;
this script runs them one after the other, prints Markdown tables and writes two PNG plots.

    python3 bench/mdi_exit_testbed.py --out bench-out/mdi [--figures bench/figures]

``--compare`` instead simulates MDI-Exit, DTO-EE and CF on the scenario equivalent to the
default testbed topology (same stages, capacities, links, source shares and the demo bundle's
exit profile) at the testbed's default rates (35/60/80% of capacity), with FIFO workers and
serialised links as the agents run, to set beside
``edge-agent testbed --policies mdi-exit,dtoee,cf`` on that topology. (The MDI-Exit presets
cannot be used for this: DTO-EE in the agent needs one stage per worker.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the camera of the admission scenario: frames/s offered, above every topology's capacity
# (7.4 tasks/s per node at thresholds 0.8), so Alg. 3 alone decides what is served
CAMERA_RATE = 60.0
ADMISSION = [(p, CAMERA_RATE) for p in ("local", "local-noee", "2-node", "3-node-mesh",
                                        "3-node-circular", "5-node-mesh")]
ADAPT = ["local", "2-node", "3-node-mesh", "5-node-mesh"]


def run_one(preset: str, mode: str, rate: float, duration: float, out: str,
            reuse: bool = False) -> dict:
    """One testbed run (or, with ``reuse``, the one already in ``out``) with its served rate."""
    path = os.path.join(out, "%s-%s.json" % (mode, preset))
    cmd = [sys.executable, "-m", "agent", "testbed", "--topology", "mdi-" + preset,
           "--mdi-mode", mode, "--policies", "mdi-exit", "--rates", "%g" % rate,
           "--duration", "%g" % duration, "--out", os.path.join(out, mode, preset),
           "--json", path, "--no-plots"]
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not (reuse and os.path.exists(path)):
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, universal_newlines=True)
        if not os.path.exists(path):  # say which run failed and why, not a missing file later
            raise SystemExit("%s: exit %d, no %s; its last lines:\n%s" % (
                " ".join(cmd[2:]), done.returncode, path, "\n".join(done.stderr.splitlines()[-5:])))
    with open(path, "r", encoding="utf-8") as f:
        run = json.load(f)["runs"][0]
    from agent.testbed.local import served_rate
    from agent.testbed.report import read_records

    rec = os.path.join(out, mode, preset, "latest", "mdi-exit", "rate-%g" % rate, "cam",
                       "records.jsonl")
    run["admitted_rate_tasks_s"] = served_rate(read_records(rec), 5.0)
    run["wall_s"] = time.monotonic() - t0
    run["preset"] = preset
    return run


def early(run: dict, num_stages: int = 4) -> float:
    """Fraction of completed tasks that left at an early exit (the demo bundle has 4 stages)."""
    counts = {int(k): v for k, v in run.get("exit_counts", {}).items()}
    total = sum(counts.values())
    return sum(v for k, v in counts.items() if k < num_stages) / total if total else 0.0


def compare_default(out: str, duration: float = 120.0) -> int:
    """Simulator: mdi-exit, dtoee, cf on the default testbed topology at 35/60/80% load."""
    from agent.testbed.local import bundle_stages, default_remaining
    from agent.testbed.driver import load_bundle_for
    from agent.testbed.topology import capacity_tasks_s, load_topology, scenario_object

    topo = load_topology(None)
    bundle = load_bundle_for(topo)
    stages = bundle_stages(bundle)
    rem = default_remaining(topo, bundle)
    cap = capacity_tasks_s(topo, stages, rem)
    print("| total rate | policy | tasks | unfinished | mean ms | p95 ms | accuracy |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    bad = 0
    for pct in (35, 60, 80):
        rate = round(pct / 100.0 * cap, 2)
        obj = scenario_object(topo, stages, rate, rem)
        obj.pop("remaining")  # thresholds tuned from the bundle's exit profile instead
        obj["exit_profile"] = bundle.exit_profile_path
        obj["knobs"] = dict(topo.knobs.get("dtoee", {}))
        path = os.path.join(out, "default-%g.json" % rate)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f)
        res_dir = os.path.join(out, "sim-%g" % rate)
        subprocess.run([sys.executable, "-m", "agent", "simulate", "--scenario", path,
                        "--policies", "mdi-exit,dtoee,cf", "--discipline", "fifo",
                        "--link-model", "shared", "--slot", "%g" % topo.slot_s,
                        "--duration", "%g" % duration, "--warmup", "10", "--out", res_dir,
                        "--no-plots"], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(os.path.join(res_dir, "results.json"), "r", encoding="utf-8") as f:
            for r in json.load(f)["rates"]:
                bad += r["unfinished"]
                print("| %.1f | %s | %d | %d | %.0f | %.0f | %.1f%% |" % (
                    rate, r["policy"], r["tasks"], r["unfinished"], 1e3 * r["mean_delay_s"],
                    1e3 * r["p95_delay_s"], 100 * r["accuracy"]))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/mdi")
    ap.add_argument("--figures", default=None, help="also write the PNGs here")
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--adapt-rate", type=float, default=10.0)
    ap.add_argument("--reuse", action="store_true",
                    help="keep runs already in --out (tables and plots only)")
    ap.add_argument("--compare", action="store_true",
                    help="only simulate mdi-exit/dtoee/cf on the default testbed topology")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.compare:
        return compare_default(args.out)
    adm = [run_one(p, "admission", r, args.duration, args.out, args.reuse) for p, r in ADMISSION]
    ada = [run_one(p, "adapt", args.adapt_rate, args.duration, args.out, args.reuse)
           for p in ADAPT]

    def ms(v):
        return "-" if v is None else "%.0f" % (v * 1e3)

    print("Admission control (Alg. 3), thresholds 0.8, camera %g frames/s:\n" % CAMERA_RATE)
    print("| topology | admitted tasks/s | completed | rejected | lost | accuracy | exited early | "
          "mean ms | p95 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in adm:
        print("| %s | %.2f | %d | %d | %d | %.1f%% | %.0f%% | %s | %s |" % (
            r["preset"], r.get("admitted_rate_tasks_s") or 0.0, r["completed"],
            r.get("rejected", 0), r["lost"],
            100 * (r["accuracy"] or 0), 100 * early(r), ms(r["mean_delay_s"]),
            ms(r["p95_delay_s"])))
    print("\nThreshold adaptation (Alg. 4), Poisson %g tasks/s:\n" % args.adapt_rate)
    print("| topology | completed | rejected | lost | accuracy | exited early | mean ms | p95 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in ada:  # rejected: the source's overload (a node full), as there is no admission
        print("| %s | %d | %d | %d | %.1f%% | %.0f%% | %s | %s |" % (
            r["preset"], r["completed"], r.get("rejected", 0), r["lost"],
            100 * (r["accuracy"] or 0), 100 * early(r), ms(r["mean_delay_s"]),
            ms(r["p95_delay_s"])))
    print("\nwall time: %.0f s" % sum(r["wall_s"] for r in adm + ada))
    print("admitted = answers per second between the %g s warm-up's end and the last arrival"
          % 5.0)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = [args.out] + ([args.figures] if args.figures else [])
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    ax.bar([r["preset"] for r in adm], [r.get("admitted_rate_tasks_s") or 0 for r in adm])
    ax.set_ylabel("admitted tasks/s")
    ax.set_title("MDI-Exit testbed: admission control, thresholds 0.8")
    ax.tick_params(axis="x", labelsize=7, labelrotation=20)
    fig.tight_layout()
    for d in dirs:
        os.makedirs(d, exist_ok=True)
        fig.savefig(os.path.join(d, "mdi_testbed_admitted.png"))
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    ax.bar([r["preset"] for r in ada], [100 * (r["accuracy"] or 0) for r in ada])
    ax.set_ylim(80, 100)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("accuracy %")
    ax.set_title("MDI-Exit testbed: threshold adaptation, %g tasks/s" % args.adapt_rate)
    fig.tight_layout()
    for d in dirs:
        fig.savefig(os.path.join(d, "mdi_testbed_accuracy.png"))
    return 1 if any(r["lost"] for r in adm + ada) else 0


if __name__ == "__main__":
    sys.exit(main())

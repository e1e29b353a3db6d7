"""What ``fleet render`` tells the operator: its summary, each device's ``SHEET.txt``, the notes
on nodes that left the fleet and on client keys dropped, and the tunnels to metrics that listen
on the devices' loopback.

A node's public key stays in every device's ``/etc/edge-agent/fleet/`` (the agents'
``allowed_keys_dir``) until it is removed there: copying a newer render over it only adds
files. So the sheets' copy step replaces that folder as a whole (it holds nothing but the
render's public keys), and a render into a folder that holds an earlier render names the nodes
the earlier one had and this one has not, on the console and on every sheet. Their keypairs
stay in ``OUT/keys`` (a node added back keeps its identity) and are listed by the summary.

A client key is another matter: ``/etc/edge-agent/clients/`` may hold keys an operator put there
by hand, so the copy step only adds to it, and a source reads it at start and on reload
(SIGHUP). A render that no longer writes a client key an earlier one wrote for a source says, on
the console and on that source's sheet, to delete the key there and reload the source (until
then it answers that client). A node whose metrics listen on a loopback ``metrics_host`` of another machine is
reached only through an ssh tunnel: the summary, its sheet and ``fleet.json`` (read by ``status
--fleet``) give the tunnel. A node on a loopback address (a rehearsal on one machine, ``::1``
among them) serves its metrics on that address, which ``fleet.json`` names. The topology's
``agent`` paths are the workstation's: the summary names those no device config carries.

Every device path named (the copy step, the chown lines, the doctor command, the keys to
delete) is under the render's ``--root``, as the configs' paths are (``/`` on devices; a
rehearsal folder on one machine, where ``install --root`` puts the venv too). Units are not
under a root: there a sheet's ``systemctl`` lines would act on that machine's own agents, and
``sudo`` leave root's files that the user's agents must write; so such a sheet and the summary
say so, with the command standing for each ``systemctl`` line (``rehearsal_lines``).
"""

from __future__ import annotations

import ipaddress
import os
from shlex import quote
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from agent.config.checks import PATH_FIELDS, is_loopback_host
from agent.config.node import NodeConfig
from agent.fleet.inventory import Host, split_zone
from agent.fleet.render_bundle import unchecked_bundle_note
from agent.fleet.replay import sheet_lines
from agent.ops.paths import CACHE, ETC, VENV_BIN
from agent.ops.state import DEFAULT_STATE_DIR
from agent.testbed.topology import Topology

RESTART = "sudo systemctl restart edge-agent.target"
DRIVE_TOPOLOGY = "testbed.json"  # the topology with a "fleet" object: `testbed` drives the fleet
TUNNEL_PORT = 9501  # the workstation's local port of the first node's metrics tunnel
REHEARSAL_AGENT = "edge-agent"  # this machine's: the root venv's scripts name /opt (or none)


class Dropped(NamedTuple):
    """What a render drops of the earlier one in its folder: nodes no longer in the fleet, and
    per node the client keys it no longer writes for it."""

    nodes: List[str]
    clients: Dict[str, List[str]]


class Tunnel(NamedTuple):
    """The ssh tunnel that reaches a node's metrics listening on the device's loopback."""

    local: str  # HOST:PORT to read on the workstation (``status --endpoints``)
    command: str  # ssh -N -L LOCAL:METRICS_HOST:METRICS_PORT [USER@]HOST


def earlier_nodes(out_dir: str) -> List[str]:
    """The nodes an earlier render in ``out_dir`` wrote device files for (``devices/NODE``);
    none when ``out_dir`` holds no render or cannot be read."""
    devices = os.path.join(out_dir, "devices")
    try:
        return sorted(n for n in os.listdir(devices) if os.path.isdir(os.path.join(devices, n)))
    except OSError:
        return []


def removed_nodes(out_dir: str, node_ids: Sequence[str]) -> List[str]:
    """The nodes of the earlier render in ``out_dir`` that are not in ``node_ids``."""
    return [n for n in earlier_nodes(out_dir) if n not in set(node_ids)]


def earlier_clients(out_dir: str, node: str) -> List[str]:
    """The client keys (names) the earlier render in ``out_dir`` wrote for ``node``'s
    ``clients/`` folder; none when there is no such render or folder."""
    folder = os.path.join(out_dir, "devices", node, "etc", "edge-agent", "clients")
    try:
        return sorted(f[:-len(".key")] for f in os.listdir(folder) if f.endswith(".key"))
    except OSError:
        return []


def dropped_since(out_dir: str, node_ids: Sequence[str],
                  clients_now: Mapping[str, Sequence[str]]) -> Dropped:
    """What this render (nodes ``node_ids``; ``clients_now``: per source, the client keys it
    writes) drops of the earlier render in ``out_dir``: its nodes not in ``node_ids``, and per
    node still in the fleet the client keys the earlier one wrote and this one does not."""
    clients = {}
    for n in node_ids:
        gone = [c for c in earlier_clients(out_dir, n) if c not in set(clients_now.get(n, ()))]
        if gone:
            clients[n] = gone
    return Dropped(removed_nodes(out_dir, node_ids), clients)


def device_etc(root: str = "/") -> str:
    """``/etc/edge-agent`` under the render's ``root``."""
    return os.path.join(root, ETC.lstrip("/"))


def calibrate_args(cfg: NodeConfig) -> str:
    """The calibration unit's arguments for a worker: every mode, measured with the engine the
    agent runs (its backend, precision, threads and plan cache), since a profile entry is
    found only under the backend and precision it was measured with."""
    args = "--modes all --backend %s --precision %s --threads %d" % (
        cfg.backend, cfg.precision, cfg.engine_threads)
    return args + (" --cache-dir %s" % cfg.engine_cache_dir if cfg.engine_cache_dir else "")


def agent_command(root: str = "/") -> str:
    """The ``edge-agent`` command of the venv ``install --root`` makes under ``root``."""
    return quote(os.path.join(root, VENV_BIN.lstrip("/"), "edge-agent"))


def rehearsal_lines(n: str, cfg: NodeConfig, root: str,
                    clients_gone: Sequence[str] = ()) -> Dict[str, List[str]]:
    """Under a ``root`` other than ``/`` (a rehearsal), what a sheet says in place of the device's
    systemd and service-user lines, by where it goes: "top", "calibrate", "start", "restart"
    (after a node left), "reload" (client keys ``clients_gone`` deleted); nothing on devices."""
    if root == "/":
        return {}
    etc, run = device_etc(root), REHEARSAL_AGENT
    agents = quote("run --config %s/" % etc)  # every agent of this root, and n's alone
    return {"top": ["rehearsal under %s (--root): the steps are the device's, its paths under "
                    "it. Here run each as yourself, without sudo (the agents you start write "
                    "these files), doctor too; skip the chown lines; and in place of each "
                    "systemctl line, which acts on this machine's own agents and their "
                    "configs, not these, run the `rehearsal:` line under it." % root, ""],
            "calibrate": ["   rehearsal: %s calibrate --bundle %s --state-dir %s %s" % (
                run, quote(cfg.bundle), quote(os.path.join(root, DEFAULT_STATE_DIR.lstrip("/"))),
                calibrate_args(cfg))],
            "start": ["   rehearsal: %s run --config %s (the unit's command; a terminal of "
                      "its own)" % (run, quote("%s/%s.toml" % (etc, n)))],
            "restart": ["   rehearsal: pkill -TERM -f %s, then start each agent again as the "
                        "start step says" % agents],
            "reload": ["   rehearsal: rm -f %s && pkill -HUP -f %s" % (client_key_paths(
                clients_gone, etc), quote("run --config %s/%s.toml" % (etc, n)))]}


def rehearsal_summary(root: str) -> List[str]:
    """The summary's line on a render under a ``root`` other than ``/`` (none on devices)."""
    if root == "/":
        return []
    return ["rehearsal under %s: the systemctl lines (on the sheets and above) act on this "
            "machine's own agents and their configs, not these: run the sheets' `rehearsal:` "
            "lines in their place, as yourself" % root]


def copy_step(etc: str = ETC) -> str:
    """The device's copy step into ``etc``: the fleet/ folder (the allow-list) is the render's
    alone, replaced whole so a removed node's key goes with it; keys/, clients/ and the rest
    are only added to."""
    return ("sudo rm -rf %s && sudo cp -r edge-agent-files/. %s && rm -r edge-agent-files"
            % (quote(etc + "/fleet"), quote(etc + "/")))


def client_key_paths(names: Sequence[str], etc: str = ETC) -> str:
    """The device paths of client keys ``names``, shell-quoted, space-separated."""
    return " ".join(quote("%s/clients/%s.key" % (etc, c)) for c in names)


def drop_clients_command(node: str, names: Sequence[str], etc: str = ETC) -> str:
    """What takes client keys ``names`` off ``node``'s device: delete them, then reload its
    agent (a source reads its client keys at start and on SIGHUP, which ``reload`` sends)."""
    return "sudo rm -f %s && sudo systemctl reload edge-agent@%s" % (
        client_key_paths(names, etc), quote(node))


def clients_summary(clients: Mapping[str, Sequence[str]], etc: str = ETC) -> List[str]:
    """The summary's lines on client keys dropped since the earlier render, one per source."""
    return ["no longer a client: %s; %s still answers %s until %s deleted there and it "
            "reloads (the copy step only adds to %s/clients): on %s: %s"
            % (", ".join(names), n, "it" if len(names) == 1 else "them",
               "its key is" if len(names) == 1 else "their keys are", etc, n,
               drop_clients_command(n, names, etc))
            for n, names in sorted(clients.items())]


def bracketed(host: str) -> str:
    """``host`` as it goes before ``:PORT``: an IPv6 address in brackets (once)."""
    return "[%s]" % host if ":" in host and not host.startswith("[") else host


def loopback_address(host: str) -> str:
    """``host`` when it is a loopback address (``::1``, ``127.0.0.1``; without a ``%zone``),
    else "": an agent on such a host serves its metrics on that address, the one fleet.json's
    URL names (the config's default, 127.0.0.1, is not ``::1``); elsewhere metrics stay on the
    device's loopback (a tunnel reaches them)."""
    addr = split_zone(host)[0]
    try:
        return addr if ipaddress.ip_address(addr).is_loopback else ""
    except ValueError:
        return ""


def metrics_url(h: Host, cfg: NodeConfig) -> str:
    """fleet.json's URL of a node's metrics ("" without them): on its loopback
    ``metrics_host`` where the inventory host is a loopback too (this machine: where the agent
    serves them), else at the inventory host."""
    if not h.metrics_port:
        return ""
    if is_loopback_host(h.host) and is_loopback_host(cfg.metrics_host):
        return "http://%s:%d/metrics" % (bracketed(cfg.metrics_host), h.metrics_port)
    return "http://%s/metrics" % h.netloc(h.metrics_port)


def metrics_tunnels(hosts: Mapping[str, Host], cfgs: Mapping[str, NodeConfig]
                    ) -> Dict[str, Tunnel]:
    """Per node whose metrics endpoint listens on a loopback ``metrics_host`` of a host that is
    not this machine, the tunnel that reaches it (local ports from ``TUNNEL_PORT`` up, in node
    order): from the workstation its ``fleet.json`` URL is never answered."""
    out: Dict[str, Tunnel] = {}
    for n, cfg in cfgs.items():
        h = hosts[n]
        if not h.metrics_port or not is_loopback_host(cfg.metrics_host) \
                or is_loopback_host(h.host):
            continue
        local = "127.0.0.1:%d" % (TUNNEL_PORT + len(out))
        there = bracketed(cfg.metrics_host)
        out[n] = Tunnel(local, "ssh -N -L %s:%s:%d %s" % (
            local.split(":")[1], there, h.metrics_port, ("%s@%s" % (h.user, h.host))
            if h.user else h.host))
    return out


def tunnels_summary(tunnels: Mapping[str, Tunnel]) -> List[str]:
    """The summary's lines on metrics reached only through tunnels (none when there are
    none)."""
    if not tunnels:
        return []
    return ["metrics listen on the devices' loopback (metrics_host) on %s: `status --fleet` "
            "cannot reach %s from here; open these tunnels (each in a terminal of its own, or "
            "with &), then `edge-agent status --endpoints %s`"
            % (", ".join(tunnels), "it" if len(tunnels) == 1 else "them",
               " ".join(t.local for t in tunnels.values()))] + [
        "   " + t.command for t in tunnels.values()]


def workstation_paths_summary(agent: Mapping[str, object], root: str = "/") -> List[str]:
    """The summary's line on the topology's ``agent`` paths that no device config carries:
    each names a file on this workstation, which a device does not have (the render writes
    every device path itself; ``replay_path`` is copied, so it is no such path)."""
    left = ["agent." + k for k in PATH_FIELDS if k != "replay_path" and agent.get(k)]
    if not left:
        return []
    return ["%s: workstation path%s, not written into the device configs (each device's paths "
            "are the render's: %s)" % (", ".join(left), "" if len(left) == 1 else "s", ", ".join(
                os.path.join(root, p.lstrip("/")) for p in (ETC, DEFAULT_STATE_DIR, CACHE)))]


def retired_keys(keys_dir: str, node_ids: Sequence[str]) -> List[str]:
    """Nodes whose keypair ``keys_dir`` keeps although they are not in ``node_ids`` (the nodes
    of earlier renders: a render never deletes a key)."""
    try:
        names = os.listdir(keys_dir)
    except OSError:
        return []
    suffix = ".key_secret"
    return sorted(n[:-len(suffix)] for n in names
                  if n.endswith(suffix) and n[:-len(suffix)] not in set(node_ids))


def removed_summary(removed: Sequence[str], retired: Sequence[str], out: str,
                    etc: str = ETC) -> List[str]:
    """The summary's lines on nodes no longer in the fleet: those the earlier render in
    ``out`` had (their keys must go from every device, in ``etc``) and the keypairs kept in
    OUT/keys."""
    lines = []
    if removed:
        lines.append("no longer in the fleet: %s; every device still lets %s in until its "
                     "%s/fleet is replaced: on every device, copy the new files as its "
                     "SHEET.txt says (step 2 replaces that folder; or `sudo rm -f %s`), then "
                     "`%s`" % (", ".join(removed), "it" if len(removed) == 1 else "them", etc,
                               " ".join(quote("%s/fleet/%s.key" % (etc, n)) for n in removed),
                               RESTART))
    if retired:
        lines.append("keypairs of nodes not in the fleet kept in %s: %s (a node added back "
                     "keeps its key; delete its NAME.key and NAME.key_secret there to retire "
                     "it for good)" % (os.path.join(out, "keys"), ", ".join(retired)))
    return lines


def sheet_text(n: str, h: Host, cfg: NodeConfig, out: str, replay: str = "",
               removed: Sequence[str] = (), clients_gone: Sequence[str] = (),
               tunnel: Optional[Tunnel] = None, root: str = "/") -> str:
    """The per-device sheet: what to copy to device ``n`` and what to run there (paths and
    the login shell-quoted where they need it; the inventory already refuses odd hosts and
    users). ``removed``: nodes the earlier render had, whose keys the copy step takes off the
    device (a running device then restarts its agents); ``clients_gone``: client keys the
    earlier render wrote for ``n`` and this one does not (to delete by hand); ``tunnel``: how
    the workstation reaches the node's metrics on the device's loopback; ``root``: the
    render's ``--root``, under which every device path is (as in the configs)."""
    etc, rehearsal = device_etc(root), rehearsal_lines(n, cfg, root, clients_gone)
    at = "[%s]" % h.host if ":" in h.host else h.host  # scp's form of an IPv6 address
    login = ("%s@%s" % (h.user, at)) if h.user else at
    lines = ["%s: %s" % (n, "worker, stage %d" % cfg.stage if cfg.stage else "source"),
             "host %s; control %s, data %s%s" % (h.host, h.control_port, h.data_port,
                                                  ", client %d" % h.client_port
                                                  if cfg.client_bind else ""),
             ""] + rehearsal.get("top", [])
    if removed:
        lines += ["fleet changed: %s %s no longer in the fleet. Step 2's copy replaces "
                  "%s/fleet (the allow-list), which removes %s key%s; on a device already "
                  "running, copy (steps 1-2, without install) and restart its agents:"
                  % (", ".join(removed), "is" if len(removed) == 1 else "are", etc,
                     "its" if len(removed) == 1 else "their", "" if len(removed) == 1 else "s"),
                  "   " + RESTART] + rehearsal.get("restart", []) + [""]
    if clients_gone:
        one = len(clients_gone) == 1
        lines += ["clients changed: %s %s no longer a client of %s, but step 2's copy only adds "
                  "to %s/clients and the agent reads that folder at start and on reload: on a "
                  "device already running, copy (steps 1-2, without install), then delete the "
                  "key%s and reload the agent (until then %s answers %s):"
                  % (", ".join(clients_gone), "is" if one else "are", n, etc,
                     "" if one else "s", n, "it" if one else "them"),
                  "   " + drop_clients_command(n, clients_gone, etc)] + rehearsal.get(
                      "reload", []) + [""]
    lines += ["1. on the workstation: copy the device's files",
              "   scp -r %s %s" % (quote(os.path.join(out, "devices", n, "etc", "edge-agent")),
                                     quote(login + ":edge-agent-files")),
              "2. on %s: install the service (from a clone of the repository), then the files "
              "(fleet/, the allow-list, is replaced whole)" % n,
              "   sudo python3 -m agent install %s--instance %s"
              % ("" if root == "/" else "--root %s " % quote(root), n),
              "   " + copy_step(etc),
              "   sudo chown -R edge-agent:edge-agent %s" % quote(etc + "/keys"),
              "   sudo chown root:edge-agent %s" % quote("%s/%s.toml" % (etc, n))] + sheet_lines(
                  replay, cfg) + [
              "   sudo mkdir -p %s && sudo cp -r BUNDLE/. %s" % (quote(cfg.bundle),
                                                                  quote(cfg.bundle + "/"))]
    doctor = "   sudo -u edge-agent %s doctor" % agent_command(root)
    worker = cfg.role == "worker"
    if worker:  # the node's own check reads the profile calibrate writes
        lines += ["3. check the device and its bundle, as the service user",
                  doctor + " --bundle %s" % quote(cfg.bundle) + ("" if root == "/" else
                  " --state-dir %s" % quote(os.path.join(root, DEFAULT_STATE_DIR.lstrip("/")))),
                  "4. calibrate (the agents on the box stop while it runs)",
                  "   sudo systemctl start edge-agent-calibrate"] + rehearsal.get("calibrate", [])
    lines += ["%d. check the %snode's start-up, as the service user"
              % ((5, "") if worker else (3, "device and the ")),
              doctor + " --config %s" % quote("%s/%s.toml" % (etc, n)),
              "%d. start" % (6 if worker else 4), "   sudo systemctl start edge-agent@%s" % n,
              "   systemctl status edge-agent@%s" % n] + rehearsal.get("start", [])
    if tunnel:  # metrics_host is loopback: the workstation reads them through ssh
        lines += ["%d. watch it from the workstation: its metrics listen on %s:%d on %s only, "
                  "so read them through a tunnel"
                  % (7 if worker else 5, bracketed(cfg.metrics_host), h.metrics_port, n),
                  "   " + tunnel.command,
                  "   edge-agent status --endpoints " + tunnel.local]
    lines.append("")
    return "\n".join(lines)


def summary_lines(topo: Topology, hosts: Dict[str, Host], cfgs: Dict[str, NodeConfig],
                  made: List[str], out: str, opts: Any,
                  removed: Dropped = Dropped([], {})) -> List[str]:
    """What ``fleet render`` prints (``removed``: what it dropped of the earlier render)."""
    lines = ["%-8s %-6s %-5s %-16s %s" % ("node", "role", "stage", "host", "peers")]
    for n, cfg in cfgs.items():
        lines.append("%-8s %-6s %-5s %-16s %s" % (n, cfg.role, cfg.stage or "-", hosts[n].host,
                                                  ", ".join(p.id for p in cfg.peers)))
    kept = len(topo.node_ids()) + len(opts.clients) - len(made)
    lines.append("keys: %d made, %d kept (%s)" % (len(made), kept, os.path.join(out, "keys")))
    etc = device_etc(opts.root)
    lines += removed_summary(removed.nodes, retired_keys(os.path.join(out, "keys"),
                                                         topo.node_ids()), out, etc)
    lines += clients_summary(removed.clients, etc)
    lines += [n for n in [unchecked_bundle_note(topo, opts)] if n]
    if not opts.emulate and (topo.capacities_emulated
                             or any(l.rate_bytes_s is not None for l in topo.links)):
        lines.append("emulation off: devices measure their capacity; link rates are priors "
                     "(--emulate keeps the topology's)")
    lines.append("per-device files and sheets: %s/devices/NODE/ (SHEET.txt)"
                 % out)
    lines.append("manifest for `edge-agent status --fleet`: %s" % os.path.join(out, "fleet.json"))
    lines += tunnels_summary(metrics_tunnels(hosts, cfgs))
    lines += workstation_paths_summary(topo.agent, opts.root) + rehearsal_summary(opts.root)
    if not opts.rate_tasks_s:
        lines.append("drive load from here: " + drive_command(topo, out, opts))
    return lines


def drive_command(topo: Topology, out: str, opts: Any) -> str:
    """The `testbed` command that drives the rendered fleet: its policy, and rates in tasks/s
    (``R``) when the topology states no capacity or link rate to take a percentage of."""
    line = "edge-agent testbed --topology %s --policies %s" % (
        quote(os.path.join(out, DRIVE_TOPOLOGY)), quote(opts.policy))
    if not topo.rates and all(w.emulate_capacity_flops is None for w in topo.workers) \
            and all(l.rate_bytes_s is None for l in topo.links):
        line += " --rates R (R: total tasks/s; the topology states no capacity for N%)"
    return line

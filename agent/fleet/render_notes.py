"""What ``fleet render`` tells the operator: each device's ``SHEET.txt``, the notes on nodes
that left the fleet and on client keys dropped, and the tunnels to metrics that listen on the
devices' loopback.

A node's public key stays in every device's ``/etc/edge-agent/fleet/`` (the agents'
``allowed_keys_dir``) until it is removed there: copying a newer render over it only adds
files. So the sheets' copy step replaces that folder as a whole (it holds nothing but the
render's public keys), and a render into a folder that holds an earlier render names the nodes
the earlier one had and this one has not, on the console and on every sheet. Their keypairs
stay in ``OUT/keys`` (a node added back keeps its identity) and are listed by the summary.

A client key is another matter: ``/etc/edge-agent/clients/`` may hold keys an operator put there
by hand, so the copy step only adds to it, and a source reads it only at start. A render that no
longer writes a client key an earlier one wrote for a source says, on the console and on that
source's sheet, to delete the key there and restart the source (until then it answers that
client). A node whose metrics listen on a loopback ``metrics_host`` of another machine is
reached only through an ssh tunnel: the summary, its sheet and ``fleet.json`` (read by ``status
--fleet``) give the tunnel. The topology's ``agent`` paths are the workstation's: the summary
names those no device config carries.
"""

from __future__ import annotations

import os
from shlex import quote
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

from agent.config.checks import PATH_FIELDS, is_loopback_host
from agent.config.node import NodeConfig
from agent.fleet.inventory import Host
from agent.fleet.replay import sheet_lines

ETC = "/etc/edge-agent"
# the device's copy step: the fleet/ folder (the allow-list) is the render's alone, replaced
# whole so a removed node's key goes with it; keys/, clients/ and the rest are only added to
COPY_STEP = ("sudo rm -rf %s/fleet && sudo cp -r edge-agent-files/. %s/ && rm -r "
             "edge-agent-files" % (ETC, ETC))
RESTART = "sudo systemctl restart edge-agent.target"
TUNNEL_PORT = 9501  # the workstation's local port of the first node's metrics tunnel


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


def client_key_paths(names: Sequence[str]) -> str:
    """The device paths of client keys ``names``, shell-quoted, space-separated."""
    return " ".join(quote("%s/clients/%s.key" % (ETC, c)) for c in names)


def drop_clients_command(node: str, names: Sequence[str]) -> str:
    """What takes client keys ``names`` off ``node``'s device: delete them, then restart its
    agent (a source reads its client keys only at start)."""
    return "sudo rm -f %s && sudo systemctl restart edge-agent@%s" % (client_key_paths(names),
                                                                       quote(node))


def clients_summary(clients: Mapping[str, Sequence[str]]) -> List[str]:
    """The summary's lines on client keys dropped since the earlier render, one per source."""
    return ["no longer a client: %s; %s still answers %s until %s deleted there and it "
            "restarts (the copy step only adds to /etc/edge-agent/clients): on %s: %s"
            % (", ".join(names), n, "it" if len(names) == 1 else "them",
               "its key is" if len(names) == 1 else "their keys are", n,
               drop_clients_command(n, names))
            for n, names in sorted(clients.items())]


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
        there = "[%s]" % cfg.metrics_host if ":" in cfg.metrics_host else cfg.metrics_host
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


def workstation_paths_summary(agent: Mapping[str, object]) -> List[str]:
    """The summary's line on the topology's ``agent`` paths that no device config carries:
    each names a file on this workstation, which a device does not have (the render writes
    every device path itself; ``replay_path`` is copied, so it is no such path)."""
    left = ["agent." + k for k in PATH_FIELDS if k != "replay_path" and agent.get(k)]
    if not left:
        return []
    return ["%s: workstation path%s, not written into the device configs (each device's paths "
            "are the render's: %s, /var/lib/edge-agent, /var/cache/edge-agent)"
            % (", ".join(left), "" if len(left) == 1 else "s", ETC)]


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


def removed_summary(removed: Sequence[str], retired: Sequence[str], out: str) -> List[str]:
    """The summary's lines on nodes no longer in the fleet: those the earlier render in
    ``out`` had (their keys must go from every device) and the keypairs kept in OUT/keys."""
    lines = []
    if removed:
        lines.append("no longer in the fleet: %s; every device still lets %s in until its "
                     "/etc/edge-agent/fleet is replaced: on every device, copy the new files as "
                     "its SHEET.txt says (step 2 replaces that folder; or `sudo rm -f %s`), "
                     "then `%s`" % (", ".join(removed), "it" if len(removed) == 1 else "them",
                                    " ".join("%s/fleet/%s.key" % (ETC, quote(n))
                                             for n in removed), RESTART))
    if retired:
        lines.append("keypairs of nodes not in the fleet kept in %s: %s (a node added back "
                     "keeps its key; delete its NAME.key and NAME.key_secret there to retire "
                     "it for good)" % (os.path.join(out, "keys"), ", ".join(retired)))
    return lines


def sheet_text(n: str, h: Host, cfg: NodeConfig, out: str, replay: str = "",
               removed: Sequence[str] = (), clients_gone: Sequence[str] = (),
               tunnel: Optional[Tunnel] = None) -> str:
    """The per-device sheet: what to copy to device ``n`` and what to run there (paths and
    the login shell-quoted where they need it; the inventory already refuses odd hosts and
    users). ``removed``: nodes the earlier render had, whose keys the copy step takes off the
    device (a running device then restarts its agents); ``clients_gone``: client keys the
    earlier render wrote for ``n`` and this one does not (to delete by hand); ``tunnel``: how
    the workstation reaches the node's metrics on the device's loopback."""
    at = "[%s]" % h.host if ":" in h.host else h.host  # scp's form of an IPv6 address
    login = ("%s@%s" % (h.user, at)) if h.user else at
    lines = ["%s: %s" % (n, "worker, stage %d" % cfg.stage if cfg.stage else "source"),
             "host %s; control %s, data %s%s" % (h.host, h.control_port, h.data_port,
                                                  ", client %d" % h.client_port
                                                  if cfg.client_bind else ""),
             ""]
    if removed:
        lines += ["fleet changed: %s %s no longer in the fleet. Step 2's copy replaces "
                  "/etc/edge-agent/fleet (the allow-list), which removes %s key%s; on a device "
                  "already running, copy (steps 1-2, without install) and restart its agents:"
                  % (", ".join(removed), "is" if len(removed) == 1 else "are",
                     "its" if len(removed) == 1 else "their", "" if len(removed) == 1 else "s"),
                  "   " + RESTART, ""]
    if clients_gone:
        one = len(clients_gone) == 1
        lines += ["clients changed: %s %s no longer a client of %s, but step 2's copy only adds "
                  "to /etc/edge-agent/clients and the agent reads that folder only at start: on "
                  "a device already running, copy (steps 1-2, without install), then delete "
                  "the key%s and restart the agent (until then %s answers %s):"
                  % (", ".join(clients_gone), "is" if one else "are", n, "" if one else "s", n,
                     "it" if one else "them"),
                  "   " + drop_clients_command(n, clients_gone), ""]
    lines += ["1. on the workstation: copy the device's files",
              "   scp -r %s %s" % (quote(os.path.join(out, "devices", n, "etc", "edge-agent")),
                                     quote(login + ":edge-agent-files")),
              "2. on %s: install the service (from a clone of the repository), then the files "
              "(fleet/, the allow-list, is replaced whole)" % n,
              "   sudo python3 -m agent install --instance %s" % n,
              "   " + COPY_STEP,
              "   sudo chown -R edge-agent:edge-agent /etc/edge-agent/keys",
              "   sudo chown root:edge-agent /etc/edge-agent/%s.toml" % n] + sheet_lines(
                  replay, cfg) + [
              "   sudo mkdir -p %s && sudo cp -r BUNDLE/. %s" % (quote(cfg.bundle),
                                                                  quote(cfg.bundle + "/"))]
    doctor = "   sudo -u edge-agent /opt/edge-agent/venv/bin/edge-agent doctor"
    worker = cfg.role == "worker"
    if worker:  # the node's own check reads the profile calibrate writes
        lines += ["3. check the device, as the service user", doctor,
                  "4. calibrate (the agents on the box stop while it runs)",
                  "   sudo systemctl start edge-agent-calibrate"]
    lines += ["%d. check the %snode's start-up, as the service user"
              % ((5, "") if worker else (3, "device and the ")),
              doctor + " --config /etc/edge-agent/%s.toml" % n,
              "%d. start" % (6 if worker else 4), "   sudo systemctl start edge-agent@%s" % n,
              "   systemctl status edge-agent@%s" % n]
    if tunnel:  # metrics_host is loopback: the workstation reads them through ssh
        lines += ["%d. watch it from the workstation: its metrics listen on %s:%d on %s only, "
                  "so read them through a tunnel" % (7 if worker else 5, cfg.metrics_host,
                                                     h.metrics_port, n),
                  "   " + tunnel.command,
                  "   edge-agent status --endpoints " + tunnel.local]
    lines.append("")
    return "\n".join(lines)

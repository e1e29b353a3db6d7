"""What ``fleet render`` tells the operator: each device's ``SHEET.txt`` and the notes on nodes
that left the fleet.

A node's public key stays in every device's ``/etc/edge-agent/fleet/`` (the agents'
``allowed_keys_dir``) until it is removed there: copying a newer render over it only adds
files. So the sheets' copy step replaces that folder as a whole (it holds nothing but the
render's public keys), and a render into a folder that holds an earlier render names the nodes
the earlier one had and this one has not, on the console and on every sheet. Their keypairs
stay in ``OUT/keys`` (a node added back keeps its identity) and are listed by the summary.
"""

from __future__ import annotations

import os
from shlex import quote
from typing import List, Sequence

from agent.config.node import NodeConfig
from agent.fleet.inventory import Host
from agent.fleet.replay import sheet_lines

ETC = "/etc/edge-agent"
# the device's copy step: the fleet/ folder (the allow-list) is the render's alone, replaced
# whole so a removed node's key goes with it; keys/, clients/ and the rest are only added to
COPY_STEP = ("sudo rm -rf %s/fleet && sudo cp -r edge-agent-files/. %s/ && rm -r "
             "edge-agent-files" % (ETC, ETC))
RESTART = "sudo systemctl restart edge-agent.target"


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
               removed: Sequence[str] = ()) -> str:
    """The per-device sheet: what to copy to device ``n`` and what to run there (paths and
    the login shell-quoted where they need it; the inventory already refuses odd hosts and
    users). ``removed``: nodes the earlier render had, whose keys the copy step takes off the
    device (a running device then restarts its agents)."""
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
              "   systemctl status edge-agent@%s" % n, ""]
    return "\n".join(lines)

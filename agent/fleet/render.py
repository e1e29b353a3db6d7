"""``edge-agent fleet render``: a topology and an inventory made into every device's files.

The node configs come from the testbed's one topology-to-config path
(``agent.testbed.local.node_objects``): the same peers, link-rate priors, policy, knobs and
thresholds; a deployed device then binds on every interface, runs CURVE with its own keypair,
keeps its state and calibration where the systemd units expect them, and (a source) serves its
client endpoint over CURVE to the clients in ``/etc/edge-agent/clients``. Output::

    OUT/fleet.json                          the manifest (nodes, hosts, endpoints) for `status`
    OUT/keys/NODE.key, NODE.key_secret      every node's keypair (kept when rendering again)
    OUT/keys/clients/NAME.key[_secret]      the workstation clients' keypairs
    OUT/devices/NODE/etc/edge-agent/...     what to copy to the device's /etc/edge-agent
    OUT/devices/NODE/SHEET.txt              the device's sheet: copy these files, run these
    OUT/testbed.json                        the topology with a "fleet" object (client mode):
                                            `edge-agent testbed` drives the fleet with it

A source's replay set (the topology's ``agent.replay_path``, a workstation file) is copied
into its files and named at its device path (``agent.fleet.replay``). ``testbed.json`` keeps
the topology's own ``fleet`` fields the testbed reads (``replay``, ``result_timeout_s``;
``replay`` defaults to ``agent.replay_path``); one the render cannot honour is refused
(``agent.testbed.fleet.rendered_fleet``). Nothing emulated carries
over unless asked (``emulate``): a device's capacity is measured and
a link's rate is a prior the sender corrects.

``fleet.json`` records each node's ``max_message_bytes``: ``submit --fleet`` and the testbed
driving the fleet take it as the source's limit on one input's message. A node on a loopback
inventory host serves its metrics on that address (``::1`` too), the one ``fleet.json`` names.

All or nothing: node ids, hosts, the rate and OUT are checked first, every node's config is
parsed, and each worker's placement checked against the policy as ``run`` checks it
(``check_placement``: a policy of one stage per worker refuses a worker with several), the
topology against its bundle when readable here (``agent.fleet.render_bundle``) and no two nodes
of one machine on one port (``agent.fleet.render_ports``), before any device file is
written, and it is all written into a new folder next to OUT (holding a copy of OUT/keys:
existing keys are kept, never made again) that replaces OUT only when everything succeeded.
A failed render leaves OUT as it was; a render never mixes with an earlier one's devices.
OUT may hold only what a render writes (``RENDERED``). A render over an earlier one names the
nodes it drops, on the console and on every sheet: their public keys stay in every device's
allow-list until the sheet's copy step replaces it; and the client keys it no longer writes
for a source, which stay on that device until deleted by hand (``agent.fleet.render_notes``).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from agent.config.checks import PATH_FIELDS
from agent.config.node import ConfigError, NodeConfig, dump_config, parse_config
from agent.errors import UsageError
from agent.fleet.inventory import Host
from agent.fleet.render_bundle import check_bundle
from agent.fleet.render_notes import (DRIVE_TOPOLOGY, Dropped, dropped_since,
                                      loopback_address, metrics_tunnels, metrics_url,
                                      sheet_text)
from agent.fleet.render_notes import calibrate_args as calibrate_args  # doctor's import
from agent.fleet.render_ports import check_loopback_peers, check_port_clashes
from agent.fleet.replay import place_replay, replay_set, write_replay
from agent.ops.atomic import is_mount_point, replace_dir, write_atomic
from agent.ops.paths import BUNDLE, CACHE, ETC
from agent.ops.state import DEFAULT_STATE_DIR as STATE
from agent.policies.fixed import node_knobs
from agent.testbed.fleet import KEPT_BY_RENDER, rendered_fleet
from agent.testbed.local import node_objects
from agent.testbed.nodeparts import check_fixed_rows, node_config_error
from agent.testbed.topology import Topology

# the fields of a local testbed run that a deployed device does not use
TESTBED_ONLY = ("records_flush_interval_s", "records_max_bytes", "max_tasks",
                "emulate_capacity_flops", "emulate_links", "arrival_rate_tasks_s")


@dataclass(frozen=True)
class RenderOptions:
    """What ``render`` writes besides the topology's own settings."""

    out_dir: str
    policy: str = "dtoee"
    bundle: str = BUNDLE  # the bundle's path on the devices
    root: str = "/"  # device paths are under this root ("/" on devices; a temp dir in tests)
    clients: Sequence[str] = ("workstation",)  # client keypairs allowed on the sources
    rate_tasks_s: float = 0.0  # > 0: sources make Poisson load themselves; 0: client mode
    emulate: bool = False  # keep the topology's emulated capacities and link rates
    # where ``policy`` came from, for the placement refusal: "--policy", "fleet.policy" (the
    # topology's) or "" (the default)
    policy_from: str = "--policy"


def _dev(opts: RenderOptions, path: str) -> str:
    """A device path under the render's root."""
    return os.path.join(opts.root, path.lstrip("/"))


def _keypair(directory: str, name: str) -> bool:
    """NAME.key/NAME.key_secret in ``directory``; True when made now, False when kept."""
    from agent.net.security import generate_keypair

    if os.path.exists(os.path.join(directory, name + ".key_secret")):
        return False
    generate_keypair(directory, name)
    return True


def _public(directory: str, name: str) -> str:
    from agent.net.security import load_public_key

    return load_public_key(os.path.join(directory, name + ".key")).decode("ascii")


def _copy(src: str, dst: str, mode: int) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)


def check_render(topo: Topology, hosts: Dict[str, Host], opts: RenderOptions) -> None:
    """What can be refused before anything is written (node ids: the topology's own check): a
    host for every node, the rate, ``fixed``'s per-node routing rows (``check_fixed_rows``),
    the topology's own ``fleet`` fields (kept in testbed.json; with a rate no testbed.json is
    written, so none of them may be given), and ``out_dir`` (a folder, or not there yet; when
    there, only a render's own files in it, and no mount point: it is replaced as a whole)."""
    missing = [n for n in topo.node_ids() if n not in hosts]
    if missing:
        raise UsageError("inventory: no host for %s" % ", ".join(missing))
    check_bundle(topo, opts)  # when readable here: its stages (--emulate: the full check)
    if not (math.isfinite(opts.rate_tasks_s) and opts.rate_tasks_s >= 0):
        raise UsageError("--rate: must be a number >= 0 tasks/s, got %r" % opts.rate_tasks_s)
    check_fixed_rows(topo)  # fixed's per-node rows against the links, as the testbed does
    if not opts.rate_tasks_s:
        drive_fleet(topo, hosts, opts)
    else:
        given = [k for k in KEPT_BY_RENDER[:2] if (topo.fleet or {}).get(k) is not None]
        if given:
            raise topo.error("fleet.%s: with --rate the sources make their own load (no "
                             "testbed.json is written): drop it or render without --rate"
                             % given[0])
    out = os.path.realpath(opts.out_dir)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError("--out: %s is a file, not a folder" % opts.out_dir)
    if is_mount_point(out):  # renamed over as a whole, which a mount point cannot be
        raise UsageError("--out: %s is a mount point, which a render cannot replace as a "
                         "whole; give a folder inside it, e.g. %s"
                         % (opts.out_dir, os.path.join(opts.out_dir, "fleet")))
    if os.path.isdir(out):
        try:
            other = sorted(set(os.listdir(out)) - set(RENDERED))
        except OSError as exc:
            raise UsageError("--out: cannot read %s: %s" % (opts.out_dir, exc.strerror or exc)
                             ) from None
        if other:
            raise UsageError("--out: %s holds files a render does not write (%s); a render "
                             "replaces the folder as a whole: move them away or give another "
                             "folder" % (opts.out_dir, ", ".join(other[:5])))


RENDERED = ("keys", "devices", "fleet.json", "testbed.json")  # what a render's folder holds


def render(topo: Topology, hosts: Dict[str, Host], opts: RenderOptions
           ) -> Tuple[Dict[str, NodeConfig], List[str], Dropped]:
    """Write every device's files (see the module docstring); returns the node configs, the
    names of the keypairs made now (the others were kept from an earlier render) and what
    this render drops of the earlier one in ``out_dir``: its nodes (every sheet names them:
    their keys must leave every device's allow-list) and the client keys no longer written for
    a source (its sheet says to delete them).

    All or nothing: everything is checked first (``check_render``), then written into a new
    folder next to ``out_dir`` (with a copy of the keys already there) and renamed into place
    only when every node's files are written; on any error ``out_dir`` is as it was."""
    check_render(topo, hosts, opts)
    out = os.path.realpath(opts.out_dir)
    parent, name = os.path.split(out)
    tag = "%d-%s" % (os.getpid(), secrets.token_hex(4))
    stage = os.path.join(parent, ".%s.render-%s" % (name, tag))
    # the client keys this render writes per source (none with --rate: no client endpoint)
    removed = dropped_since(out, topo.node_ids(),
                            {s.id: () if opts.rate_tasks_s else opts.clients for s in topo.sources})
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(stage)
        if os.path.isdir(out):
            shutil.copymode(out, stage)
            if os.path.isdir(os.path.join(out, "keys")):
                shutil.copytree(os.path.join(out, "keys"), os.path.join(stage, "keys"))
        cfgs, made = _render_into(stage, topo, hosts, opts, removed)
        replace_dir(stage, out, os.path.join(parent, ".%s.old-%s" % (name, tag)))
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise UsageError("--out: cannot write %s: %s" % (exc.filename or opts.out_dir,
                                                          exc.strerror or exc)) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return cfgs, made, removed


def _render_into(stage: str, topo: Topology, hosts: Dict[str, Host], opts: RenderOptions,
                 removed: Dropped) -> Tuple[Dict[str, NodeConfig], List[str]]:
    """``render`` into the folder ``stage``: keys, then every node's config (all parsed before
    any device file is written), then the files; paths shown to the user name ``out_dir``."""
    replay = replay_set(topo)  # the workstation's file, copied to each source's files
    keys_dir = os.path.join(stage, "keys")
    made = [n for n in topo.node_ids() if _keypair(keys_dir, n)]
    made += ["clients/" + c for c in opts.clients
             if _keypair(os.path.join(keys_dir, "clients"), c)]
    pub = {n: _public(keys_dir, n) for n in topo.node_ids()}
    ctrl = {n: h.endpoint(h.control_port) for n, h in hosts.items()}
    data = {n: h.endpoint(h.data_port) for n, h in hosts.items()}
    objs = node_objects(topo, opts.bundle, opts.policy, opts.rate_tasks_s or 1.0, 1.0,
                        _dev(opts, STATE), ctrl, data)
    cfgs: Dict[str, NodeConfig] = {}
    for n, obj in objs.items():
        h = hosts[n]
        obj["policy_knobs"] = node_knobs(opts.policy, obj["policy_knobs"], n)  # fixed: its row
        for k in PATH_FIELDS:  # the topology's are workstation paths: a device gets the render's
            obj.pop(k, None)
        keep = {k: obj[k] for k in ("emulate_capacity_flops", "emulate_links") if k in obj}
        for k in TESTBED_ONLY:  # the testbed's own values; the topology's `agent` ones are kept
            obj.pop(k, None)
            if k in topo.agent and k.startswith("records_"):
                obj[k] = topo.agent[k]
        if opts.emulate:
            obj.update(keep)
        # a device binds every interface; a loopback host is this machine, where nodes on
        # other loopback addresses may take the same ports: bind that address only
        bind = h.endpoint if loopback_address(h.host) else "tcp://*:%d".__mod__
        obj.update({
            "control_bind": bind(h.control_port),
            "data_bind": bind(h.data_port),
            "engine_cache_dir": _dev(opts, CACHE),
            "security": "curve",
            "secret_key_path": _dev(opts, "%s/keys/%s.key_secret" % (ETC, n)),
            "public_key_path": _dev(opts, "%s/keys/%s.key" % (ETC, n)),
            "allowed_keys_dir": _dev(opts, ETC + "/fleet"),
            "metrics_port": h.metrics_port,
        })
        if "metrics_host" not in topo.agent and loopback_address(h.host):
            obj["metrics_host"] = loopback_address(h.host)  # where fleet.json's URL points
        elif obj.get("metrics_host") == "0.0.0.0" and ":" in h.host:  # IPv4 only; the URL is
            obj["metrics_host"] = "::"  # the host's IPv6 address: "::" takes both families
        place_replay(obj, replay, _dev(opts, ETC))
        for p in obj["peers"]:
            p["public_key"] = pub[p["id"]]
        if obj["role"] == "worker":
            obj["capacity_profile"] = _dev(opts, STATE + "/calibration.json")
        elif opts.rate_tasks_s > 0:
            share = [s.share for s in topo.sources if s.id == n][0]
            obj.update({"arrival": "poisson", "arrival_rate_tasks_s": share * opts.rate_tasks_s})
        else:
            obj.update({"arrival": "client", "client_bind": bind(h.client_port),
                        "client_keys_dir": _dev(opts, ETC + "/clients")})
    check_port_clashes(hosts, objs)  # hosts written differently may be one machine
    check_loopback_peers(hosts, objs)  # a device's peer at localhost would be itself
    for n, obj in objs.items():
        try:
            cfgs[n] = parse_config(obj, "/", where="fleet node %s" % n)
        except ConfigError as exc:  # a value of the topology's: said where its file has it
            raise node_config_error(topo, exc, "fleet node %s" % n, obj, opts.policy) from None
    check_placement(cfgs, opts)
    for n, cfg in cfgs.items():
        _write_device(stage, topo, n, cfg, opts)
        write_replay(os.path.join(stage, "devices", n, "etc", "edge-agent"), replay, cfg)
    _write_manifest(stage, topo, hosts, cfgs, opts)
    _write_sheets(stage, hosts, cfgs, opts, replay, removed)
    if not opts.rate_tasks_s:
        write_atomic(os.path.join(stage, DRIVE_TOPOLOGY),
                     json.dumps(drive_topology(topo, hosts, opts), indent=1) + "\n")
    return cfgs, made


def drive_topology(topo: Topology, hosts: Dict[str, Host], opts: RenderOptions) -> dict:
    """The topology as the testbed reads it, plus the ``fleet`` object that drives the rendered
    fleet from the workstation: the policy it runs, every source's client endpoint, the keys to
    reach it, and whether the agents emulate the topology's capacities and link rates."""
    from agent.config.jsonfile import read_json_file
    from agent.testbed.topology import TopologyError

    obj = dict(read_json_file(topo.file, TopologyError, "topology"))  # path may carry a label
    obj.pop("fleet", None)
    obj["bundle"] = topo.bundle
    if "agent" in obj:  # its paths as read (absolute): testbed.json is in another folder
        obj["agent"] = dict(topo.agent)
    obj["knobs"] = {k: dict(v) for k, v in topo.knobs.items()}
    obj["fleet"] = drive_fleet(topo, hosts, opts)
    return obj


def drive_fleet(topo: Topology, hosts: Dict[str, Host], opts: RenderOptions) -> dict:
    """testbed.json's ``fleet`` object: what the render sets, with the topology's own fields
    the testbed reads kept (``rendered_fleet``: one it cannot honour is a ``UsageError``)."""
    made = {"policy": opts.policy,
            "clients": {s.id: hosts[s.id].endpoint(hosts[s.id].client_port)
                        for s in topo.sources},
            "keys_dir": "keys", "client": opts.clients[0],
            # false: the capacities and link rates above are nominal, the devices run at theirs
            "emulated": bool(opts.emulate)}
    if topo.agent.get("replay_path"):  # what the sources replay, unless fleet.replay says
        made["replay"] = topo.agent["replay_path"]
    return rendered_fleet(topo, made, opts.clients)


def _write_device(out: str, topo: Topology, n: str, cfg: NodeConfig,
                  opts: RenderOptions) -> None:
    """``OUT/devices/N/etc/edge-agent``: config, own keys, fleet keys, client keys, env file."""
    etc = os.path.join(out, "devices", n, "etc", "edge-agent")
    keys_dir = os.path.join(out, "keys")
    os.makedirs(etc)
    write_atomic(os.path.join(etc, n + ".toml"), dump_config(cfg), perms=0o640)
    _copy(os.path.join(keys_dir, n + ".key"), os.path.join(etc, "keys", n + ".key"), 0o644)
    _copy(os.path.join(keys_dir, n + ".key_secret"), os.path.join(etc, "keys", n + ".key_secret"),
          0o600)
    os.chmod(os.path.join(etc, "keys"), 0o700)
    for m in topo.node_ids():
        _copy(os.path.join(keys_dir, m + ".key"), os.path.join(etc, "fleet", m + ".key"), 0o644)
    if cfg.client_keys_dir:
        for c in opts.clients:
            _copy(os.path.join(keys_dir, "clients", c + ".key"),
                  os.path.join(etc, "clients", c + ".key"), 0o644)
    if cfg.role == "worker":
        write_atomic(os.path.join(etc, "calibrate.env"),
                     "# Read by edge-agent-calibrate.service\nEDGE_AGENT_BUNDLE=%s\n"
                     "EDGE_AGENT_CALIBRATE_ARGS=%s\n" % (cfg.bundle, calibrate_args(cfg)),
                     perms=0o644)


def check_placement(cfgs: Dict[str, NodeConfig], opts: RenderOptions) -> None:
    """The placement check ``run`` (and ``doctor --config``) makes of each worker config
    (``agent.node.build.check_config``), before any device file is written: a policy that
    models one stage per worker (its ``one_stage_only``) cannot run a worker holding several
    (``last_stage``); one ``UsageError`` line naming those workers and ``--policy``."""
    from agent.policies.registry import MDI_EXIT, lookup

    why = lookup(opts.policy, opts.policy_from or "--policy", "agent").one_stage_only
    wide = ["%s (stages %d-%d)" % (n, c.stage, c.stages[1]) for n, c in cfgs.items()
            if c.role == "worker" and c.stages[1] > c.stage]
    if not (why and wide):
        return
    given = {"--policy": "--policy %s", "fleet.policy": "the topology's fleet.policy %s"}.get(
        opts.policy_from, "policy %s (the default without --policy)") % opts.policy
    raise UsageError("%s cannot run worker%s %s: %s, and `run` and `doctor` refuse such a "
                     "config; render with --policy %s (or another policy whose workers may "
                     "hold several stages)" % (given, "" if len(wide) == 1 else "s",
                                               ", ".join(wide), why, MDI_EXIT))


def manifest_object(topo: Topology, hosts: Dict[str, Host], cfgs: Dict[str, NodeConfig],
                    opts: RenderOptions) -> dict:
    """The fleet manifest (``fleet.json``): every node's host, role and endpoints (and the
    tunnel to metrics that listen on the device's loopback, which ``status`` names)."""
    nodes = {}
    tunnels = metrics_tunnels(hosts, cfgs)
    for n, cfg in cfgs.items():
        h = hosts[n]
        nodes[n] = {"host": h.host, "role": cfg.role, "stage": cfg.stage,
                    "last_stage": cfg.stages[1], "control": h.endpoint(h.control_port),
                    "data": h.endpoint(h.data_port),
                    "client": h.endpoint(h.client_port) if cfg.client_bind else "",
                    "metrics": metrics_url(h, cfg),
                    "user": h.user, "max_message_bytes": cfg.max_message_bytes,
                    "public_key": os.path.join("keys", n + ".key")}
        if n in tunnels:
            nodes[n].update(metrics_tunnel=tunnels[n].command, metrics_local=tunnels[n].local)
    return {"topology": topo.path, "policy": opts.policy, "root": opts.root,
            "clients": list(opts.clients), "nodes": nodes}


def _write_manifest(out: str, topo: Topology, hosts: Dict[str, Host],
                    cfgs: Dict[str, NodeConfig], opts: RenderOptions) -> None:
    write_atomic(os.path.join(out, "fleet.json"),
                 json.dumps(manifest_object(topo, hosts, cfgs, opts), indent=1) + "\n")


def _write_sheets(stage: str, hosts: Dict[str, Host], cfgs: Dict[str, NodeConfig],
                  opts: RenderOptions, replay: str, removed: Dropped) -> None:
    """Every ``SHEET.txt``, written in ``stage``, naming the files where they will be (and the
    nodes and client keys dropped since the earlier render, and a metrics tunnel)."""
    tunnels = metrics_tunnels(hosts, cfgs)
    for n, cfg in cfgs.items():
        write_atomic(os.path.join(stage, "devices", n, "SHEET.txt"),
                     sheet_text(n, hosts[n], cfg, os.path.abspath(opts.out_dir), replay,
                                removed.nodes, removed.clients.get(n, ()), tunnels.get(n),
                                opts.root),
                     perms=0o644)

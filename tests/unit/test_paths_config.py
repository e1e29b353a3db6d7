"""Paths in a node config mean the same to ``run`` and ``doctor --config`` whatever folder they
start in: a relative ``ipc://`` endpoint (binds, ``client_bind``, peer addresses) is the socket
beside the config file, as every other relative path in it is, and its AF_UNIX length is
checked as resolved; a ``state_dir`` that is (or lies under) a symbolic link to nothing, such
as an SD card's mount point while it is not mounted, is named as such by both, with the fix.
Real config files, folders, links and ZeroMQ sockets in tmp_path."""

from __future__ import annotations

import os

import pytest
import zmq

from agent.config.node import ConfigError, dump_config, load_config, parse_config
from agent.node import build
from agent.ops.doctor import WARN, Context, check_dirs
from agent.ops.doctor_node import check_node
from agent.ops.files import FileFault, check_writable_dir
from engines.demo import DEMO_BUNDLE_DIR

try:  # Python 3.11+
    import tomllib as toml
except ImportError:  # pragma: no cover - Python < 3.11
    import tomli as toml  # type: ignore[no-redef]


def _source(folder, state_dir="state", **over):
    """A client-mode source config of the demo bundle written to ``folder/cam.toml``."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"node_id": "cam", "role": "source", "bundle": DEMO_BUNDLE_DIR,
              "state_dir": state_dir, "security": "none", "arrival": "client",
              "control_bind": "ipc://cam-ctl.sock", "data_bind": "ipc://sub/cam-data.sock",
              "client_bind": "ipc://client.sock"}
    fields.update(over)
    text = "".join('%s = "%s"\n' % kv for kv in fields.items())
    text += ('\n[[peers]]\nid = "w1"\nstage = 1\ncontrol_address = "ipc://w1-ctl.sock"\n'
             'data_address = "ipc://../elsewhere/w1-data.sock"\n')
    path = folder / "cam.toml"
    path.write_text(text)
    return str(path)


def test_relative_ipc_endpoints_are_taken_from_the_config_files_folder(tmp_path, monkeypatch):
    """Rule: binds, client_bind and peer addresses given as ipc://RELATIVE are the sockets in
    the config's folder, the same from any working folder; dump_config writes them so and
    reads back equal."""
    folder = tmp_path / "node cfg"
    path = _source(folder)
    monkeypatch.chdir("/")
    cfg = load_config(path)
    assert cfg.control_bind == "ipc://%s/cam-ctl.sock" % folder
    assert cfg.data_bind == "ipc://%s/sub/cam-data.sock" % folder
    assert cfg.client_bind == "ipc://%s/client.sock" % folder
    assert cfg.peers[0].control_address == "ipc://%s/w1-ctl.sock" % folder
    assert cfg.peers[0].data_address == "ipc://%s/elsewhere/w1-data.sock" % tmp_path
    monkeypatch.chdir(str(tmp_path))
    assert load_config(path) == cfg
    assert parse_config(toml.loads(dump_config(cfg)), "/other") == cfg


@pytest.mark.parametrize("endpoint", ["ipc:///run/edge-agent/cam/ctl.sock", "ipc://@cam-ctl",
                                      "ipc://*", "tcp://127.0.0.1:7001", "inproc://cam"])
def test_absolute_abstract_wildcard_and_other_endpoints_are_kept_as_written(tmp_path, endpoint):
    """Rule: only a relative ipc:// path is resolved; an absolute one, Linux's abstract
    namespace (@NAME), ZeroMQ's wildcard (*), tcp and inproc stay as written."""
    cfg = load_config(_source(tmp_path / "cfg", control_bind=endpoint))
    assert cfg.control_bind == endpoint


def test_the_socket_is_bound_beside_the_config_whatever_the_working_folder(tmp_path,
                                                                           monkeypatch):
    """Rule: a ZeroMQ socket bound at the parsed control_bind from another working folder is
    the file in the config's folder, and nothing is made in the working folder."""
    folder = tmp_path / "cfg"
    cfg = load_config(_source(folder))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(str(cwd))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    try:
        sock.bind(cfg.control_bind)
        assert (folder / "cam-ctl.sock").is_socket()
        assert os.listdir(str(cwd)) == []
    finally:
        sock.close(0)
        ctx.term()


def test_a_relative_ipc_path_too_long_once_resolved_is_one_line_naming_the_field(tmp_path):
    """Rule: the AF_UNIX limit (107 bytes) applies to the path as resolved: a short relative
    name in a deep folder is refused naming the field and that it is taken from the config's
    folder."""
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    with pytest.raises(ConfigError) as exc:
        load_config(_source(deep))
    text = str(exc.value)
    assert "config.control_bind: an ipc:// socket path can be at most 107 bytes" in text
    assert "'ipc://cam-ctl.sock' is taken from the config's folder" in text
    assert len(text.splitlines()) == 1


def test_doctor_checks_the_client_endpoint_run_binds(tmp_path):
    """Rule: ``doctor --config`` reads the config as ``run`` does: a relative ipc:// client
    endpoint is judged where it binds (the config's folder), not from /."""
    folder = tmp_path / "cfg"
    checks, cfg = check_node(_source(folder))
    line = {c.name: c for c in checks}["node client endpoint"]
    assert cfg.client_bind == "ipc://%s/client.sock" % folder
    assert line.detail.startswith("ipc://%s/client.sock:" % folder), line


def test_a_state_dir_linked_to_nothing_is_named_by_run_and_doctor(tmp_path):
    """Rule: a state_dir that is a link to a missing target (a card not mounted) fails run's
    start-up check and doctor's "node files" and "state dir" lines alike, naming the link,
    its target and the fix (mount or create it); nothing is made at the target."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    os.symlink(str(tmp_path / "card"), str(folder / "state"))
    path = _source(folder)
    want = ("state_dir: %s is a link to nothing (%s): mount or create %s"
            % (folder / "state", tmp_path / "card", tmp_path / "card"))
    cfg = load_config(path)
    with pytest.raises(FileFault) as exc:
        build.preflight(cfg)
    assert str(exc.value) == want
    files = {c.name: c for c in check_node(path)[0]}["node files"]
    assert files.detail == want and files.fix == "mount or create %s" % (tmp_path / "card")
    (line,) = [c for c in check_dirs(Context(state_dir=cfg.state_dir)) if c.name == "state dir"]
    assert line.status == WARN and "a link to nothing (%s)" % (tmp_path / "card") in line.detail
    assert line.fix == "mount or create %s" % (tmp_path / "card")
    assert not os.path.lexists(str(tmp_path / "card"))


def test_a_state_dir_under_a_link_to_nothing_is_named_with_the_link(tmp_path):
    """Rule: a missing state_dir below a dangling link names the link (not "File exists" or
    "not a directory"), whether the check may create folders (run) or not (doctor)."""
    os.symlink("gone", str(tmp_path / "sd"))
    for create in (True, False):
        with pytest.raises(FileFault) as exc:
            check_writable_dir(str(tmp_path / "sd" / "w1"), "state_dir", create)
        assert str(exc.value) == ("state_dir: %s is a link to nothing (%s): mount or create %s"
                                  % (tmp_path / "sd", tmp_path / "gone", tmp_path / "gone"))
    assert not os.path.lexists(str(tmp_path / "gone"))

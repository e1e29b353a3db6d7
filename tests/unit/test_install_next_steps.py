"""`edge-agent install` ends by naming what comes before a start: the node config, its check and,
on a worker, the calibration; starting right after install would start a worker whose rendered
capacity profile does not exist yet (`run` exits 78). A dry run under --root, nothing made."""

from __future__ import annotations

from agent.cli import main


def test_install_names_check_and_calibration_before_the_start(tmp_path, capsys):
    """The last line for an instance without its config: write it, `doctor --config`,
    calibrate, then start, in that order."""
    root = tmp_path / "root"
    assert main(["install", "--root", str(root), "--no-pip", "--no-enable", "--dry-run",
                 "--instance", "fast"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("# next: write %s/etc/edge-agent/fast.toml" % root)
    steps = ["doctor --config", "edge-agent-calibrate", "systemctl start edge-agent@fast"]
    assert [last.find(s) for s in steps] == sorted(last.find(s) for s in steps)
    assert min(last.find(s) for s in steps) > 0

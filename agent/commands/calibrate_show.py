"""``edge-agent calibrate --show``: the calibration profile as a table.

One block per board and L4T release, one row per entry, unavailable modes below. Without
``--bundle`` every entry is a row, named by its bundle and stage. With ``--bundle`` the rows
are that bundle's stages, found by their stage files' sha256 as an agent finds them: an entry
measured under another bundle that shares the stage file is that stage's too (its note says
"measured as stage 3 of BUNDLE"), an entry of this bundle whose stage file changed since is
``STALE``, a stage with no entry in a mode the board was calibrated in is listed below the
rows, and entries of other stage files are counted, not shown.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from calibration.profile_match import cpu_entry, entry_threads

COLUMNS = ("median ms", "p90 ms", "mu FLOP/s", "power W", "GPU MHz", "peak C", "throttled",
           "measured", "note")
STALE_NOTE = "STALE (stage file changed)"


def _fmt(value: Optional[float], scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else "%.*f" % (digits, value * scale)


def _mode(e: Any) -> str:
    return e.power_mode if e.power_mode_id is None else "%s (%d)" % (e.power_mode, e.power_mode_id)


def threads_cell(e: Any) -> str:
    """The entry's engine thread count; "-" where threads do not apply (TensorRT, a GPU
    provider), "?" for a CPU entry that records none."""
    threads = entry_threads(e)
    if threads is not None:
        return "%d" % threads
    return "?" if cpu_entry(e) else "-"


def _measured(e: Any, note: str) -> List[str]:
    gpu = e.clocks.get("gpu_max_khz")
    return [
        _fmt(e.service_time_median_s, 1e3),
        _fmt(e.service_time_p90_s, 1e3),
        "%.3g" % e.capacity_flops,
        _fmt(e.power_avg_w, 1.0, 1),
        _fmt(gpu, 1e-3, 0) if gpu is not None else "-",
        _fmt(max(e.temperature_peak_c.values()), 1.0, 1) if e.temperature_peak_c else "-",
        "yes" if e.throttled else "no",
        e.measured_at,
        note,
    ]


def _block(headers: Sequence[str], rows: List[List[str]]) -> List[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [list(headers)] + rows]


def _bundle_rows(entries: Sequence[Any], bundle: Any) -> Tuple[List[Tuple[tuple, List[str]]],
                                                               int]:
    """(sort key, row) of each entry of ``bundle``'s stages, by stage file hash, and of each
    stale entry of it; and the count of entries of other stage files."""
    by_hash: Dict[str, List[int]] = {}
    for s in bundle.stages:
        by_hash.setdefault(s.sha256, []).append(s.index)
    indices = {s.index for s in bundle.stages}
    rows, others = [], 0
    for e in entries:
        if e.stage_sha256 in by_hash:
            for index in by_hash[e.stage_sha256]:
                note = ("" if (e.bundle, e.stage) == (bundle.name, index)
                        else "measured as stage %d of %s" % (e.stage, e.bundle or "?"))
                rows.append(((e.power_mode, index, e.backend, entry_threads(e) or 0), [
                    _mode(e), "%d" % index, "%s/%s" % (e.backend, e.precision),
                    threads_cell(e)] + _measured(e, note)))
        elif e.bundle == bundle.name and e.stage in indices:
            rows.append(((e.power_mode, e.stage, e.backend, entry_threads(e) or 0), [
                _mode(e), "%d" % e.stage, "%s/%s" % (e.backend, e.precision),
                threads_cell(e)] + _measured(e, STALE_NOTE)))
        else:
            others += 1
    return rows, others


def _not_calibrated(entries: Sequence[Any], rows: List[Tuple[tuple, List[str]]],
                    bundle: Any) -> List[str]:
    """One line per mode the board was calibrated in where some stage of ``bundle`` has no
    entry (a stale one does not count)."""
    lines = []
    for mode in sorted({e.power_mode for e in entries}):
        have = {key[1] for key, row in rows if key[0] == mode and row[-1] != STALE_NOTE}
        missing = [s.index for s in bundle.stages if s.index not in have]
        if missing:
            lines.append("not calibrated in %s: stage(s) %s" % (mode, ",".join(map(str, missing))))
    return lines


def format_table(prof: Any, bundle: Any = None) -> str:
    """The profile ``prof`` as text (see the module docstring); ``bundle``: the loaded bundle
    of ``--bundle``, or None."""
    if bundle is None:
        headers = ("mode", "bundle", "stage", "backend", "threads") + COLUMNS
    else:
        headers = ("mode", "stage", "backend", "threads") + COLUMNS
    lines: List[str] = []
    groups = sorted({(e.board, e.l4t) for e in prof.entries}
                    | {(u.board, u.l4t) for u in prof.unavailable})
    for board, l4t in groups:
        entries = [e for e in prof.entries if (e.board, e.l4t) == (board, l4t)]
        after: List[str] = []
        if bundle is None:
            rows = [((e.power_mode, e.bundle, e.stage, e.backend, entry_threads(e) or 0), [
                _mode(e), e.bundle or "?", "%d" % e.stage, "%s/%s" % (e.backend, e.precision),
                threads_cell(e)] + _measured(e, "")) for e in entries]
        else:
            rows, others = _bundle_rows(entries, bundle)
            after = _not_calibrated(entries, rows, bundle)
            if others:
                after.append("%d %s of other stage files (not of bundle %s) not shown; "
                             "--show without --bundle lists them"
                             % (others, "entry" if others == 1 else "entries", bundle.name))
        rows.sort(key=lambda kr: kr[0])
        lines.append("board: %s   L4T: %s" % (board, l4t))
        lines += _block(headers, [r for _, r in rows])
        lines += after
        for u in prof.unavailable:
            if (u.board, u.l4t) == (board, l4t):
                ident = u.power_mode if u.power_mode_id is None else "%s (%d)" % (
                    u.power_mode, u.power_mode_id)
                lines.append("unavailable: %s: %s (%s)" % (ident, u.reason, u.measured_at))
        lines.append("")
    if not groups:
        lines.append("(no entries)")
    return "\n".join(lines).rstrip() + "\n"

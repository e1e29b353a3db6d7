"""A records file held compactly: every task record's fields in columns, read as mappings.

A long run's ``records.jsonl`` holds hundreds of thousands of task records; a Python dict per
record costs about 2 kB with its values, and a rate's summary reads its records in several
places (1.4 GB for 300,000 tasks), enough to exhaust a workstation or an 8 GB Jetson that
summarises the run. ``RecordsFile`` keeps the records of one file in columns instead, about
250 bytes a task: records with the same keys in the same order (one writer makes a few such
shapes) share a group, whose float and int fields are 8-byte machine numbers and whose other
fields are references to shared values (a status, a source or a reason is stored once per
distinct value). Each record reads back as a ``Record`` (64 bytes each): a read-only mapping
equal to the dict the line decoded to (the same keys in the same order, values of the same
types), so the summaries read it as they read a dict; a reader of whole columns (the delays
behind a delay CDF) takes them as float64 arrays instead (``RecordsFile.numbers``).

``read_records`` gives every reader of one unchanged file (the same bytes) the same
``RecordsFile`` while any of its records is held, so a summary that reads a rate's records in
several places (the delays, the model columns, the fault phases) parses and holds them once.
"""

from __future__ import annotations

import json
import os
import stat
import weakref
import zlib
from array import array
from collections.abc import Mapping
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

from agent.config.fields import is_finite
from agent.errors import UsageError
from agent.testbed.reportcheck import is_record

if TYPE_CHECKING:  # only named in annotations: numpy is imported where arrays are made
    import numpy as np  # noqa: F401

# distinct strings a column shares before it is taken for one of unique values (task ids,
# details with numbers in them): past this, each value is kept as it came
SHARED_VALUES_MAX = 4096


_OPEN = "open"  # a column that has held only nulls so far: its kind is not known yet
_TYPECODES = {float: "d", int: "q"}  # column kinds held as machine numbers, 8 bytes each
_INT64 = (-(1 << 63), (1 << 63) - 1)
BATCH_ROWS = 4096  # rows a group takes before it moves them into its columns


def _fits(kind: type, vals) -> bool:
    """Whether ``vals`` (of ``kind``, or null) fit its machine numbers: an int column's, 64
    bits."""
    if kind is not int:
        return True
    ints = [v for v in vals if v is not None]
    return not ints or _INT64[0] <= min(ints) and max(ints) <= _INT64[1]


class _Group:
    """The records of one shape (their keys, in order): one column per key.

    A column of floats (or of ints) is an array of machine numbers, its nulls marked in a
    bytearray (``nulls``) made at its first null; at its first value of any other type (a bool,
    a string, an int beyond 64 bits) it becomes a list for good, so every value reads back as it
    was written. A list column shares its repeated strings. Rows are taken in batches of
    ``BATCH_ROWS``, a column at a time (``flush``)."""

    __slots__ = ("index", "keys", "pos", "cols", "kinds", "nulls", "shared", "n", "pending")

    def __init__(self, index: int, keys: Tuple[str, ...]):
        self.index = index  # its place among the file's groups
        self.keys = keys
        self.pos = {k: i for i, k in enumerate(keys)}
        self.cols: List = [[] for _ in keys]
        self.kinds: List = [_OPEN] * len(keys)  # float or int: an array; None: a list
        self.nulls: List[Optional[bytearray]] = [None] * len(keys)
        self.shared: List[Optional[Dict]] = [{} for _ in keys]
        self.n = 0  # rows in the columns
        self.pending: List[tuple] = []  # rows not yet in the columns

    def add(self, values) -> int:
        """Take one record's values (in ``keys`` order); its row."""
        self.pending.append(tuple(values))
        if len(self.pending) >= BATCH_ROWS:
            self.flush()
        return self.n + len(self.pending) - 1

    def flush(self) -> None:
        """Move the pending rows into the columns."""
        if not self.pending:
            return
        for j, vals in enumerate(zip(*self.pending)):
            self._extend(j, vals)
        self.n += len(self.pending)
        self.pending = []

    def _extend(self, j: int, vals: tuple) -> None:
        kind, types = self.kinds[j], set(map(type, vals))
        col, mask = self.cols[j], self.nulls[j]
        if kind is _OPEN and types == {type(None)}:
            col.extend(vals)
        elif kind in _TYPECODES and types <= {kind, type(None)} and _fits(kind, vals):
            if type(None) in types:
                if mask is None:
                    mask = self.nulls[j] = bytearray(len(col))
                mask.extend(bytes([v is None for v in vals]))
                col.extend([0 if v is None else v for v in vals])
            else:
                col.extend(vals)
                if mask is not None:
                    mask.extend(bytes(len(vals)))
        elif kind is None:
            memo = self.shared[j]
            if memo is not None and str in types:
                vals = [memo.setdefault(v, v) if type(v) is str else v for v in vals]
                if len(memo) > SHARED_VALUES_MAX:
                    self.shared[j] = None
            col.extend(vals)
        else:  # a column whose kind is settled or changes here: value by value
            for v in vals:
                self._append(j, v)

    def _append(self, j: int, v) -> None:
        kind, t = self.kinds[j], type(v)
        if kind is _OPEN and v is not None:
            kind = self._settle(j, t)
        if kind is not None and kind is not _OPEN:
            if v is None:
                if self.nulls[j] is None:
                    self.nulls[j] = bytearray(len(self.cols[j]))
                self.nulls[j].append(1)
                self.cols[j].append(0)
                return
            if t is kind and _fits(kind, (v,)):
                self.cols[j].append(v)
                if self.nulls[j] is not None:
                    self.nulls[j].append(0)
                return
            self._to_list(j)
        if t is str:
            memo = self.shared[j]
            if memo is not None:
                v = memo.setdefault(v, v)
                if len(memo) > SHARED_VALUES_MAX:
                    self.shared[j] = None
        self.cols[j].append(v)

    def _settle(self, j: int, t: type):
        """Column ``j``'s kind at its first value that is no null, of type ``t``."""
        code = _TYPECODES.get(t)
        if code is None:
            self.kinds[j] = None
            return None
        n = len(self.cols[j])  # the nulls before it (an open column holds only nulls)
        self.cols[j] = array(code, bytes(8 * n))
        self.nulls[j] = bytearray(b"\x01" * n) if n else None
        self.kinds[j] = t
        return t

    def _to_list(self, j: int) -> None:
        col, mask = self.cols[j].tolist(), self.nulls[j]
        if mask is not None:
            for i, null in enumerate(mask):
                if null:
                    col[i] = None
        self.cols[j], self.kinds[j], self.nulls[j] = col, None, None

    def value(self, p: int, row: int):
        """The value of column ``p`` in ``row``."""
        mask = self.nulls[p]
        if mask is not None and mask[row]:
            return None
        return self.cols[p][row]


class Record(Mapping):
    """One task record of a ``RecordsFile``: a read-only mapping equal to its decoded line."""

    __slots__ = ("_g", "_r", "_f")

    def __init__(self, group: _Group, row: int, owner: "RecordsFile"):
        self._g = group
        self._r = row
        self._f = owner  # keeps the file's records (and its cache entry) alive while held

    def __getitem__(self, key):
        p = self._g.pos.get(key)
        if p is None:
            raise KeyError(key)
        return self._g.value(p, self._r)

    def get(self, key, default=None):
        """The value of ``key``, or ``default`` when the record has no such key."""
        g = self._g
        p = g.pos.get(key)
        if p is None:
            return default
        mask = g.nulls[p]
        if mask is not None and mask[self._r]:
            return None
        return g.cols[p][self._r]

    def __contains__(self, key) -> bool:
        return key in self._g.pos

    def __iter__(self) -> Iterator[str]:
        return iter(self._g.keys)

    def __len__(self) -> int:
        return len(self._g.keys)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class RecordsFile:
    """The task records of one file, in file order, and the numbers of its damaged lines."""

    __slots__ = ("groups", "order", "count", "bad", "size", "crc", "_last", "__weakref__")

    def __init__(self):
        self.groups: Dict[Tuple[str, ...], _Group] = {}
        # per record, in file order: group number * 2^32 + row; None while all have one shape
        self.order: Optional[array] = None
        self.count = 0
        self.bad: List[int] = []
        self.size = 0  # bytes read, and their CRC-32: what a later reader checks it against
        self.crc = 0
        self._last: Optional[_Group] = None

    def add(self, rec: dict) -> None:
        """Append one decoded task record."""
        keys = tuple(rec)
        g = self._last
        if g is None or g.keys != keys:
            g = self.groups.get(keys)
            if g is None:
                if self.groups and self.order is None:  # a second shape: place every record
                    self.order = array("q", range(self.count))
                g = self.groups[keys] = _Group(len(self.groups), keys)
            self._last = g
        row = g.add(rec.values())
        if self.order is not None:
            self.order.append((g.index << 32) | row)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def records(self) -> List[Record]:
        """Every record, in file order (a new list: the caller may change it)."""
        groups = self._flushed()
        if self.order is None:
            return [Record(g, r, self) for g in groups for r in range(g.n)]
        return [Record(groups[o >> 32], o & 0xFFFFFFFF, self) for o in self.order]

    def _flushed(self) -> List[_Group]:
        groups = list(self.groups.values())
        for g in groups:
            g.flush()
        return groups

    def _in_order(self, parts: list, dtype) -> "np.ndarray":
        """One array in file order from one array per group (its rows in row order)."""
        import numpy as np

        if self.order is None:  # one shape: its rows are the file's order
            return parts[0] if parts else np.zeros(0, dtype)
        starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        order = np.frombuffer(self.order, dtype=np.int64) if len(self.order) else \
            np.zeros(0, np.int64)
        return np.concatenate(parts)[starts[order >> 32] + (order & 0xFFFFFFFF)]

    def numbers(self, key: str) -> "np.ndarray":
        """``key`` of every record in file order as float64: NaN where the record has no such
        key, holds null or holds no number (a bool, a string). A number column is converted
        whole, so a summary of hundreds of thousands of records reads no ``Record``."""
        import numpy as np

        parts = []
        for g in self._flushed():
            p = g.pos.get(key)
            kind = g.kinds[p] if p is not None else _OPEN
            if kind in _TYPECODES:
                col = np.array(g.cols[p], dtype=np.float64)
                if g.nulls[p] is not None:
                    col[np.frombuffer(bytes(g.nulls[p]), dtype=np.uint8).astype(bool)] = np.nan
            elif kind is None:  # a list column: value by value
                col = np.array([float(v) if type(v) is float or type(v) is int and is_finite(v)
                                else np.nan for v in g.cols[p]], dtype=np.float64)
            else:  # absent, or only nulls
                col = np.full(g.n, np.nan)
            parts.append(col)
        return self._in_order(parts, np.float64)

    def equals(self, key: str, value) -> "np.ndarray":
        """Per record in file order, whether ``record.get(key) == value`` (a bool array)."""
        import numpy as np

        parts = []
        for g in self._flushed():
            p = g.pos.get(key)
            if p is None:  # get gives None
                parts.append(np.full(g.n, bool(None == value)))
            elif g.kinds[p] is None:
                parts.append(np.array([v == value for v in g.cols[p]], dtype=bool))
            else:
                parts.append(np.array([g.value(p, r) == value for r in range(g.n)], dtype=bool))
        return self._in_order(parts, bool)


# (device, inode, size, modification time ns) of a file -> its records while any is held
_CACHE: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
_CHUNK_BYTES = 1 << 20
_DECODE = json.JSONDecoder().decode  # json.loads of a str, less its argument checks


def _same_bytes(f, held: RecordsFile) -> bool:
    """Whether open file ``f`` holds the bytes ``held`` was read from (its size and CRC-32: a
    file rewritten in place within one tick of the clock keeps its size and time)."""
    f.seek(0)
    size, crc = 0, 0
    for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    f.seek(0)
    return size == held.size and crc == held.crc


def read_records(path: str, bad: Optional[List[int]] = None) -> List[Record]:
    """Read a records file: its task records, in order, each a read-only mapping equal to the
    dict its line decodes to (held in columns, ``RecordsFile``; readers of one unchanged file
    share them while any is held, so it is parsed once).

    A torn last line (no newline at its end: the writer was killed mid-line) is skipped. Other
    lines that are no task record (not JSON, not an object, or without the fields
    ``is_record`` needs) are skipped too, and their line numbers appended to ``bad`` when
    given; blank lines carry no task and are passed over. Anything else that is not a records
    file raises ``UsageError`` naming it: missing, not a regular file (a folder, a FIFO),
    unreadable, or not UTF-8 text (binary) anywhere but in a torn last line.
    """
    return read_records_file(path, bad).records()


def read_records_file(path: str, bad: Optional[List[int]] = None) -> RecordsFile:
    """The ``RecordsFile`` ``read_records`` reads its records from (shared with every reader
    of the same unchanged file while it or any of its records is held): for a reader of whole
    columns (``RecordsFile.numbers``). Damaged lines and errors as ``read_records``."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError("%s: not a records file (%s)" % (
                path, "a folder" if stat.S_ISDIR(mode) else "not a regular file"))
        f = open(path, "rb")
    except FileNotFoundError:
        raise UsageError("%s: no records file (did the source start?)" % path) from None
    except OSError as exc:
        raise UsageError("%s: cannot read the records file: %s" % (path, exc.strerror or exc)
                         ) from None
    with f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        held = _CACHE.get(key)
        if held is None or not _same_bytes(f, held):
            held = _CACHE[key] = _parse_records(path, f)
    if bad is not None:
        bad.extend(held.bad)
    return held


def _parse_records(path: str, f) -> RecordsFile:
    """The task records and damaged line numbers of the open records file ``f`` (line by line:
    only the records' columns are held)."""
    out = RecordsFile()
    add, crc32, decode, size, crc = out.add, zlib.crc32, _DECODE, 0, 0
    for no, raw in enumerate(f, start=1):
        size += len(raw)
        crc = crc32(raw, crc)
        torn = not raw.endswith(b"\n")  # only the last line can lack its newline
        try:
            obj = decode(raw.decode("utf-8"))
        except UnicodeDecodeError:
            if raw.lstrip().startswith(b"{") and torn:
                continue  # the last line, torn inside a multi-byte character
            raise UsageError("%s: not a records file (line %d is not UTF-8 text)"
                             % (path, no)) from None
        except (ValueError, RecursionError):
            if not torn and raw.strip():
                out.bad.append(no)
            continue  # blank, torn, or damaged (counted above)
        if is_record(obj):
            add(obj)
        else:
            out.bad.append(no)
    out.size, out.crc = size, crc
    return out

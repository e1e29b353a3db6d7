"""Typed access to the fields of a bundle manifest, each fault one line naming the manifest and
the field path (``stages[2].input.shape``): what ``engines.bundle`` parses a manifest with."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import numpy as np

from agent.config.fields import Fields
from agent.protocol.wire import MAX_DIMS
from engines.bundle_files import EXTERNAL_DATA_KEYS

MAX_ELEMENTS = 2 ** 32  # elements of one stage tensor at most (a shape beyond is not a model's)


class ManifestFields:
    """Typed field access with ``error`` (one line) naming the manifest and the field path."""

    def __init__(self, where: str, error: Type[Exception]):
        self.where = where
        self.error = error

    def get(self, obj: Dict[str, Any], key: str, kind, ctx: str, optional: bool = False):
        """``obj[key]``, of type ``kind``; None when absent and ``optional``."""
        label = "%s.%s" % (ctx, key) if ctx else key
        if key not in obj or obj[key] is None:
            if optional:
                return None
            raise self.error("%s: missing field %s" % (self.where, label))
        value = obj[key]
        # bool is an int subclass in Python; a JSON true is never a valid count
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error("%s: field %s has the wrong type (%r)" % (self.where, label, value))
        return value

    def known(self, obj: Dict[str, Any], keys: Sequence[str], ctx: str) -> None:
        """Refuse a key outside ``keys`` (a misspelt optional field would be read as absent),
        suggesting the closest one."""
        try:
            Fields(obj, ctx, self.error).reject_unknown(keys)
        except self.error as exc:
            raise self.error("%s: %s" % (self.where, exc)) from None

    def shape(self, obj, key: str, ctx: str) -> Tuple[int, ...]:
        """A tensor shape: positive dimensions, batch dimension 1, at most 2^32 elements."""
        raw = self.get(obj, key, list, ctx)
        if not raw or len(raw) > MAX_DIMS or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2 ** 31 for d in raw):
            raise self.error("%s: field %s.%s must be a list of at most %d positive integers "
                             "below 2^31, got %.200r" % (self.where, ctx, key, MAX_DIMS, raw))
        if math.prod(raw) > MAX_ELEMENTS:
            raise self.error("%s: field %s.%s holds more than 2^32 elements: %r"
                             % (self.where, ctx, key, raw))
        if raw[0] != 1:
            raise self.error("%s: field %s.%s must have batch dimension 1, got %r"
                             % (self.where, ctx, key, raw))
        return tuple(raw)

    def dtype(self, obj, key: str, ctx: str) -> str:
        """The numpy name of a number or bool dtype (what a tensor on the wire can be)."""
        raw = self.get(obj, key, str, ctx)
        try:
            dt = np.dtype(raw)
        except (TypeError, ValueError, SyntaxError):  # numpy: SyntaxError for a digit string
            # past Python's 4,300-digit limit
            raise self.error("%s: field %s.%s is not a numpy dtype: %r" % (self.where, ctx, key, raw))
        if dt.kind not in "biuf" or dt.fields is not None:  # what a tensor on the wire can be
            raise self.error("%s: field %s.%s must be a number or bool dtype, got %r"
                             % (self.where, ctx, key, raw))
        return dt.name

    def side_files(self, obj: Dict[str, Any], ctx: str) -> Optional[Tuple[Tuple[str, str], ...]]:
        """A stage's ``external_data`` as (file, sha256) pairs; None when the field is absent."""
        raw = self.get(obj, "external_data", list, ctx, optional=True)
        if raw is None:
            return None
        pairs = []
        for i, entry in enumerate(raw):
            where = "%s.external_data[%d]" % (ctx, i)
            if not isinstance(entry, dict):
                raise self.error("%s: %s must be an object" % (self.where, where))
            self.known(entry, EXTERNAL_DATA_KEYS, where)
            pairs.append((self.get(entry, "file", str, where),
                          self.get(entry, "sha256", str, where)))
        return tuple(pairs)


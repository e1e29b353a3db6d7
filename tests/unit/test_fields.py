"""The typed-field reader: types, ranges, unknown keys; every error names the full path and
the value."""

import pytest

from agent.config.fields import Fields
from agent.errors import UsageError


class FileError(UsageError):
    """Stands for a caller's own error class (ScenarioError, TopologyError, ...)."""


def _fields(obj, where="scenario.workers[2]"):
    return Fields(obj, where, FileError)


@pytest.mark.parametrize("call, message", [
    (lambda f: f.num("rate"), "scenario.workers[2].rate: must be a finite number, got 'fast'"),
    (lambda f: f.num("nan"), "scenario.workers[2].nan: must be a finite number, got nan"),
    (lambda f: f.num("flag"), "scenario.workers[2].flag: must be a finite number, got True"),
    (lambda f: f.int("stage", lo=1, hi=3),
     "scenario.workers[2].stage: must be an integer in [1, 3], got 0"),
    (lambda f: f.int("share", lo=1),
     "scenario.workers[2].share: must be an integer >= 1, got 0.5"),
    (lambda f: f.str("name", choices=("newton", "paper")),
     "scenario.workers[2].name: must be one of newton|paper, got 'newtn'"),
    (lambda f: f.str("empty", non_empty=True),
     "scenario.workers[2].empty: must be a non-empty string, got ''"),
    (lambda f: f.bool("stage"), "scenario.workers[2].stage: must be true or false, got 0"),
    (lambda f: f.list("rate"), "scenario.workers[2].rate: must be a list, got 'fast'"),
    (lambda f: f.list("items", min_len=3),
     "scenario.workers[2].items: must list at least 3 items, got [1, 2]"),
    (lambda f: f.table("rate", shape="an object {mode: FLOP/s}"),
     "scenario.workers[2].rate: must be an object {mode: FLOP/s}, got 'fast'"),
    (lambda f: f.tables("items"), "scenario.workers[2].items[0]: must be a table/object, got 1"),
    (lambda f: f.table("nested").num("x", hi=1.0), "scenario.workers[2].nested.x: must be <= 1, got 2"),
    (lambda f: f.num("absent"), "scenario.workers[2].absent: missing"),
])
def test_every_error_names_the_full_field_path_and_the_value(call, message):
    """An error is the caller's class, one line: ``where.key: what it must be, got <value>``."""
    f = _fields({"rate": "fast", "nan": float("nan"), "flag": True, "stage": 0, "share": 0.5,
                 "name": "newtn", "empty": "", "items": [1, 2], "nested": {"x": 2}})
    with pytest.raises(FileError) as exc:
        call(f)
    assert str(exc.value) == message


def test_top_level_fields_are_named_by_their_key_alone():
    """With an empty ``where`` (the top of a file) the path is just the key, and list items
    are ``key[i]``."""
    f = Fields({"tradeoff": 1.5, "links": [{"rate": -1}]}, "", FileError)
    with pytest.raises(FileError, match=r"^tradeoff: must be in \[0, 1\], got 1\.5$"):
        f.num("tradeoff", lo=0.0, hi=1.0)
    with pytest.raises(FileError, match=r"^links\[0\]\.rate: must be > 0, got -1$"):
        f.tables("links")[0].num("rate", lo=0.0, lo_open=True)


def test_unknown_keys_are_rejected_with_the_closest_known_name():
    """A typo is an error naming the full path, the closest allowed name and every known one."""
    f = _fields({"rate": 1.0, "capacty": 2.0})
    with pytest.raises(FileError) as exc:
        f.reject_unknown(("rate", "capacity", "stage"))
    assert str(exc.value) == ("scenario.workers[2].capacty: unknown field (did you mean "
                              "'capacity'?); known: capacity, rate, stage")
    with pytest.raises(FileError, match=r"\.zzz: unknown field; known: rate$"):
        _fields({"zzz": 1}).reject_unknown(["rate"])
    _fields({"rate": 1.0}).reject_unknown(["rate", "stage"])  # known keys pass


def test_list_items_with_unknown_fields_are_rejected_by_their_index():
    """``tables(..., known=...)`` names the item by its index: ``where.key[i].field``."""
    good = Fields({"links": [{"from": "a", "to": "b"}]}, "", FileError)
    assert [t.value("from") for t in good.tables("links", known=("from", "to"))] == ["a"]
    f = Fields({"links": [{"from": "a"}, {"form": "b"}]}, "", FileError)
    with pytest.raises(FileError,
                       match=r"^links\[1\]\.form: unknown field \(did you mean 'from'\?\)"):
        f.tables("links", known=("from", "to"))


@pytest.mark.parametrize("value, lo_open, hi_open, ok", [
    (0.0, False, False, True), (1.0, False, False, True),
    (0.0, True, False, False), (1.0, True, False, True),
    (0.0, False, True, True), (1.0, False, True, False),
    (0.5, True, True, True), (-0.1, False, False, False), (1.1, False, False, False),
])
def test_ranges_include_or_exclude_their_ends_as_asked(value, lo_open, hi_open, ok):
    """[lo, hi] includes both ends; an open end excludes exactly that end, and the message
    writes the interval with the matching bracket."""
    f = _fields({"x": value})
    if ok:
        assert f.num("x", lo=0.0, hi=1.0, lo_open=lo_open, hi_open=hi_open) == value
        return
    want = "%s0, 1%s" % ("(" if lo_open else "[", ")" if hi_open else "]")
    with pytest.raises(FileError) as exc:
        f.num("x", lo=0.0, hi=1.0, lo_open=lo_open, hi_open=hi_open)
    assert str(exc.value) == "scenario.workers[2].x: must be in %s, got %r" % (want, value)


def test_one_sided_ranges_say_which_side():
    """A lower bound alone reads ``> lo`` or ``>= lo``; an upper bound alone ``< hi``/``<= hi``."""
    f = _fields({"x": 0})
    with pytest.raises(FileError, match=r"\.x: must be > 0, got 0$"):
        f.num("x", lo=0, lo_open=True)
    with pytest.raises(FileError, match=r"\.x: must be < 0, got 0$"):
        f.num("x", hi=0, hi_open=True)
    assert f.num("x", lo=0) == 0.0 and f.num("x", hi=0) == 0.0


def test_defaults_apply_only_to_absent_fields():
    """An absent field takes its default; a present one is checked even when a default exists."""
    f = _fields({"rate": "fast"})
    assert f.num("slot_s", 2.0) == 2.0 and f.str("host", "127.0.0.1") == "127.0.0.1"
    assert f.num("capacity", None) is None and f.table("knobs", {}).obj == {}
    with pytest.raises(FileError, match=r"\.rate: must be a finite number, got 'fast'"):
        f.num("rate", 1.0)


def test_accepted_values_come_back_typed():
    """Ints are accepted as numbers (returned as float); integers stay int; paths resolve."""
    f = _fields({"rate": 3, "stage": 2, "ok": False, "bundle": "sub/b", "items": [{"a": 1}]})
    assert f.num("rate") == 3.0 and isinstance(f.num("rate"), float)
    assert f.int("stage", lo=1) == 2 and f.bool("ok") is False
    assert f.file_path("bundle", "/base") == "/base/sub/b"
    assert f.tables("items")[0].where == "scenario.workers[2].items[0]"
    assert f.value("stage") == 2 and f.has("ok") and not f.has("nope")


def test_non_mapping_input_is_an_error_naming_where():
    """A reader over something that is not a mapping fails naming its own path."""
    with pytest.raises(FileError, match=r"^scenario\.workers\[2\]: must be a table/object, got 3"):
        _fields(3)

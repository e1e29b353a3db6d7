"""``freeze_startup_objects``: what start-up built leaves the collector's passes; what serving
makes afterwards is still collected (cycles included)."""

from __future__ import annotations

import gc
import weakref

from agent.ops.collector import freeze_startup_objects


class _Node:
    """A tracked container that can sit in a reference cycle."""

    def __init__(self):
        self.other = None


def test_start_up_objects_are_frozen_and_later_garbage_cycles_are_still_collected():
    """Rule: after the call, objects alive at start-up are no longer walked by collections
    (in the permanent generation), and a reference cycle made while serving is still freed."""
    startup = _Node()
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is startup for o in gc.get_objects())
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
    assert any(o is startup for o in gc.get_objects())  # back in the generations once thawed

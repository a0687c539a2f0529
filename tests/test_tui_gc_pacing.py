"""Full garbage collections wait for a pause in the keys while a session is shown (tui/gc_pacing.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tui_helpers import settle

from stop_tui.tui import gc_pacing
from stop_tui.tui.app import StopApp
from stop_tui.tui.gc_pacing import GcPacer
from stop_tui.tui.synthetic import write_session


class Cycle:
    def __init__(self) -> None:
        self.me = self


def old_cycle() -> weakref.ref:
    """Cyclic garbage in the oldest generation: only a full collection frees it."""
    obj = Cycle()
    gc.collect(1)  # alive: promoted to generation 2
    ref = weakref.ref(obj)
    del obj
    return ref


def young_collections(n: int) -> None:
    for _ in range(n):
        gc.collect(1)  # each counts once towards the next full collection


def test_a_due_full_collection_waits_until_the_keys_pause():
    now = [1000.0]
    pacer = GcPacer(clock=lambda: now[0])
    before = gc.get_threshold()
    pacer.start()
    try:
        assert gc.get_threshold()[2] == gc_pacing.NEVER and gc.get_threshold()[:2] == before[:2]
        garbage = old_cycle()
        young_collections(gc_pacing.MIN_YOUNG)
        assert garbage() is not None  # young collections never free it
        pacer.input()
        assert not pacer.tick() and garbage() is not None  # a key just came
        now[0] += gc_pacing.IDLE / 2
        assert not pacer.tick() and garbage() is not None
        now[0] += gc_pacing.IDLE
        assert pacer.tick() and garbage() is None
        assert pacer.full_collections == 1
        assert not pacer.tick()  # nothing is due right after one
    finally:
        pacer.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_full_collection_runs_anyway_once_enough_has_piled_up():
    now = [1000.0]
    pacer = GcPacer(clock=lambda: now[0])
    pacer.start()
    try:
        garbage = old_cycle()
        young_collections(gc_pacing.MIN_YOUNG)
        pacer.input()
        assert not pacer.tick()
        young_collections(gc_pacing.FORCE_YOUNG)
        pacer.input()  # keys keep coming
        assert pacer.tick() and garbage() is None
    finally:
        pacer.stop()


def test_no_full_collection_while_a_log_is_read_unless_forced():
    now = [1000.0]
    pacer = GcPacer(clock=lambda: now[0])
    pacer.start()
    try:
        pacer.held = True
        garbage = old_cycle()
        young_collections(gc_pacing.MIN_YOUNG)
        now[0] += 2 * gc_pacing.IDLE  # no keys: it would be due
        assert not pacer.tick() and garbage() is not None
        young_collections(gc_pacing.FORCE_YOUNG)
        assert pacer.tick() and garbage() is None
    finally:
        pacer.stop()


def test_what_is_alive_at_start_is_frozen_until_thawed():
    pacer = GcPacer()
    alive = Cycle()
    pacer.start()
    try:
        assert gc.get_freeze_count() > 0
        assert not any(o is alive for o in gc.get_objects())  # no collection walks it
        pacer.thaw()
        assert any(o is alive for o in gc.get_objects())
        assert gc.get_threshold()[2] == gc_pacing.NEVER  # still paced
    finally:
        pacer.stop()


def test_the_app_paces_collections_while_a_session_is_shown_and_restores_them_after(tmp_path):
    store = write_session(tmp_path, "paced", iterations=2)
    before = gc.get_threshold()

    async def main() -> None:
        app = StopApp(store=store, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert gc.get_threshold()[2] == gc_pacing.NEVER
            assert gc.get_freeze_count() > 0
            garbage = old_cycle()
            young_collections(gc_pacing.MIN_YOUNG)
            deadline = asyncio.get_running_loop().time() + 10
            while garbage() is not None and asyncio.get_running_loop().time() < deadline:
                await pilot.pause(0.1)
            assert garbage() is None  # freed by the app's own full collection, once idle
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0

    asyncio.run(main())

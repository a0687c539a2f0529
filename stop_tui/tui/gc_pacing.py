"""Garbage collection paced around the keys (no Textual here; the app calls it).

Two things make CPython's automatic full collections cost a key its repaint on a large live
session: the session's model is hundreds of thousands of objects that live as long as the
view, and every frame leaves cyclic garbage that only the collector frees (a Textual Strip
whose crop or length is already right keeps itself in its own cache). A full collection walks
every object it has not been told to skip; under a 2,000 events/s feed on the 50,000-event
session they came every few seconds and took 50-250 ms, whichever key was being drawn then.

So, from the app's start (`start()`) to its end (`stop()`):
- what is alive at `start()` is frozen (the interpreter, Textual and the app as built; the
  app calls it again once a session's log is drawn, freezing its model): no collection walks
  it again; `thaw()` (a session view closed) makes it collectable again;
- young collections stay automatic (they walk only recent objects, a millisecond or so);
- full collections are no longer automatic: `tick()` (the UI's timer) runs one once CPython's
  own rule says one is due (a quarter more long-lived objects than the last one left), no key
  came for IDLE seconds and no session log is being read (`held`: the model it builds is
  frozen once read instead of walked again and again while it grows), or at once, keys or
  not, after FORCE_YOUNG young collections, so memory stays bounded however long someone
  types or a log takes to read.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

IDLE = 0.5  # seconds without input before a due full collection runs
NEVER = 2**30  # a generation-2 threshold no count reaches: no automatic full collection
MIN_YOUNG = 10  # generation-1 collections between two looks at what is pending (CPython's threshold)
FORCE_YOUNG = 100  # generation-1 collections since the last full one after which one runs anyway


class GcPacer:
    """Owned by the app; every method is called from the UI thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._saved: tuple[int, int, int] | None = None  # the thresholds before start()
        self._base = 0  # non-frozen long-lived objects left by the last full collection
        self._checked = 0  # gc.get_count()[2] when what is pending was last counted...
        self._due = False  # ...and whether that made a full collection due
        self.last_input = 0.0
        self.held = False  # a session's log is being read: only forced full collections
        self.full_collections = 0  # run by tick()

    @property
    def active(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        """Freeze what is alive now and take full collections off the automatic schedule (again:
        freeze what has come alive since)."""
        if self._saved is None:
            self._saved = gc.get_threshold()
            gc.set_threshold(self._saved[0], self._saved[1], NEVER)
        gc.freeze()
        self._base, self._checked, self._due = 0, 0, False

    def thaw(self) -> None:
        """What was frozen can be collected again (a session view closed); still paced."""
        gc.unfreeze()
        self._checked, self._due = 0, False

    def stop(self) -> None:
        """The collector as it was, and what was frozen collectable again."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        self.held = False
        gc.unfreeze()

    def input(self) -> None:
        """A key or a click came in."""
        self.last_input = self._clock()

    def due(self) -> bool:
        """A full collection is due by CPython's rule: a quarter more long-lived objects than
        the last one left (counted at most every MIN_YOUNG young collections: counting walks
        the list of them)."""
        young = gc.get_count()[2]
        if self._saved is None:
            return False
        if young - self._checked >= MIN_YOUNG:
            self._checked = young
            pending = len(gc.get_objects(generation=2)) - self._base
            self._due = pending > self._base / 4
        return self._due

    def tick(self) -> bool:
        """Run a full collection if one is due, no key came for IDLE seconds and no log is
        being read, or if FORCE_YOUNG young collections have promoted objects since the last;
        True if it ran."""
        if self._saved is None:
            return False
        forced = gc.get_count()[2] >= FORCE_YOUNG
        if not forced and (self.held or self._clock() - self.last_input < IDLE or not self.due()):
            return False
        gc.collect()
        self._base = len(gc.get_objects(generation=2))
        self._checked, self._due = 0, False
        self.full_collections += 1
        return True

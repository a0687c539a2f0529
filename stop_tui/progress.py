"""The headless progress printer for `stop-tui run`: rich live lines on a terminal, plain lines
otherwise. It listens to engine events, and asks the LM service which requests are still waiting
for their server (a plain line every WAIT_NOTICE seconds, or the live status line); it never
imports Textual."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from stop_tui.engine import events as ev
from stop_tui.engine.history import describe
from stop_tui.engine.untrusted import printable

Waiting = Callable[[], list[tuple[str, str, float]]]  # LMService.waiting
WAIT_NOTICE = 15.0  # seconds a request waits before a line says so (then again every 15 s)


def describe_waiting(rows: list[tuple[str, str, float]], at_least: float = 0.0) -> str | None:
    """"waiting for URL 45 s (PATH)" for the request waiting longest, if past `at_least`."""
    if not rows or rows[0][2] < at_least:
        return None
    path, target, seconds = rows[0]
    more = f", {len(rows) - 1} more request(s) out" if len(rows) > 1 else ""
    return f"waiting for {target} {seconds:.0f} s ({path}{more})"


class _Ticker:
    """Calls `tick` every `every` seconds in a daemon thread until stopped."""

    def __init__(self, every: float, tick: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._every, self._tick = every, tick
        self._thread = threading.Thread(target=self._loop, daemon=True, name="progress-tick")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._tick()

    def stop(self) -> None:
        self._stop.set()


class PlainPrinter:
    def __init__(self, stream: TextIO = sys.stderr, waiting: Waiting | None = None,
                 every: float = WAIT_NOTICE) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._waiting = waiting
        self._every = every
        self._ticker = _Ticker(every, self._tick) if waiting is not None else None

    def __call__(self, event: ev.Event) -> None:
        line = describe(event)
        if line:
            self._print(line)

    def _print(self, line: str) -> None:
        with self._lock:
            print(printable(line), file=self.stream, flush=True)

    def _tick(self) -> None:
        line = describe_waiting(self._waiting(), self._every) if self._waiting else None
        if line:
            self._print(line)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()


class RichPrinter:
    """Event lines scroll above a live status line (LM totals, current node)."""

    def __init__(self, waiting: Waiting | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self._status = "starting"
        self._waiting = waiting
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
        self._live.start()
        self._lock = threading.Lock()
        self._ticker = _Ticker(1.0, self._tick) if waiting is not None else None

    def _render(self):
        from rich.text import Text

        text = Text(self._status, style="bold cyan")
        line = describe_waiting(self._waiting(), 5.0) if self._waiting else None
        if line:
            text.append(f"\n{line}", style="yellow")
        return text

    def _tick(self) -> None:
        with self._lock:
            self._live.update(self._render())

    def __call__(self, event: ev.Event) -> None:
        line = describe(event)
        with self._lock:
            if event.kind == ev.BUDGET:
                b = event.payload
                cost = f", ${b.cost_usd:.4f}" if isinstance(b.cost_usd, int | float) else ""
                self._status = (f"LM: {b.calls} calls, {b.completions} completions, "
                                f"{b.prompt_tokens} in / {b.completion_tokens} out tokens{cost}  [{event.path}]")
            elif event.kind in (ev.LM_REQUEST, ev.RUN_STARTED, ev.CANDIDATE_PROPOSED):
                self._status = self._status.split("  [")[0] + f"  [{event.path}: {event.kind.replace('_', ' ')}]"
            if line:
                self.console.print(printable(line), markup=False, highlight=False)
            self._live.update(self._render())

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self._live.stop()


def make_printer(quiet: bool = False, waiting: Waiting | None = None):
    if quiet:
        return None
    return RichPrinter(waiting) if sys.stderr.isatty() else PlainPrinter(waiting=waiting)

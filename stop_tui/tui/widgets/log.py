"""The Log pane: engine events as one line each, newest last, capped.

A line-API scroll view: a batch of events is kept as plain tuples and only the lines on screen
are ever turned into styled strips (each once, cached by its number), so a burst of events
costs the UI one size update and one repaint, not a render per line (as RichLog's did)."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from rich.cells import cell_len
from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from stop_tui.engine.untrusted import printable
from stop_tui.tui import model as m
from stop_tui.tui.palette import palette

MAX_LINES = 2000
MAX_PER_UPDATE = 60  # a burst of events shows its newest lines (the database keeps them all)
PATH_WIDTH = 18


class _Line(NamedTuple):
    stamp: str
    path: str
    text: str
    level: str  # info | good | bad | warn | dim; "" for the pane's own notes (muted)


def _stamp(rel: float) -> str:
    minutes, seconds = divmod(int(rel), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class LogPane(ScrollView, can_focus=True):
    HELP = """\
## Log

Engine events, newest last (the last 2,000 are kept on screen; the session's database keeps
them all). Times are from the start of the session.
"""

    DEFAULT_CSS = "LogPane { overflow: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.t0: float | None = None
        self._lines: deque[_Line] = deque(maxlen=MAX_LINES)
        self._first = 0  # the number of the oldest line kept (lines are numbered from 0 on)
        self._width = 0
        self._strips: LRUCache[int, Strip] = LRUCache(256)
        self._colors: dict[str, str] = {}
        self._follow = True  # the newest line is in view: new lines keep it so

    def on_mount(self) -> None:
        self.border_title = "Log"

    @property
    def lines(self) -> list[str]:
        """The lines kept, as plain text (what a user reads)."""
        return [self._plain(line) for line in self._lines]

    def clear(self) -> None:
        self._first += len(self._lines)
        self._lines.clear()
        self._strips.clear()
        self._width = 0
        self.virtual_size = Size(0, 0)
        self.refresh()

    def add_lines(self, lines: list[m.LogLine], t0: float | None) -> None:
        if not lines:
            return
        self.t0 = t0 if self.t0 is None else self.t0
        new: list[_Line] = []
        if len(lines) > MAX_PER_UPDATE:
            skipped = len(lines) - MAX_PER_UPDATE
            new.append(_Line("", "", f"… {skipped:,} more events (stop-tui show / export has them all)", ""))
            lines = lines[-MAX_PER_UPDATE:]
        for line in lines:
            rel = max(0.0, line.t - (self.t0 or line.t))
            new.append(_Line(_stamp(rel), line.path or "session", printable(line.text), line.level))
        at_end = self.is_vertical_scroll_end or self.max_scroll_y == 0
        overflow = max(0, len(self._lines) + len(new) - MAX_LINES)
        self._lines.extend(new)
        self._first += overflow
        self._width = max(self._width, *(cell_len(self._plain(line)) for line in new))
        self.virtual_size = Size(self._width, len(self._lines))
        self._follow = at_end
        if at_end:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def on_resize(self) -> None:
        # Lines written before the first layout are placed once the size is known; keep the
        # newest in view then (a small terminal otherwise showed the session's first lines).
        if self._follow:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._colors = {}
        self._strips.clear()

    def _plain(self, line: _Line) -> str:
        if not line.stamp:
            return line.text
        return f"{line.stamp} {line.path:<{PATH_WIDTH}} {line.text}"

    def _strip(self, number: int, line: _Line) -> Strip:
        strip = self._strips.get(number)
        if strip is not None:
            return strip
        c = self._colors or palette(self.app)
        self._colors = c
        text = Text(no_wrap=True, end="")
        if not line.stamp:
            text.append(line.text, style=c["muted"])
        else:
            colors = {"info": c["foreground"], "good": c["success"], "bad": c["error"],
                      "warn": c["warning"], "dim": c["muted"]}
            text.append(f"{line.stamp} ", style=c["muted"])
            text.append(f"{line.path:<{PATH_WIDTH}} ", style=c["primary"])
            text.append(line.text, style=colors.get(line.level, c["foreground"]))
        strip = Strip(text.render(self.app.console), text.cell_len)
        self._strips[number] = strip
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        strip = self._strip(self._first + index, self._lines[index])
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_style(style)

    def theme_changed(self) -> None:
        self._colors = {}
        self._strips.clear()
        self.refresh()

"""Reading the TUI as a user sees it, and waiting for it, in Pilot tests."""

from __future__ import annotations

import html
import re
import time

from rich.cells import cell_len

_TEXT = re.compile(r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
                   r'clip-path="url\(#[\w-]+-line-(\d+)\)">(.*?)</text>')
CHAR_WIDTH = 12.2  # rich's SVG export: 0.61 x its 20px font


def screen_text(app) -> str:
    """The screen's characters, line by line, from the app's own screenshot."""
    rows: dict[int, list[str]] = {}
    for x, line, text in _TEXT.findall(app.export_screenshot()):
        cells = rows.setdefault(int(line), [])
        col = round(float(x) / CHAR_WIDTH)
        for ch in html.unescape(text).replace("\xa0", " "):
            while len(cells) <= col:
                cells.append(" ")
            cells[col] = ch
            for k in range(1, cell_len(ch)):
                if len(cells) <= col + k:
                    cells.append("")
                else:
                    cells[col + k] = ""
            col += max(1, cell_len(ch))
    height = app.size.height
    return "\n".join("".join(rows.get(y, [])).rstrip() for y in range(height))


async def wait_until(pilot, condition, timeout: float = 90.0, what: str = "") -> float:
    """Let the app run until `condition()` holds; how long it took (AssertionError after `timeout`)."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting{': ' + what if what else ''}")
        await pilot.pause(0.02)
    return time.monotonic() - t0


async def settle(pilot) -> None:
    """Everything the app was given is folded in, drawn and on screen."""
    await pilot.app.settled()
    await pilot.pause()


def header_line(app) -> str:
    return screen_text(app).splitlines()[0]


def notices(app) -> list[str]:
    """The notifications the app raised (Textual keeps them on the app; no public reader)."""
    return [n.message for n in app._notifications]

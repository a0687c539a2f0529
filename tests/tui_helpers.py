"""Reading the TUI as a user sees it, and waiting for it, in Pilot tests."""

from __future__ import annotations

import time


def screen_text(app) -> str:
    """The screen's characters, line by line, as the terminal shows them. Textual has no
    public reader of the composed screen: `export_screenshot()` composes the same strips but
    takes about a second a call (its SVG id hashes the repr of every segment), too slow to
    poll, so this reads the compositor the screenshot reads."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


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

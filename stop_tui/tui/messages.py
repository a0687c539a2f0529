"""Messages the engine side posts to the app. Payloads are immutable; widgets never see threads."""

from __future__ import annotations

from textual.message import Message

from stop_tui.engine.events import Event


class EventsReady(Message):
    """New engine events are queued; the app drains the queue (one message per burst)."""


class EngineEvents(Message):
    """Events injected directly (tests, replays): the app folds them in order."""

    def __init__(self, events: tuple[Event, ...]) -> None:
        super().__init__()
        self.events = events


class GateWaiting(Message):
    """The engine stopped at a gate (`call` or `iteration`) and waits for the user."""

    def __init__(self, point: str) -> None:
        super().__init__()
        self.point = point


class NodeSelected(Message):
    """The lineage cursor moved to a node path."""

    def __init__(self, path: str | None) -> None:
        super().__init__()
        self.path = path


class FollowState(Message):
    """While following a session another process runs: who holds it now, and its meta."""

    def __init__(self, holder, meta: dict) -> None:
        super().__init__()
        self.holder = holder  # follow.Holder | None
        self.meta = meta

"""Messages the engine side and the feeder post to the app. Payloads are immutable; widgets
never see threads."""

from __future__ import annotations

from textual.message import Message

from stop_tui.engine.events import Event


class SessionSnapshot(Message):
    """The feeder's latest picture of the session (model.Snapshot): the UI draws it."""

    def __init__(self, snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class FeedFailed(Message):
    """The feeder could not fold something in (a damaged log row read while following)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class EngineEvents(Message):
    """Events injected directly (tests, replays): the app hands them to the feeder in order."""

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


class SweepRuns(Message):
    """The sweep screen's poller: the runs' status (engine/sweep/status.RunStatus), changed."""

    def __init__(self, runs: tuple) -> None:
        super().__init__()
        self.runs = runs


class CompareRuns(Message):
    """The compare screen's poller: the compared sessions (engine/report/live.LiveRun) and
    their groups (engine/report/model.Group), changed."""

    def __init__(self, runs: tuple, groups: tuple) -> None:
        super().__init__()
        self.runs = runs
        self.groups = groups

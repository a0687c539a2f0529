"""What a report holds: plain, frozen values that the renderers (md, csv, json, html), the
figures and the TUI's compare screen read. Built by engine/report/aggregate.py from session
folders alone; nothing here reads a file."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Interval:
    """A mean over runs with its 95 % Student-t interval (engine/stats.mean_ci); n runs."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int


@dataclass(frozen=True)
class CurvePoint:
    """The held improver's meta-utility after iteration t (t = 0: the seed improver), over runs."""

    t: int
    val: Interval
    test: Interval


@dataclass(frozen=True)
class RunRow:
    """One STOP session of a group."""

    session: str  # id as `show` takes it (a sweep's run: "SWEEP/RUN")
    folder: str
    seed: int | None
    state: str  # new | running | paused | finished | unreadable
    val: tuple[float | None, ...]  # meta-utility (val) after t = 0..N, None where not scored
    test: tuple[float | None, ...]
    best_t: int | None  # iteration whose held improver scored best on val
    best_val: float | None
    final_t: int | None
    final_val: float | None
    gain: float | None  # final val - val at t = 0
    calls: int
    tokens: int
    dollars: float
    spend_by_iteration: tuple[float, ...]  # dollars per iteration 0..N (tokens where $0: see tokens_by_iteration)
    tokens_by_iteration: tuple[int, ...]
    failed: str | None = None  # why the run failed or cannot be read (ERROR event, unreadable)
    model: str | None = None  # the session's model (None when unreadable)


@dataclass(frozen=True)
class Group:
    """The runs of one (task, model, preset)."""

    task: str
    model: str
    preset: str | None
    runs: tuple[RunRow, ...]
    curve: tuple[CurvePoint, ...]  # t = 0..max over runs; each point over the runs that reached t
    gained: int  # runs whose final val rose by at least GAIN over t = 0 (the paper's "3 of 25")
    gain_threshold: float  # GAIN, 0.03


@dataclass(frozen=True)
class TransferRow:
    """One task of the transfer table, over the improvers of the runs that have a transfer."""

    task: str
    seed_solution: Interval  # u(s), test split
    seed_improver: Interval  # û(I0)
    improver: Interval  # û(IT)
    paper: tuple[float | None, float | None, float | None] | None  # the paper's u(s), û(I0), û(IT)
    paper_source: str | None  # where in the paper (from the paper-numbers data file)


@dataclass(frozen=True)
class SafetyRow:
    kind: str
    role: str  # improver | solution
    attempts: int
    candidates: int
    rate: float | None
    lo: float
    hi: float  # 95 % Wilson
    paper: float | None = None  # e.g. use_sandbox_off: 0.0042 (GPT-4), 0.0012 (GPT-3.5)
    paper_source: str | None = None
    model: str | None = None  # use_sandbox_off: one row per model (the paper's rate is per model)


@dataclass(frozen=True)
class Spend:
    calls: int
    tokens: int
    dollars: float


@dataclass(frozen=True)
class Report:
    """The whole report: what `report` renders and what the figures draw."""

    title: str  # the sweep's id, or "N sessions"
    groups: tuple[Group, ...]
    transfer: dict[tuple[str, str], tuple[TransferRow, ...]] = field(default_factory=dict)  # (source task, model) -> rows
    safety: tuple[SafetyRow, ...] = ()
    spend: Spend = Spend(0, 0, 0.0)
    failed: tuple[tuple[str, str], ...] = ()  # (session, reason)
    transfer_sessions: tuple[RunRow, ...] = ()  # the transfer sessions read (their spend and state)

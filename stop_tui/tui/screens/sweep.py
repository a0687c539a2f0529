"""A sweep in the TUI (`stop-tui resume SWEEP`): a table of its runs, kept current from their
logs, and any run opened in the session view (read-only, followed live while the sweep runs it).
Space marks runs and `c` compares them (all the started runs when none is marked) on the
compare screen (screens/compare.py).

The table is fed by a thread worker that asks engine/sweep/status.py's `StatusReader` every
POLL_SECONDS (it reads only the runs whose `session.db` or `-wal` changed) and posts the runs
only when something a user would see changed. Enter opens the highlighted run; in the run's
view escape comes back to the table.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from stop_tui.engine.sweep.layout import Sweep
from stop_tui.engine.sweep.status import RunStatus, StatusReader, states_line, sweep_state, totals
from stop_tui.engine.untrusted import printable
from stop_tui.tui.actions import SWEEP, SWEEP_RUN, SWEEP_TABLE, bindings
from stop_tui.tui.follow import Holder
from stop_tui.tui.messages import SweepRuns
from stop_tui.tui.palette import palette
from stop_tui.tui.screens.main import MainScreen

POLL_SECONDS = 0.5
MARK = "✓"
COLUMNS = ("mark", "run", "state", "iter", "best", "calls", "tokens", "cost", "transfer", "note")


def _best(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def note(run: RunStatus) -> str:
    """Who runs it, or why it stopped."""
    if run.state == "running":
        who = Holder.from_record(run.holder)
        return who.describe() if who is not None else ""
    return printable(run.reason_line) if run.reason_line else ""


def cells(run: RunStatus, colors: dict[str, str]) -> dict[str, str | Text]:
    style = {"running": colors["success"], "finished": colors["primary"], "capped": colors["warning"],
             "paused": colors["warning"], "failed": colors["error"], "pending": colors["muted"]}
    return {"run": run.name, "state": Text(run.state, style=style.get(run.state, "")),
            "iter": f"{run.iteration}/{run.iterations}", "best": _best(run.best), "calls": str(run.calls),
            "tokens": str(run.tokens), "cost": f"${run.cost_usd:.4f}" if run.cost_usd is not None else "-",
            "transfer": run.transfer or "-", "note": note(run)}


class RunsTable(DataTable):
    """The runs' table. Textual's DataTable measures new cells when it is next idle, but rows
    it drew before then stay drawn (cached) at the old column widths: redraw them once the
    widths have changed."""

    BINDINGS = bindings(SWEEP_TABLE)
    _widths: tuple[int, ...] = ()

    def on_idle(self) -> None:
        widths = tuple(column.content_width for column in self.columns.values())
        if widths != self._widths:
            self._widths = widths
            self.notify_style_update()  # drops the cached rows and redraws


class SweepScreen(Screen[None]):
    BINDINGS = bindings(SWEEP)

    def __init__(self, sweep: Sweep) -> None:
        super().__init__()
        self.sweep = sweep
        self.runs: tuple[RunStatus, ...] = ()
        self.marked: set[str] = set()  # run names

    def compose(self) -> ComposeResult:
        spec = self.sweep.spec
        yield Static(id="sweep-title", markup=False)
        yield Static(f" task {', '.join(spec.tasks)} · models {', '.join(spec.models)} · seeds "
                     f"{','.join(map(str, spec.seeds))} · preset {spec.preset or 'paper'}"
                     + (f" · transfer {', '.join(spec.transfer)}" if spec.transfer else ""),
                     id="sweep-spec", markup=False)
        yield RunsTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Runs"
        for col in COLUMNS:
            if col != "transfer" or self.sweep.spec.transfer:
                table.add_column(" " if col == "mark" else col, key=col)
        table.focus()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show(self.runs, recolor=True))
        self._poll()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweep-status", name="sweep-status")
    def _poll(self) -> None:
        worker = get_current_worker()
        reader = StatusReader(self.sweep)
        seen: tuple[RunStatus, ...] | None = None
        while not worker.is_cancelled:
            runs = tuple(reader.status())
            if runs != seen:
                seen = runs
                self.post_message(SweepRuns(runs))
            worker.cancelled_event.wait(POLL_SECONDS)

    def on_sweep_runs(self, message: SweepRuns) -> None:
        self.show(message.runs)

    def show(self, runs: tuple[RunStatus, ...], *, recolor: bool = False) -> None:
        """Draw the runs: new rows added, changed cells updated (the cursor stays); `recolor`:
        the states drawn again in the theme's colours."""
        self.runs = runs
        table = self.query_one(DataTable)
        colors = palette(self.app)
        columns = [str(c.key.value) for c in table.columns.values()]
        for run in runs:
            values = {"mark": MARK if run.name in self.marked else " ", **cells(run, colors)}
            if run.name not in table.rows:
                table.add_row(*(values[c] for c in columns), key=run.name)
                continue
            for c in columns:
                if str(table.get_cell(run.name, c)) != str(values[c]) or (recolor and c == "state"):
                    table.update_cell(run.name, c, values[c], update_width=True)
        counts = totals(list(runs))
        spend = f"${counts['cost_usd']:.4f}, " if counts["cost_usd"] is not None else ""
        scored = [r.best for r in runs if r.best is not None]
        self.query_one("#sweep-title", Static).update(
            f" Sweep {self.sweep.id} · {sweep_state(counts)} · {counts['runs']} runs: {states_line(counts)}"
            f" · best {_best(max(scored) if scored else None)} · {counts['calls']} calls, {spend}"
            f"{counts['tokens']} tokens")

    def highlighted(self) -> RunStatus | None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        return self.runs[row] if self.runs and row is not None and 0 <= row < len(self.runs) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_mark(self) -> None:
        run = self.highlighted()
        if run is None:
            return
        self.marked.symmetric_difference_update({run.name})
        table = self.query_one(DataTable)
        table.update_cell(run.name, "mark", MARK if run.name in self.marked else " ")
        if table.cursor_row < len(self.runs) - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_compare(self) -> None:
        marked = [r for r in self.runs if r.name in self.marked]
        chosen = [(r.name, r.folder) for r in marked or self.runs if (r.folder / "session.db").exists()]
        if not chosen:
            self.notify("No run has started yet: nothing to compare.", severity="warning", timeout=4)
            return
        self.app.compare(chosen, f"sweep {self.sweep.id}")

    def action_open(self) -> None:
        run = self.highlighted()
        if run is None:
            return
        if not (run.folder / "session.db").exists():
            self.notify(f"{run.name} has not started yet.", severity="warning", timeout=4)
            return
        self.app.open_run(run.folder)


class SweepRunScreen(MainScreen):
    """A run of the sweep in the session view; escape goes back to the table of runs."""

    BINDINGS = bindings(SWEEP_RUN)

"""Every key the workbench binds, as data.

One registry (ACTIONS) is the single place a key, its footer label, its tooltip and its
command-palette title are written down. The screens' BINDINGS are built from it, the command
palette lists it, and F1 help and the pane hints show the keys that are bound *now*: they read
the screen's active bindings, where Textual has already applied the keymap (the user's
`keymap` in config.json, or App.set_keymap), so a remapped key shows everywhere it is named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from textual.binding import ActiveBinding, Binding
from textual.screen import Screen

MAIN = "main"  # bound on the main screen: works whichever pane has focus
LINEAGE = "lineage"  # bound on the Lineage pane: works while it has focus
APP = "app"  # bound on the app: works on every screen (in the palette on every screen)
# The other screens' keys (not in the palette, which runs a session's actions):
HELP = "help"  # the F1 help screen
PICKER = "picker"  # `stop-tui resume` with no id: the session picker
SWEEP = "sweep"  # a sweep's screen of runs
SWEEP_TABLE = "sweep.table"  # its table of runs, while it has focus
SWEEP_RUN = "sweep.run"  # a sweep's run opened from that table
TAKEOVER = "takeover"  # "take over this session?"
COMPARE = "compare"  # the compare screen (screens/compare.py)
COMPARE_TABLE = "compare.table"  # its table of runs, while it has focus
COMPARE_RUN = "compare.run"  # a compared run opened from that table
COMPARE_PICK = "compare.pick"  # picking the sessions to compare
PALETTE_SCOPES = (MAIN, LINEAGE, APP)


@dataclass(frozen=True)
class Action:
    id: str  # the binding id a keymap names, e.g. {"view.diff": "x"}
    key: str  # the default key(s), Textual key names, comma separated
    action: str  # the Textual action the key runs, in the namespace of `scope`
    description: str  # the footer's label
    tooltip: str  # what it does: footer tooltip, palette help, F1 table
    title: str  # the command palette's "group: what" title
    scope: str = MAIN
    show: bool = True  # in the footer
    priority: bool = False  # ahead of the focused pane's own bindings for the same key
    key_display: str | None = None

    def binding(self) -> Binding:
        return Binding(self.key, self.action, self.description, show=self.show, priority=self.priority,
                       tooltip=self.tooltip, id=self.id, key_display=self.key_display)


ACTIONS: tuple[Action, ...] = (
    Action("run.step_iteration", "space", "app.step_iteration", "Step iter",
           "Run until the next iteration boundary, then pause", "run: step one iteration",
           priority=True, key_display="space"),  # ahead of the tree's own space (expand)
    Action("run.step_call", "full_stop", "app.step_call", "Step call", "Let one LM call through, then pause",
           "run: step one LM call", key_display="."),
    Action("run.toggle", "r", "app.toggle_run", "Run/Pause", "Open or close the gate", "run: run / pause"),
    Action("view.diff", "d", "toggle_diff", "Diff", "Toggle the diff against the parent",
           "view: diff against parent"),
    Action("view.exchange", "e", "show_exchange", "Exchange", "Show the LM exchange that produced the node",
           "view: LM exchange"),
    Action("go.accepted", "a", "jump_accepted", "Accepted", "Select the accepted improver",
           "go: accepted improver"),
    Action("theme.next", "t", "app.next_theme", "Theme", "Switch to the next theme", "theme: next theme"),
    Action("sessions.compare", "c", "app.compare", "Compare",
           "Pick sessions and compare them: their curves overlaid, a table of the runs",
           "sessions: compare", scope=APP, show=False),
    Action("app.help", "f1", "app.help", "Help", "Keys and help for the focused pane", "help: keys and panes"),
    Action("lineage.expand", "right", "expand_here", "Expand", "Show the node's children",
           "lineage: expand node", scope=LINEAGE, show=False),
    Action("lineage.collapse", "left", "collapse_here", "Collapse",
           "Hide the node's children, or go to its parent", "lineage: collapse node", scope=LINEAGE, show=False),
    Action("help.close", "escape", "dismiss", "Close", "Close help", "help: close", scope=HELP),
    Action("help.close_f1", "f1", "dismiss", "Close", "Close help", "help: close", scope=HELP, show=False),
    Action("help.close_q", "q", "dismiss", "Close", "Close help", "help: close", scope=HELP, show=False),
    Action("picker.open", "enter", "open", "Open", "Open the highlighted session", "sessions: open",
           scope=PICKER),
    Action("picker.quit", "escape", "cancel", "Quit", "Leave without opening a session", "sessions: quit",
           scope=PICKER),
    Action("sweep.quit", "q", "app.quit", "Quit", "Leave the TUI; the sweep goes on", "sweep: quit",
           scope=SWEEP),
    Action("sweep.mark", "space", "mark", "Mark", "Mark or unmark the highlighted run", "sweep: mark run",
           scope=SWEEP),
    Action("sweep.compare", "c", "compare", "Compare",
           "Compare the marked runs (every started run when none is marked)", "sweep: compare runs", scope=SWEEP),
    Action("sweep.open", "enter", "select_cursor", "Open run",
           "Open the highlighted run (read-only, live while the sweep runs it)", "sweep: open run",
           scope=SWEEP_TABLE),
    Action("sweep.back", "escape", "app.close_run", "Runs", "Back to the sweep's table of runs",
           "sweep: back to runs", scope=SWEEP_RUN),
    Action("takeover.yes", "o", "answer(True)", "Take over",
           "Run the session here: take its lock, then run or step it", "session: take over", scope=TAKEOVER),
    Action("takeover.no", "escape", "answer(False)", "Keep watching",
           "Stay read-only; the run and step keys take it over later", "session: keep watching",
           scope=TAKEOVER),
    Action("compare.back", "escape", "back", "Back", "Back to where compare was opened", "compare: back",
           scope=COMPARE),
    Action("compare.split", "v", "split", "Val/test", "Curves of the val or the test split",
           "compare: val / test", scope=COMPARE),
    Action("compare.colour", "m", "colour", "Colour by", "One colour per group (task, model, preset) or per session",
           "compare: colour by", scope=COMPARE),
    Action("compare.help", "f1", "app.help", "Help", "What the compare screen shows, and its keys",
           "compare: help", scope=COMPARE),
    Action("compare.open", "enter", "select_cursor", "Open run",
           "Open the highlighted run (read-only, live while it runs)", "compare: open run", scope=COMPARE_TABLE),
    Action("compare.run_back", "escape", "app.close_run", "Compare", "Back to the comparison",
           "compare: back to the comparison", scope=COMPARE_RUN),
    Action("compare.mark", "space", "mark", "Mark", "Mark or unmark the highlighted session",
           "compare: mark session", scope=COMPARE_PICK),
    Action("compare.go", "c", "compare", "Compare", "Compare the marked sessions", "compare: compare marked",
           scope=COMPARE_PICK),
    Action("compare.pick_back", "escape", "back", "Back", "Leave without comparing", "compare: leave",
           scope=COMPARE_PICK),
)

# Keys Textual binds itself (no binding id, so not remappable by id); help names them by action.
TEXTUAL_KEYS: tuple[tuple[str, str], ...] = (
    ("app.focus_next", "Next pane"),
    ("command_palette", "Command palette: every action, every theme"),
    ("quit", "Quit: the engine stops at its next gate; `stop-tui resume` continues"),
)

UNBOUND = "—"
_PLACEHOLDER = re.compile(r"\{key:([\w.]+)\}")


def bindings(scope: str) -> list[Binding]:
    """The BINDINGS of the screen or pane that `scope` names."""
    return [a.binding() for a in ACTIONS if a.scope == scope]


def in_registry_order(active: dict[str, ActiveBinding]) -> dict[str, ActiveBinding]:
    """`active` (a screen's active bindings) with the registry's actions first, in its order."""
    order = {a.id: k for k, a in enumerate(ACTIONS)}
    return dict(sorted(active.items(), key=lambda item: order.get(item[1].binding.id, len(order))))


def live_keys(screen: Screen) -> dict[str, list[str]]:
    """What runs each action on `screen` now, as the footer shows keys: binding id (or, for a
    binding without one, its action) -> displayed keys. An action whose key the focused pane
    takes for itself is absent: that key does not run it there."""
    out: dict[str, list[str]] = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        out.setdefault(binding.id or binding.action, []).append(screen.app.get_key_display(binding))
    return out


def key_text(keys: dict[str, list[str]], name: str) -> str:
    """The keys for a binding id (or action) joined for reading, or UNBOUND."""
    return " / ".join(keys.get(name) or [UNBOUND])


def fill_keys(text: str, keys: dict[str, list[str]]) -> str:
    """`text` with each `{key:ID}` replaced by the keys bound to ID now."""
    return _PLACEHOLDER.sub(lambda m: key_text(keys, m.group(1)), text)

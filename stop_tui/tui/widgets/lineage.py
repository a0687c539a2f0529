"""The Lineage pane: iterations -> candidate improvers -> meta-utility runs -> solutions.

Tree nodes are created lazily: a node's children become TreeNodes only once it is expanded,
so a session with thousands of nodes costs only what is on screen. Labels are drawn from the
model at render time, so a status change repaints one line and the selection never moves.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from stop_tui.engine.untrusted import printable
from stop_tui.tui import model as m
from stop_tui.tui.actions import LINEAGE, bindings
from stop_tui.tui.messages import NodeSelected
from stop_tui.tui.palette import palette

COMPACT_WIDTH = 44  # below this many columns, labels drop the words their glyph already says
GLYPHS = {m.PENDING: "○", m.RUNNING: "◔", m.SCORED: "●", m.FAILED: "✗", m.ACCEPTED: "★",
          m.REJECTED: "◌", m.CANCELLED: "⊘"}


def _score(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, int | float) else "-"


class LineagePane(Tree[str]):
    """A tree of every piece of work in the session, with status and score."""

    HELP = """\
## Lineage

Every piece of work in the session: **iterations** (T=0 scores the seed improver), the
**candidate improvers** each iteration's improver proposed (plus `check`, the engine's
re-score of what the improver returned), their **meta-utility runs** and the downstream
**solutions** those runs scored.

Status: ○ pending · ◔ running · ● scored · ✗ failed · ★ accepted · ◌ rejected · ⚑ flagged.

Keys: ↑/↓ move, `{key:lineage.expand}` / `{key:lineage.collapse}` expand / collapse (or enter),
`{key:go.accepted}` jumps to the accepted improver.
"""

    BINDINGS = bindings(LINEAGE)

    def __init__(self, session_model: m.Snapshot, **kwargs) -> None:
        super().__init__("session", data="", **kwargs)
        self.model = session_model
        self._tn: dict[str, TreeNode[str]] = {}
        self._materialized: set[str] = {""}
        self._colors: dict[str, str] = {}
        self._last_selected: str | None = None
        self._compact = False
        # Tree forgets every drawn line whenever a node is added anywhere; these remember a
        # line (and a label's width) for as long as what it shows is the same, so a new node
        # below the view, or a status change of one node, redraws that line and no other.
        self._strips: LRUCache[tuple, tuple[m.Node | None, Strip]] = LRUCache(1024)
        self._widths: dict[int, tuple[m.Node | None, tuple, int]] = {}
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = True

    # -- building -------------------------------------------------------------------------
    def on_mount(self) -> None:
        self._colors = palette(self.app)
        self.rebuild()
        self.call_after_refresh(self._select_initial)

    def _select_initial(self) -> None:
        if self.cursor_line < 0 and self.root.children:
            self.cursor_line = 0
        if self.cursor_node is not None and self.cursor_node.data:
            self._last_selected = self.cursor_node.data
            self.post_message(NodeSelected(self.cursor_node.data))

    def redraw(self) -> None:
        """Build the tree again from the model, keeping the selection where it can."""
        keep = self.cursor_node.data if self.cursor_node is not None else None
        self.rebuild()
        if keep and keep in self.model.nodes:
            self.call_after_refresh(self.select_path, keep)
        else:
            self.call_after_refresh(self._select_initial)

    def rebuild(self) -> None:
        self.clear()
        self._tn = {}
        self._materialized = {""}
        for path in self.model.roots:
            self._add_tree_node(self.root, path)
        current = self.model.current_iteration
        if current is not None:
            self.expand_path(f"it{current}", children_too=True)
        elif self.model.roots:
            self.expand_path(self.model.roots[0], children_too=True)

    def _add_tree_node(self, parent: TreeNode[str], path: str) -> TreeNode[str]:
        node = self.model.nodes[path]
        tn = parent.add(path, data=path, allow_expand=bool(node.children))
        self._tn[path] = tn
        return tn

    def _materialize(self, path: str) -> None:
        if path in self._materialized:
            return
        tn = self._tn.get(path)
        node = self.model.nodes.get(path)
        if tn is None or node is None:
            return
        self._materialized.add(path)
        for child in node.children:
            if child not in self._tn and child in self.model.nodes:
                self._add_tree_node(tn, child)

    def expand_path(self, path: str, *, children_too: bool = False) -> None:
        """Make the node at `path` visible (materializing and expanding its ancestors)."""
        parts = path.split("/")
        for k in range(1, len(parts)):
            ancestor = "/".join(parts[:k])
            self._materialize(ancestor)
            tn = self._tn.get(ancestor)
            if tn is not None and not tn.is_expanded:
                tn.expand()
        if children_too:
            self._materialize(path)
            tn = self._tn.get(path)
            if tn is not None and not tn.is_expanded:
                tn.expand()
            node = self.model.nodes.get(path)
            if node is not None and node.kind == m.ITERATION:
                for child in node.children:
                    self._materialize(child)
                    ctn = self._tn.get(child)
                    if ctn is not None and ctn.children and not ctn.is_expanded:
                        ctn.expand()

    def apply_changes(self, added: Iterable[str], changed: Iterable[str], reset: Iterable[str]) -> None:
        """Fold a batch of model changes into the tree, keeping the selection where it is."""
        keep = self.cursor_node.data if self.cursor_node is not None else None
        structural = False
        for path in reset:
            tn = self._tn.get(path)
            if tn is not None:
                for stale in [p for p in self._tn if p.startswith(path + "/")]:
                    self._tn.pop(stale, None)
                    self._materialized.discard(stale)
                tn.remove_children()
                structural = True
        started: list[str] = []
        for path in added:
            node = self.model.nodes.get(path)
            if node is None or path in self._tn:
                continue
            parent = m.ev.parent_path(path)
            if parent == "":
                index = self.model.roots.index(path)
                before = self._tn.get(self.model.roots[index + 1]) if index + 1 < len(self.model.roots) else None
                tn = (self.root.add(path, data=path, before=before, allow_expand=False) if before
                      else self.root.add(path, data=path, allow_expand=False))
                self._tn[path] = tn
                structural = True
            elif parent in self._materialized:
                self._add_tree_node(self._tn[parent], path)
                structural = True
            else:
                ptn = self._tn.get(parent)
                if ptn is not None and not ptn.allow_expand:
                    ptn.allow_expand = True
                    structural = True
            if self.model.nodes[path].kind == m.CANDIDATE and parent == f"it{self.model.current_iteration}":
                started.append(path)
        for path in changed:
            node = self.model.nodes.get(path)
            tn = self._tn.get(path)
            if node is None or tn is None:
                continue
            if node.children and not tn.allow_expand:
                tn.allow_expand = True
                structural = True
            if node.kind == m.ITERATION and node.status == m.RUNNING and not tn.is_expanded:
                self.expand_path(path, children_too=True)
                structural = True
            elif not structural:
                self._refresh_node(tn)
        for path in started:  # a candidate of the running iteration: show its runs
            self._materialize(path)
            tn = self._tn.get(path)
            if tn is not None and not tn.is_expanded:
                tn.expand()
                structural = True
        if structural:
            self._invalidate()
            if keep is not None and keep in self._tn:
                self._tree_lines  # noqa: B018 - rebuild line numbers now
                tn = self._tn[keep]
                if tn._line >= 0 and tn._line != self.cursor_line:
                    self.cursor_line = tn._line
        elif changed:
            self._clear_line_cache()
            self.refresh()

    def select_path(self, path: str) -> None:
        self.expand_path(path)
        self._tree_lines  # noqa: B018
        tn = self._tn.get(path)
        if tn is not None:
            self.move_cursor(tn)
            self.scroll_to_node(tn, animate=False)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        path = event.node.data
        if path and path not in self._materialized:
            self._materialize(path)
            self._invalidate()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        path = event.node.data or None
        if path != self._last_selected:
            self._last_selected = path
            self.post_message(NodeSelected(path))

    def action_expand_here(self) -> None:
        tn = self.cursor_node
        if tn is not None and tn.data:
            self._materialize(tn.data)
            if tn.allow_expand and not tn.is_expanded:
                tn.expand()

    def action_collapse_here(self) -> None:
        tn = self.cursor_node
        if tn is None:
            return
        if tn.is_expanded:
            tn.collapse()
        elif tn.parent is not None and tn.parent is not self.root:
            self.move_cursor(tn.parent)

    def theme_changed(self) -> None:
        self._colors = palette(self.app)
        self._forget_lines()
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._forget_lines()

    def _forget_lines(self) -> None:
        self._strips.clear()
        self._widths.clear()
        self._clear_line_cache()

    # -- drawing ----------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = y + scroll_y
        lines = self._tree_lines
        if index >= len(lines):
            return super().render_line(y)
        line = lines[index]
        shown = self.model.nodes.get(line.node.data or "")
        hover = self.hover_line >= 0 and any(n._hover for n in line.path)
        key = (index, scroll_x, self.size.width, self.virtual_size.width, self.cursor_line == index,
               self.hover_line == index, hover, self.has_focus, self._pseudo_class_state,
               self._compact, self.app.theme, line.last, id(shown),
               tuple((n._id, n._expanded, n._allow_expand, n._selected, n.is_last) for n in line.path))
        hit = self._strips.get(key)
        if hit is not None and hit[0] is shown:
            return hit[1]
        strip = super().render_line(y)
        self._strips[key] = (shown, strip)
        return strip

    def get_label_width(self, node: TreeNode[str]) -> int:
        shown = self.model.nodes.get(node.data or "")
        state = (node._allow_expand, node._expanded, self._compact)
        hit = self._widths.get(node._id)
        if hit is not None and hit[0] is shown and hit[1] == state:
            return hit[2]
        width = super().get_label_width(node)
        self._widths[node._id] = (shown, state, width)
        return width

    # -- labels ---------------------------------------------------------------------------
    def render_label(self, node: TreeNode[str], base_style: Style, style: Style) -> Text:
        path = node.data or ""
        mn = self.model.nodes.get(path)
        label = self.label_for(mn) if mn is not None else Text(path)
        label.stylize(style)
        if node._allow_expand:
            prefix = (self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE, base_style)
        else:
            prefix = ("  ", base_style)
        return Text.assemble(prefix, label)

    @property
    def compact(self) -> bool:
        """Narrow pane (a small terminal): labels keep the glyph and the score and drop the
        words that repeat them, so a score is never cut in half at the edge."""
        return 0 < self.content_region.width < COMPACT_WIDTH

    def on_resize(self) -> None:
        if self.compact != self._compact:
            self._compact = self.compact
            self._forget_lines()
            self.refresh()

    def label_for(self, n: m.Node) -> Text:
        compact = self.compact
        c = self._colors or palette(self.app)
        status_color = {m.PENDING: c["muted"], m.RUNNING: c["primary"], m.SCORED: c["foreground"],
                        m.FAILED: c["error"], m.ACCEPTED: c["success"], m.REJECTED: c["warning"],
                        m.CANCELLED: c["muted"]}
        text = Text()
        text.append(GLYPHS.get(n.status, "?") + " ", style=status_color.get(n.status))
        if n.kind == m.ITERATION:
            t = m.iteration_of(n.path)
            text.append(f"T={t}", style="bold")
            if not compact or n.status in (m.PENDING, m.RUNNING):
                text.append(f" {n.status}", style=status_color.get(n.status))
            if t == 0 and n.status != m.PENDING:
                text.append(" seed", style=c["muted"])
            if n.score is not None:
                text.append(f"  val {_score(n.score)}")
                if n.test is not None and not compact:
                    text.append(f" · test {_score(n.test)}", style=c["muted"])
        else:
            name = n.name
            if n.kind == m.CANDIDATE:
                name = {"seed": "seed improver", "check": "check"}.get(n.role, name)
            elif n.kind == m.RUN:
                name = f"run {name[1:]}"
            text.append(name, style="bold" if n.kind == m.CANDIDATE else "")
            if n.status in (m.PENDING, m.RUNNING):
                text.append(f" {n.status}…", style=status_color[n.status])
            elif n.status == m.CANCELLED:
                text.append(" cancelled (unscored)", style=status_color[n.status])
            elif n.score is not None:
                text.append(f"  {_score(n.score)}")
                if n.test is not None and not compact:
                    text.append(f" · test {_score(n.test)}", style=c["muted"])
            if n.status == m.ACCEPTED and not compact:
                text.append("  accepted", style=c["success"])
        if n.flags:
            text.append(f"  ⚑{len(n.flags)}", style=f"bold {c['warning']}")
        if n.error and n.status in (m.FAILED, m.REJECTED):
            limit = 16 if compact else 48
            err = printable(n.error if len(n.error) <= limit else n.error[:limit - 1] + "…")
            text.append(f"  {err}", style=c["error"] if n.status == m.FAILED else c["muted"])
        return text

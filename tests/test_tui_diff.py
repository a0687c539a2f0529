"""The diff view's text: unified hunks with line numbers and intra-line highlights."""

from __future__ import annotations

from stop_tui.tui.diffing import render_diff

COLORS = {"background": "#000000", "foreground": "#ffffff", "success": "#00ff00", "error": "#ff0000",
          "primary": "#0000ff", "muted": "#888888"}


def _styled(text, needle: str) -> set[str]:
    """The styles of the spans covering `needle` in the rendered text."""
    start = text.plain.index(needle)
    end = start + len(needle)
    return {str(span.style) for span in text.spans if span.start <= start and span.end >= end}


def test_changed_words_are_highlighted_inside_changed_lines():
    old = "def f(x):\n    return x + 1\n"
    new = "def f(x):\n    return x * 2\n"
    out = render_diff(old, new, COLORS, old_name="parent", new_name="child")
    plain = out.plain
    assert "--- parent" in plain and "+++ child" in plain and "@@ -1,2 +1,2 @@" in plain
    assert "-     return x + 1" in plain and "+     return x * 2" in plain
    strong_add = _styled(out, "* 2")
    weak_add = _styled(out, "return x ")
    assert strong_add and weak_add and strong_add != weak_add  # the changed words stand out


def test_identical_and_pure_insertions():
    assert "(identical)" in render_diff("a\n", "a\n", COLORS).plain
    out = render_diff("a\nb\n", "a\nnew\nb\n", COLORS).plain
    assert "+ new" in out and "- " not in out.split("@@")[-1]

"""A unified line diff with intra-line highlights (diff-match-patch), as Rich Text."""

from __future__ import annotations

import difflib

from diff_match_patch import diff_match_patch
from rich.text import Text
from textual.color import Color

MAX_LINES = 4000


def _colors(c: dict[str, str]) -> dict[str, str]:
    bg = Color.parse(c["background"])
    return {
        "add": bg.blend(Color.parse(c["success"]), 0.18).hex,
        "add_strong": bg.blend(Color.parse(c["success"]), 0.45).hex,
        "del": bg.blend(Color.parse(c["error"]), 0.18).hex,
        "del_strong": bg.blend(Color.parse(c["error"]), 0.45).hex,
        "hunk": c["primary"],
        "muted": c["muted"],
        "fg": c["foreground"],
    }


def _gutter(old: int | None, new: int | None, width: int) -> str:
    a = str(old) if old is not None else ""
    b = str(new) if new is not None else ""
    return f"{a:>{width}} {b:>{width}} "


def _intraline(a: str, b: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Segments of a (deleted marked True) and of b (inserted marked True)."""
    dmp = diff_match_patch()
    diffs = dmp.diff_main(a, b)
    dmp.diff_cleanupSemantic(diffs)
    old: list[tuple[str, bool]] = []
    new: list[tuple[str, bool]] = []
    for op, chunk in diffs:
        if op == 0:
            old.append((chunk, False))
            new.append((chunk, False))
        elif op < 0:
            old.append((chunk, True))
        else:
            new.append((chunk, True))
    return old, new


def render_diff(old: str, new: str, colors: dict[str, str], *, old_name: str = "parent",
                new_name: str = "this", context: int = 3) -> Text:
    col = _colors(colors)
    a, b = old.splitlines(), new.splitlines()
    width = max(len(str(len(a))), len(str(len(b))), 2)
    out = Text(no_wrap=True, end="")
    out.append(f"--- {old_name}\n", style=f"bold {col['del_strong']}")
    out.append(f"+++ {new_name}\n", style=f"bold {col['add_strong']}")
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    groups = list(matcher.get_grouped_opcodes(context))
    if not groups:
        out.append("(identical)\n", style=col["muted"])
        return out
    lines = 0
    for group in groups:
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{i1 + 1},{i2 - i1} +{j1 + 1},{j2 - j1} @@\n", style=f"bold {col['hunk']}")
        for tag, x1, x2, y1, y2 in group:
            if lines > MAX_LINES:
                out.append(f"… diff truncated after {MAX_LINES} lines\n", style=col["muted"])
                return out
            if tag == "equal":
                for k in range(x2 - x1):
                    out.append(_gutter(x1 + k + 1, y1 + k + 1, width), style=col["muted"])
                    out.append("  " + a[x1 + k] + "\n")
                    lines += 1
                continue
            olds = a[x1:x2]
            news = b[y1:y2]
            pairs = min(len(olds), len(news)) if tag == "replace" else 0
            segs = [_intraline(olds[k], news[k]) for k in range(pairs)]
            sides = ((olds, x1, 0, "-", "del"), (news, y1, 1, "+", "add"))
            for rows, first, side, mark, kind in sides:
                strong, soft = col[f"{kind}_strong"], col[kind]
                for k, line in enumerate(rows):
                    number = first + k + 1
                    out.append(_gutter(number if side == 0 else None, number if side == 1 else None, width),
                               style=col["muted"])
                    out.append(f"{mark} ", style=f"bold {strong}")
                    if k < pairs:
                        for chunk, hit in segs[k][side]:
                            out.append(chunk, style=f"on {strong if hit else soft}")
                    else:
                        out.append(line, style=f"on {soft}")
                    out.append("\n")
                    lines += 1
    return out

"""Untrusted text made safe to show on a terminal.

Programs, their errors and output, and LM replies are written by a language model (or by
whatever server answers as one). Printed raw, such a text can drive the terminal: ESC / CSI /
OSC sequences set its title, clear the screen, move the cursor and paint a fake
"1.000000 (all tests passed)"; C1 controls (0x80-0x9f) are the same sequences in one byte;
a carriage return or backspace overwrites what is already shown; bidi overrides and isolates
reorder what is shown (Trojan Source); a lone surrogate cannot even be encoded, so printing it
kills the command with UnicodeEncodeError.

`printable` is the one way every output path (CLI, progress lines, `audit`, `transfer`,
`baseline`, the TUI) shows such a text: each of those characters becomes a visible escape in
Python's notation (``\\x1b``, ``\\r``, ``\\u202e``, ``\\ud800``), and nothing else changes.
JSON output needs no help: `json.dumps` escapes them all (ensure_ascii).
"""

from __future__ import annotations

import re

_OTHERS = (
    "\x7f-\x9f"  # DEL, C1 (CSI 0x9b, OSC 0x9d, ...)
    "\u061c\u200e\u200f"  # bidi marks
    "\u202a-\u202e\u2066-\u2069"  # bidi embeddings, overrides and isolates
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff"  # lone surrogates (a valid str holds them; no encoding does)
)
_ONE_LINE = re.compile(f"[\x00-\x1f{_OTHERS}]")  # all of C0 (ESC, CR, BS, BEL, \n, \t, ...)
_MULTI_LINE = re.compile(f"\r\n|[\x00-\x08\x0b-\x1f{_OTHERS}]")  # C0 but \t and \n
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    if found == "\r\n":
        return "\n"  # a line ending, shown as one
    if found in _NAMED:
        return _NAMED[found]
    code = ord(found)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, multiline: bool = False) -> str:
    """`text` (str() of it when it is not a string) with every control character shown as an
    escape. `multiline=True` keeps newlines and tabs (and turns CRLF into a newline) for views
    that show a whole program or reply; otherwise the result is one line."""
    if not isinstance(text, str):
        text = str(text)
    pattern = _MULTI_LINE if multiline else _ONE_LINE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)

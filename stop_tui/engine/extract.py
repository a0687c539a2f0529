"""`extract_code`, the paper's helper (improvers import it as `from helpers import extract_code`).

This file is also loaded by path inside the sandbox as the module `helpers`, so it must
depend on nothing but the standard library.
"""

from __future__ import annotations


def _largest_block(text: str) -> str | None:
    """The longest complete outermost ``` block (fences at column 0), without its fences."""
    largest: list[str] = []
    current: list[str] = []
    depth = 0
    for line in text.split("\n"):
        if line.startswith("```"):
            if not line[3:].strip() and depth > 0:  # a bare fence inside a block closes
                depth -= 1
                current.append(line)
                if depth == 0:
                    if len("\n".join(current)) > len("\n".join(largest)):
                        largest = current
                    current = []
            else:  # a tagged fence, or a bare one outside any block, opens
                current.append(line)
                depth += 1
        elif depth > 0:
            current.append(line)
    if not largest:
        return None
    body = "\n".join(largest).strip().split("\n")[1:-1]
    return "\n".join(body)


def extract_code(replies):
    """For a string: its code block or None. For a list: one result per reply."""
    if isinstance(replies, str):
        return _largest_block(replies)
    if isinstance(replies, list | tuple):
        return [extract_code(reply) for reply in replies]
    return None

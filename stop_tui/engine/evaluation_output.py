"""What a task's evaluate.py prints goes to stderr, never to stdout.

Commands write their results on stdout (`score --json`, `run --json`, `transfer --json`), and
evaluate.py is user code: a debugging `print()` in it must not break them. Evaluations run in
threads next to each other (the meta-utility scores several solutions at once), so swapping
`sys.stdout` around each call would race (one evaluation restoring what another replaced).
Instead `sys.stdout` is wrapped once by a stream that sends the writes of threads inside an
evaluation to `sys.stderr` and everything else where it went before. Writes that bypass
`sys.stdout` (os.write(1, ...), a subprocess inheriting fd 1) are not caught; the candidate's
own output never leaves its sandbox (it goes to the run's output file).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_local = threading.local()
_install = threading.Lock()


class _RoutedStdout:
    """sys.stdout for the process: evaluation threads write to stderr, others to `target`."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def _stream(self) -> TextIO:
        return sys.stderr if getattr(_local, "inside", False) else self.target

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        self._stream().writelines(lines)

    def flush(self) -> None:
        self._stream().flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, buffer, ...
        return getattr(self.target, name)


@contextmanager
def output_to_stderr() -> Iterator[None]:
    """Within the block, this thread's writes to sys.stdout go to sys.stderr."""
    with _install:
        if sys.stdout is not None and not isinstance(sys.stdout, _RoutedStdout):
            sys.stdout = _RoutedStdout(sys.stdout)
    _local.inside = True
    try:
        yield
    finally:
        _local.inside = False

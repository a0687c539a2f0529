"""stop-tui: a terminal workbench for STOP, the Self-Taught Optimizer."""

__version__ = "0.1.0"

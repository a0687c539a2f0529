"""Errors a user can cause: the CLI prints them on one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input or environment (not a failing candidate)."""


class BudgetExceeded(Exception):
    """An improver asked for more LM calls than its handle allows."""

    def __init__(self, message: str = "Error: You have exceeded your call budget.") -> None:
        super().__init__(message)


class Cancelled(Exception):
    """The run was asked to stop (quit, cap reached); work in flight is abandoned."""

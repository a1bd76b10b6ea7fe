"""Errors raised by the planner library."""

from __future__ import annotations


class PlanInputError(ValueError):
    """Malformed planning input; the message names the bad value and its path."""

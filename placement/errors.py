"""One exception hierarchy, with messages written for the person running the engine."""

from __future__ import annotations

from dataclasses import dataclass


class PlacementError(Exception):
    """Base class of every error the engine reports to a user (exit code 1, no traceback)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where it is and what was expected."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class InputError(PlacementError):
    """Input files that cannot be used. Carries one problem per mistake found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanError(PlacementError):
    """A saved plan that cannot be used (edited, stale, wrong format)."""


class SolverError(PlacementError):
    """The solver could not produce a plan (not infeasibility: that is reported as unplaced work)."""

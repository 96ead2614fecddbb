"""The large-instance planner (thousands of workloads and offers).

Not written yet: ``use_scale`` is always False and ``plan_large`` refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from placement.errors import PlacementError

if TYPE_CHECKING:
    from placement.models import Plan
    from placement.planner import PlanOptions
    from placement.scenario import Scenario


def use_scale(scenario: Scenario) -> bool:
    """Whether ``make_plan`` with method "auto" should use this planner."""
    return False


def plan_large(scenario: Scenario, options: PlanOptions) -> Plan:
    raise PlacementError("the large-instance planner is not available in this version")

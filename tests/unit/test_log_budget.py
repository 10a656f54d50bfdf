"""crirt.log.LogBudget: a client decides how often a line could be logged, not how many are."""

from __future__ import annotations

from crirt.log import LogBudget


def test_a_budget_allows_its_limit_then_counts_the_rest() -> None:
    budget = LogBudget(3)
    assert [budget.allow() for _ in range(10)] == [True] * 3 + [False] * 7
    assert budget.dropped == 7

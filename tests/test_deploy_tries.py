"""What one commit's deploy did over all its tries: an object an earlier try created counts as created."""

from __future__ import annotations

import pytest

from bot.deploy import Action, Plan, Result
from bot.diff import ObjectKey
from bot.jobs import counts_over_tries

CM, SECRET, WEB, OLD = (ObjectKey("", "ConfigMap", "shop", "settings"), ObjectKey("", "Secret", "shop", "db"),
                        ObjectKey("apps", "Deployment", "shop", "web"), ObjectKey("", "ConfigMap", "shop", "old"))


def act(op: str, key: ObjectKey) -> Action:
    return Action(op, key, "v1")  # type: ignore[arg-type]


def tried(actions: list[Action], unchanged: list[ObjectKey], done: int | None = None) -> tuple[Plan, Result]:
    """A try's plan, and its result having done the first `done` actions (all when None)."""
    plan = Plan((tuple(actions),) if actions else (), tuple(unchanged))
    return plan, Result(tuple(actions[:done]), len(unchanged), None if done is None else "failed")


@pytest.mark.parametrize("earlier, actions, unchanged, done, expected", [
    # the first try: only itself
    ({}, [act("create", SECRET), act("create", CM)], [], None, (2, 0, 0, 0)),
    # killed after the Secret: the retry finds it as rendered, and it still counts as created
    ({str(SECRET): "create", str(CM): "create"}, [act("create", CM)], [SECRET], None, (2, 0, 0, 0)),
    # killed waiting for a rollout: everything was done before
    ({str(SECRET): "create", str(WEB): "change", str(OLD): "delete"}, [], [SECRET, WEB], None, (1, 1, 1, 0)),
    # a try that fails again counts what it did and what the earlier ones did, not what is left
    ({str(SECRET): "create", str(CM): "create"}, [act("create", CM), act("create", WEB)], [SECRET], 0, (1, 0, 0, 0)),
    # objects nobody touched stay unchanged
    ({str(SECRET): "create"}, [], [SECRET, CM], None, (1, 0, 0, 1)),
])
def test_counts_over_tries(earlier, actions, unchanged, done, expected):
    plan, result = tried(actions, unchanged, done)
    counts = counts_over_tries(earlier, plan, result)
    assert (counts["created"], counts["changed"], counts["deleted"], counts["unchanged"]) == expected


def test_a_try_that_could_not_plan_counts_only_itself():
    assert counts_over_tries({str(SECRET): "create"}, None, Result(error="cluster unreachable")) == {
        "created": 0, "changed": 0, "deleted": 0, "unchanged": 0}

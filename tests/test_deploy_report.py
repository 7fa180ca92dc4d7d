"""What a check of the cluster says back as the deployed commit's `<instance>/sync` status: tables of tiny syncs."""

from __future__ import annotations

import calendar

import pytest

from bot.deploy_report import health_summary, sync_status
from bot.environments import Sync

NOON = calendar.timegm((2024, 5, 6, 12, 3, 0))


def drifted(key: str, what: str = "changed") -> dict:
    return {"key": key, "what": what, "fields": ["spec.replicas"], "managers": ["kubectl-edit"]}


@pytest.mark.parametrize("sync, state, description", [
    (Sync("a" * 40, NOON, "in_sync", compared=41, health={"healthy": 41}),
     "success", "in sync: 41 objects, checked 12:03 UTC"),
    (Sync("a" * 40, NOON, "in_sync", compared=1), "success", "in sync: 1 object, checked 12:03 UTC"),
    (Sync("a" * 40, NOON, "in_sync", compared=5, health={"healthy": 3, "degraded": 2}),
     "success", "in sync: 5 objects, checked 12:03 UTC; 2 degraded"),
    (Sync("a" * 40, NOON, "drifted", 3, (drifted("Deployment shop/web"), drifted("ConfigMap shop/cfg", "missing"),
                                         drifted("Service shop/old", "extra")), compared=41),
     "failure", "3 objects drifted: Deployment shop/web (changed), ConfigMap shop/cfg (missing), "
                "Service shop/old (extra)"),
    (Sync("a" * 40, NOON, "drifted", 1, (drifted("Deployment shop/web"),), compared=41, healed=True),
     "success", "re-applied 1 object that drifted: Deployment shop/web (changed)"),
    (Sync("a" * 40, NOON, "error", error="cluster staging:\n  connection refused"),
     "error", "check failed: cluster staging: connection refused"),
    (Sync("a" * 40, NOON, "error"), "error", "check failed: no reason given"),
])
def test_the_sync_status(sync, state, description):
    assert sync_status(sync) == (state, description)


def test_a_long_drift_names_what_fits_and_counts_the_rest():
    objects = tuple(drifted(f"Deployment shop/web-{i:02}") for i in range(50))
    state, description = sync_status(Sync("a" * 40, NOON, "drifted", 120, objects, compared=300))
    assert state == "failure" and len(description) <= 140
    assert description.startswith("120 objects drifted: Deployment shop/web-00 (changed), Deployment shop/web-01 (")
    named = description.count("(changed)")
    assert named >= 3 and description.endswith(f", and {120 - named} more")


def test_a_name_too_long_for_the_status_leaves_only_the_count():
    state, description = sync_status(Sync("a" * 40, NOON, "drifted", 2, (drifted("ConfigMap shop/" + "x" * 200),)))
    assert (state, description) == ("failure", "2 objects drifted")


def test_a_long_error_is_cut_to_fit():
    state, description = sync_status(Sync("a" * 40, NOON, "error", error="boom " * 100))
    assert state == "error" and len(description) == 140 and description.endswith("…")


@pytest.mark.parametrize("health, words", [
    ({"healthy": 12, "progressing": 1, "unknown": 4}, "12 healthy, 1 progressing, 4 without health information"),
    ({"unknown": 2, "degraded": 1, "healthy": 0}, "1 degraded, 2 without health information"),
    ({}, ""),
    ({"suspended": 1, "healthy": 2}, "2 healthy, 1 suspended"),
])
def test_health_in_words(health, words):
    assert health_summary(health) == words

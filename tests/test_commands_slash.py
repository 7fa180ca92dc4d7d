"""What each slash command decides, from plain facts: tables of tiny inputs and the verdicts they make."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.commands import parse
from bot.config import Environment, RepoConfig
from bot.environments import Hold, Pending, Record, Status, Sync
from bot.forges.base import PullState
from bot.slash import (EnvState, Facts, Lock, Merge, Outcome, Recompute, Rollback, Unlock, decide, final_reaction,
                       previous_deploy, reply)

STAGING = Environment("staging", "main", "envs/staging", cluster="staging", deployers="write",
                      require=("approved", "mergeable"))
PRODUCTION = Environment("production", "production", "envs/production", cluster="production", deployers="maintain")
DOCS = Environment("docs", "main", "docs")
CONFIG = RepoConfig((STAGING, PRODUCTION, DOCS))
OPEN = PullState("h" * 40, "main", "open", mergeable=True, approved=True)
NOTHING = Status(None, None, None, None)


def record(sha: str, result: str = "success", started: float = 1_700_000_000.0) -> Record:
    return Record(sha * 40, "alice", started, result)  # type: ignore[arg-type]


def facts(held: str | None = "write", pull: PullState = OPEN, config: RepoConfig | None = CONFIG,
          **states: EnvState) -> Facts:
    envs = {e.name: states.get(e.name, EnvState(NOTHING)) for e in (config.environments if config else ()) if e.cluster}
    return Facts("alice", "/", pull, config, None if config else "`.gitops.yaml`: environments: expected a mapping",
                 held, envs)


def verdict(body: str, given: Facts):
    (command,) = parse(body)
    return decide(command, given).then


def text(body: str, given: Facts) -> str:
    outcome = verdict(body, given)
    assert isinstance(outcome, Outcome) and outcome.text, outcome
    return outcome.text


@pytest.mark.parametrize("body, given, expected", [
    ("/diff", facts(held=None), Recompute("main", OPEN.head_sha)),
    ("/deploy", facts(), Merge(STAGING, OPEN.head_sha, ("staging",))),
    ("/deploy STAGING", facts(), Merge(STAGING, OPEN.head_sha, ("staging",))),
    ("/deploy production", facts("admin", replace(OPEN, base_ref="production")),
     Merge(PRODUCTION, OPEN.head_sha, ("production",))),
    ("/lock staging release freeze", facts(), Lock(STAGING, "release freeze", None)),
    ("/lock staging", facts(staging=EnvState(replace(NOTHING, hold=Hold("bob", "", 1.0)))),
     Lock(STAGING, "", Hold("bob", "", 1.0))),
    ("/unlock staging", facts(staging=EnvState(replace(NOTHING, hold=Hold("bob", "", 1.0)))), Unlock(STAGING)),
    ("/rollback staging abc1234", facts(), Rollback(STAGING, "abc1234")),
    ("/rollback staging", facts(staging=EnvState(replace(NOTHING, deployed=record("c")),
                                                 (record("d", "failure"), record("c"), record("b"), record("a")))),
     Rollback(STAGING, "b" * 40)),
])
def test_commands_that_act(body, given, expected):
    assert verdict(body, given) == expected


LOCKED = EnvState(replace(NOTHING, hold=Hold("bob", "incident | 42", 1.0)))


@pytest.mark.parametrize("body, given, result, words", [
    ("/frobnicate", facts(), "invalid", "`/frobnicate` is not a command I know; `/help` lists those I do."),
    ("/rollback", facts(), "invalid", "usage: `/rollback ENV [SHA]`"),
    ("/unlock staging now", facts(), "invalid", "usage: `/unlock ENV`"),
    ("/status please", facts(), "invalid", "usage: `/status`"),
    ('/lock staging "oops', facts(), "invalid", "cannot read the arguments"),
    ("/deploy staging", facts("triage"), "refused", "/deploy on staging needs write permission; you have triage."),
    ("/deploy production", facts("write", replace(OPEN, base_ref="production")), "refused",
     "/deploy on production needs maintain permission; you have write."),
    ("/lock production", facts("none"), "refused", "/lock on production needs maintain permission; you have none."),
    ("/rollback staging", facts("read"), "refused", "/rollback on staging needs write permission; you have read."),
    ("/deploy docs", facts("admin"), "refused", "`docs` has no cluster"),
    ("/lock docs", facts("admin"), "refused", "`docs` has no cluster"),
    ("/deploy nowhere", facts(), "refused", "There is no environment `nowhere`; this repository has `staging`, "
                                            "`production`, `docs`."),
    ("/deploy", facts(pull=replace(OPEN, base_ref="develop")), "refused",
     "`develop`, this pull request's base, deploys no environment."),
    ("/deploy production", facts("admin"), "refused",
     "`production` deploys from `production`, but this pull request merges into `main`."),
    ("/deploy", facts(pull=replace(OPEN, state="merged")), "refused", "This pull request is merged already."),
    ("/diff", facts(pull=replace(OPEN, state="closed")), "refused", "This pull request is closed"),
    ("/deploy", facts(pull=replace(OPEN, approved=False)), "refused", "`require: approved` is unmet"),
    ("/deploy", facts(pull=replace(OPEN, mergeable=False)), "refused", "says it does not merge cleanly"),
    ("/deploy", facts(pull=replace(OPEN, mergeable=None)), "refused", "the forge is still checking"),
    ("/deploy", facts(staging=LOCKED), "refused",
     "`staging` is locked by @bob: incident | 42; `/unlock staging` first."),
    ("/rollback staging", facts(), "refused", "`staging` has never been deployed, so there is nothing to roll back "
                                              "to; name a commit: `/rollback staging SHA`."),
    ("/rollback staging", facts(staging=EnvState(replace(NOTHING, deployed=record("c")), (record("c"),))), "refused",
     f"`staging` has no successful deploy before `{'c' * 7}`"),
    ("/unlock staging", facts(), "ok", "`staging` is not locked; there is nothing to release."),
    ("/status", facts(config=None), "failed",
     "The repo config on `main` could not be read: `.gitops.yaml`: environments: expected a mapping"),
])
def test_commands_answered_without_acting(body, given, result, words):
    outcome = verdict(body, given)
    assert isinstance(outcome, Outcome) and outcome.result == result
    assert words in outcome.text


def test_a_deploy_needs_the_permission_of_every_environment_the_merge_deploys():
    payments = Environment("payments", "main", "charts/payments", cluster="staging", deployers="admin")
    given = facts("maintain", config=RepoConfig((STAGING, payments)))
    assert "/deploy on payments needs admin permission; you have maintain." in text("/deploy staging", given)
    assert "deploys `staging`, `payments`: name one, as in `/deploy staging`" in text("/deploy", given)
    assert verdict("/deploy staging", replace(given, held="admin")) == Merge(STAGING, OPEN.head_sha,
                                                                              ("staging", "payments"))


def test_help_lists_the_commands_and_who_may_run_them_in_this_repository():
    help_text = text("/help", facts(held=None))
    assert "| `/deploy [ENV]` | the environment's deployers | check the requirements, merge" in help_text
    assert "| `/status` | anyone who can comment |" in help_text
    assert "**Environments** (`.gitops.yaml` on `main`)" in help_text
    assert "| `staging` | `main` | `envs/staging` | write or above | approved, mergeable |" in help_text
    assert "| `production` | `production` | `envs/production` | maintain or above | nothing |" in help_text
    assert "| `docs` | `main` | `docs` | nobody: no cluster, diffs only | nothing |" in help_text
    assert "could not be read" in text("/help", facts(config=None))


def test_status_shows_each_environment_with_its_deploy_lock_and_pending_commit():
    hold, pending = Hold("bob", "incident | 42", 1.0), Pending("e" * 40, "carol", 60.0)
    staging = EnvState(Status(record("c", started=0.0), hold, pending, None), (record("d", "failure"),))
    production = EnvState(replace(NOTHING, deploying="f" * 40))
    table = text("/status", facts(staging=staging, production=production)).splitlines()
    assert table[0] == "| Environment | Branch | Deployed | When | By | Last result | Sync | Health | Lock | Pending |"
    assert table[2] == ("| `staging` | `main` | `ccccccc` | 1970-01-01 00:00 UTC | @alice | ❌ failure of `ddddddd` "
                        "| ❓ not checked yet |  | 🔒 @bob: incident \\| 42 | `eeeeeee` since 1970-01-01 00:01 UTC |")
    assert table[3] == "| `production` | `production` | never |  |  | ⏳ deploying `fffffff` | ❓ not checked yet |  |  |  |"
    assert table[4] == "| `docs` | `main` | diffs only (no cluster) |  |  |  |  |  |  |  |"
    assert len(table) == 5  # nothing drifted or unhealthy to list below it


def test_status_says_the_last_record_was_a_heal_of_the_drift():
    healed = replace(record("c"), heal=True, actor="gitops-bot")
    staging = EnvState(Status(record("c"), None, None, None), (healed,))
    assert "| ✅ re-applied the drift of `ccccccc` |" in text("/status", facts(staging=staging))
    failed = EnvState(Status(record("c"), None, None, None), (replace(healed, result="failure"),))
    assert "| ❌ re-applied the drift of `ccccccc` (failure) |" in text("/status", facts(staging=failed))


DEPLOYED = replace(NOTHING, deployed=record("c"))
CHECKED = 1_700_000_100.0  # 2023-11-14 22:15 UTC


def drift(key: str, what: str = "changed", fields: tuple[str, ...] = ("spec.replicas",),
          managers: tuple[str, ...] = ("kubectl-edit",)) -> dict:
    return {"key": key, "what": what, "fields": list(fields), "managers": list(managers)}


def status_of(sync: Sync, status: Status = DEPLOYED) -> list[str]:
    """The /status answer for `staging` with `sync`: its row's Sync and Health cells, then what follows the table."""
    lines = text("/status", facts(staging=EnvState(status, (record("c"),), sync))).split("\n")
    cells = [cell.strip() for cell in lines[2].strip("|").split(" | ")]
    assert lines[5:6] in ([], [""])  # the table ends after docs, the last environment
    return [cells[6], cells[7], *lines[6:]]


@pytest.mark.parametrize("sync, status, cell", [
    (Sync("c" * 40, CHECKED, "in_sync", compared=41), DEPLOYED,
     "✅ in sync: 41 objects, checked 2023-11-14 22:15 UTC"),
    (Sync("c" * 40, CHECKED, "drifted", 3, (drift("Deployment shop/web"),), compared=41), DEPLOYED,
     "⚠️ 3 drifted, checked 2023-11-14 22:15 UTC"),
    (Sync("c" * 40, CHECKED, "drifted", 1, (drift("Deployment shop/web"),), compared=41, healed=True), DEPLOYED,
     "🩹 1 drifted and re-applied, checked 2023-11-14 22:15 UTC"),
    (Sync("c" * 40, CHECKED, "error", error="cluster staging:\n connection | refused"), DEPLOYED,
     "❌ check failed: cluster staging: connection \\| refused; checked 2023-11-14 22:15 UTC"),
    (Sync("b" * 40, CHECKED, "in_sync", compared=2), DEPLOYED,  # checked before `ccccccc` was deployed
     "✅ in sync: 2 objects, checked 2023-11-14 22:15 UTC against `bbbbbbb`"),
])
def test_status_shows_the_sync_state_and_when_it_was_checked(sync, status, cell):
    assert status_of(sync, status)[0] == cell


def test_status_shows_health_naming_the_first_unhealthy_object_and_why():
    sync = Sync("c" * 40, CHECKED, "in_sync", compared=17, health={"healthy": 12, "progressing": 1, "unknown": 4},
                unhealthy=({"key": "apps/Deployment shop/web", "health": "progressing",
                            "message": "Waiting for rollout: 1 of 3 updated replicas are available"},))
    sync_cell, health, *below = status_of(sync)
    assert sync_cell.startswith("✅ in sync: 17 objects")
    assert health == ("12 healthy, 1 progressing, 4 without health information; `apps/Deployment shop/web` "
                      "progressing: `Waiting for rollout: 1 of 3 updated replicas are available`")
    assert below == ["**`staging`**: 1 object not healthy",
                     "- `apps/Deployment shop/web` progressing: `Waiting for rollout: 1 of 3 updated replicas are "
                     "available`"]


def test_status_lists_a_few_drifted_and_unhealthy_objects_below_the_table_and_counts_the_rest():
    drifted = (drift("apps/Deployment shop/web", fields=("spec.replicas", "spec.template.spec.containers[web].image",
                                                         "metadata.labels.tier", "metadata.labels.team")),
               drift("ConfigMap shop/settings", "missing", (), ()),
               drift("Service shop/old", "extra", (), ()),
               *(drift(f"ConfigMap shop/cm-{i}", "missing", (), ()) for i in range(4)))
    unhealthy = tuple({"key": f"apps/Deployment shop/w{i}", "health": "degraded", "message": "quota `exceeded`\n@bob"}
                      for i in range(6))
    sync = Sync("c" * 40, CHECKED, "drifted", 9, drifted, compared=50,
                health={"healthy": 40, "degraded": 8, "unknown": 2}, unhealthy=unhealthy)
    sync_cell, health, *below = status_of(sync)
    assert sync_cell == "⚠️ 9 drifted, checked 2023-11-14 22:15 UTC"
    assert health.startswith("40 healthy, 8 degraded, 2 without health information; `apps/Deployment shop/w0` "
                             "degraded: `quota 'exceeded' @bob`")
    assert below == [
        "**`staging`**: 9 objects drifted",
        "- `apps/Deployment shop/web` changed: `spec.replicas`, `spec.template.spec.containers[web].image`, "
        "`metadata.labels.tier` and 1 more, now managed by `kubectl-edit`",
        "- `ConfigMap shop/settings` is missing from the cluster",
        "- `Service shop/old` is no longer rendered but is still in the cluster",
        "- `ConfigMap shop/cm-0` is missing from the cluster",
        "- `ConfigMap shop/cm-1` is missing from the cluster",
        "- and 4 more",
        "",
        "**`staging`**: 8 objects not healthy",
        *(f"- `apps/Deployment shop/w{i}` degraded: `quota 'exceeded' @bob`" for i in range(5)),
        "- and 3 more"]


@pytest.mark.parametrize("history, current, expected", [
    ("cba", "c", "b"),
    ("dcba", "c", "b"),  # a newer failure (d failed) is not the current deploy
    ("ccba", "c", "b"),  # the current commit deployed twice
    ("c", "c", None),
    ("", "c", None),
    ("rcb", "r", "c"),  # after a rollback, rolling back again goes back to what was rolled back
])
def test_the_previous_deploy(history, current, expected):
    records = [record(sha, "failure" if sha == "d" else "success") for sha in history]
    found = previous_deploy(records, current * 40)
    assert (found.sha[0] if found else None) == expected


def test_one_reply_quotes_each_command_it_answers():
    commands = parse("/lock staging freeze\n/diff\n/frob")
    outcomes = [Outcome("ok", "🔒 locked"), Outcome("ok"), Outcome("invalid", "❓ unknown")]
    assert reply(commands, outcomes, "blue") == ("<!-- gitops-bot:commands:blue -->\n\n> /lock staging freeze\n\n"
                                                 "🔒 locked\n\n> /frob\n\n❓ unknown\n")
    assert reply(commands[1:2], outcomes[1:2], "blue") is None  # nothing to say: the reactions say it


@pytest.mark.parametrize("results, reaction", [
    (["ok", "ok"], "+1"), (["ok", "invalid"], "confused"), (["invalid", "refused"], "-1"), (["failed"], "-1"),
])
def test_the_result_reaction(results, reaction):
    assert final_reaction([Outcome(r) for r in results]) == reaction

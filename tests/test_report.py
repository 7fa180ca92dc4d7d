"""The report's Markdown, splitting, text and JSON."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bot.diff import Change, DiffReport, EnvironmentDiff, ObjectKey
from bot.report import as_json, fence_for, markdown, patch, status_description, text

HEAD, BASE = "a" * 40, "b" * 40
DEPLOY = ObjectKey("apps", "Deployment", "apps", "web")


def change(op: str = "~", name: str = "web", diff: str = "@@ -1 +1 @@\n-  replicas: 1\n+  replicas: 3") -> Change:
    return Change(op, ObjectKey("apps", "Deployment", "apps", name), diff, "envs/staging/web.yaml")


def report(*envs: EnvironmentDiff, error: str | None = None) -> DiffReport:
    return DiffReport(BASE, HEAD, envs, error=error)


def env(*changes: Change, **kwargs) -> EnvironmentDiff:
    return EnvironmentDiff("staging", "envs/staging", changes, cluster="staging", **kwargs)


def test_comment_layout():
    (body,) = markdown(report(env(change("+", "a"), change("~", "b"), change("-", "c"))), "gitops-bot")
    lines = body.splitlines()
    assert lines[0] == "<!-- gitops-bot:diff:gitops-bot -->"
    assert lines[1] == "### gitops-bot diff for `aaaaaaa`"
    assert "Base `bbbbbbb` → head `aaaaaaa`: **1 added, 1 changed, 1 removed** in 1 environment." in body
    assert "#### `staging` · `envs/staging` → cluster `staging`" in body
    assert "| Added | Changed | Removed |\n|---:|---:|---:|\n| 1 | 1 | 1 |" in body
    assert body.count("<details>") == body.count("</details>") == 3
    assert "<summary><code>+ apps/Deployment apps/a</code> <sub>envs/staging/web.yaml</sub></summary>" in body
    assert "```diff\n@@ -1 +1 @@\n-  replicas: 1\n+  replicas: 3\n```" in body


@pytest.mark.parametrize("environment, words", [
    (env(), "No changes."),
    (env(unchanged_inputs=True), "nothing this environment renders from was touched"),
    (env(error="envs/staging/web.yaml: line 3, column 1: mapping values are not allowed here"),
     "**Render failed:**\n\n```text\nenvs/staging/web.yaml: line 3"),
    (env(change(), warnings=("`x` is defined more than once",)), "> ⚠️ `x` is defined more than once"),
])
def test_environment_states(environment, words):
    (body,) = markdown(report(environment), "gitops-bot")
    assert words in body


def test_config_error_and_no_environments():
    (broken,) = markdown(report(error=".gitops.yaml: environments.x.cluster: expected ..."), "bot")
    assert "**The diff could not be computed.**" in broken and ".gitops.yaml: environments.x.cluster" in broken
    (empty,) = markdown(report(), "bot")
    assert "No environment deploys from this pull request's base branch" in empty


def test_instance_name_goes_in_the_marker():
    (body,) = markdown(report(env(change())), "bot-two")
    assert body.startswith("<!-- gitops-bot:diff:bot-two -->\n")


def test_backticks_in_a_diff_cannot_close_its_fence():
    body = "\n".join(markdown(report(env(change(diff="+  script: |\n+    ```\n+    ````"))), "bot"))
    assert fence_for("a ```` b") == "`````"
    assert "`````diff\n" in body and "\n`````\n" in body


def test_html_in_names_is_escaped():
    key_change = Change("+", ObjectKey("", "ConfigMap", "", "<script>"), "+x", "a<b>.yaml")
    (body,) = markdown(report(env(key_change)), "bot")
    assert "<script>" not in body and "&lt;script&gt;" in body


def balanced(part: str) -> bool:
    fences = re.findall(r"^(`{3,})", part, flags=re.M)
    return part.count("<details>") == part.count("</details>") and len(fences) % 2 == 0


@pytest.mark.parametrize("limit", [4_000, 10_000, 65_536])
def test_splitting_keeps_blocks_whole_and_parts_under_the_limit(limit):
    changes = [change(name=f"web-{i:03}", diff="\n".join(f"+  line {j}" for j in range(40))) for i in range(120)]
    parts = markdown(report(env(*changes)), "bot", limit, max_parts=None)
    assert len(parts) > 1
    for number, part in enumerate(parts, 1):
        assert len(part) <= limit
        assert part.startswith(f"<!-- gitops-bot:diff:bot -->\n**Part {number} of {len(parts)}**")
        assert balanced(part)
    joined = "\n".join(parts)
    assert all(f"apps/web-{i:03}</code>" in joined for i in range(120))  # nothing lost
    assert "(continued)" in parts[1]


def test_a_report_just_under_the_limit_is_one_part_and_just_over_is_two():
    changes = [change(name=f"w{i}", diff="+" + "x" * 500) for i in range(10)]
    (single,) = markdown(report(env(*changes)), "bot", 100_000)
    assert len(markdown(report(env(*changes)), "bot", len(single) + 300)) == 1
    assert len(markdown(report(env(*changes)), "bot", len(single) + 299 - 600)) == 2


def test_one_huge_object_is_truncated_inside_its_fence():
    huge = change(diff="\n".join(f"+  key{i}: value" for i in range(20_000)))
    parts = markdown(report(env(huge)), "bot", 65_536)
    assert all(len(p) <= 65_536 and balanced(p) for p in parts)
    assert "more lines not shown; run `gitops-bot diff`" in parts[-1]


def test_status_description():
    assert status_description(report(env(change("+"), change("~")))) == "1 added, 1 changed, 0 removed"
    assert status_description(report(env(error="x"))) == "render failed in staging"
    assert status_description(report()) == "no environment deploys from this branch"


def test_text_and_json_formats():
    r = report(env(change("~")))
    plain = text(r)
    assert "== staging (envs/staging): 0 added, 1 changed, 0 removed" in plain and "\033[" not in plain
    assert "\033[32m" in text(r, colour=True)
    data = json.loads(as_json(r))
    assert data["counts"] == {"added": 0, "changed": 1, "removed": 0}
    assert data["environments"][0]["changes"][0]["kind"] == "Deployment"


def test_the_header_says_when_rendering_failed():
    broken = EnvironmentDiff("production", "envs/production", error="envs/production/a.yaml: line 1: bad")
    (body,) = markdown(report(env(change()), broken), "bot")
    assert "**0 added, 1 changed, 0 removed** in 1 environment; **rendering failed in 1**." in body
    (body,) = markdown(report(broken), "bot")
    assert "nothing could be compared; **rendering failed in 1**." in body


def test_a_diff_too_big_for_a_few_comments_is_summed_up_in_one():
    changes = [change("~", f"obj-{i:05}") for i in range(3000)]
    big = replace(changes[1234], diff=changes[1234].diff + "".join(f"+  line{n}: x\n" for n in range(400)))
    changes[1234] = big
    full = markdown(report(env(*changes)), "gitops-bot", 20_000, max_parts=None)
    assert len(full) > 5
    (summary,) = markdown(report(env(*changes)), "gitops-bot", 20_000)
    assert len(summary) <= 20_000 and summary.startswith("<!-- gitops-bot:diff:gitops-bot -->\n")
    assert "| 0 | 3000 | 0 |" in summary  # every environment's counts
    assert f"**The whole diff would take {len(full)} comments**, more than the 5 a pull request gets" in summary
    assert "`gitops-bot diff " in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ~ |")]
    assert "obj-01234" in rows[0]  # the largest change first
    assert summary.rstrip().endswith(f"… and {3000 - len(rows):,} more changes.")


def renamed_change(kind: str = "ConfigMap") -> Change:
    old, new = (ObjectKey("", kind, "apps", f"settings-{h}") for h in ("5f8d7c9b2k", "h2g7tk5b9m"))
    diff = "@@ -1,2 +1,2 @@\n metadata:\n-  name: settings-5f8d7c9b2k\n+  name: settings-h2g7tk5b9m"
    return Change("~", new, diff, "envs/staging/kustomization.yaml (configMapGenerator)", renamed_from=old)


def test_a_generator_rename_is_one_change_in_every_format():
    r = report(env(renamed_change()))
    (body,) = markdown(r, "bot")
    assert "| 0 | 1 | 0 |" in body
    assert ("<summary><code>~ ConfigMap apps/settings-h2g7tk5b9m</code> <sub>envs/staging/kustomization.yaml "
            "(configMapGenerator) · renamed by its generator from settings-5f8d7c9b2k</sub></summary>") in body
    assert ("~ ConfigMap apps/settings-h2g7tk5b9m  (envs/staging/kustomization.yaml (configMapGenerator); "
            "renamed by its generator from settings-5f8d7c9b2k)") in text(r)
    assert patch(r).startswith("--- a/staging/core/ConfigMap/apps/settings-5f8d7c9b2k.yaml\n"
                               "+++ b/staging/core/ConfigMap/apps/settings-h2g7tk5b9m.yaml\n@@ ")
    (changed,) = json.loads(as_json(r))["environments"][0]["changes"]
    assert (changed["op"], changed["name"], changed["renamed_from"]) == ("changed", "settings-h2g7tk5b9m",
                                                                        "settings-5f8d7c9b2k")


def test_a_change_without_a_rename_says_none():
    r = report(env(change("~")))
    assert json.loads(as_json(r))["environments"][0]["changes"][0]["renamed_from"] is None
    assert "renamed" not in markdown(r, "bot")[0] + text(r)
    assert patch(r).startswith("--- a/staging/apps/Deployment/apps/web.yaml\n+++ b/staging/apps/Deployment/apps/web.yaml")


def test_the_summary_of_a_huge_diff_names_the_old_name_too():
    big = change("~", "big", "@@ -1 +1 @@\n" + "\n".join(f"+line {i} " + "x" * 80 for i in range(2_000)))
    (body,) = markdown(report(env(renamed_change(), *[replace(big, key=replace(big.key, name=f"big-{i}"))
                                                       for i in range(6)])), "bot", limit=60_000, max_parts=1)
    assert "`ConfigMap apps/settings-h2g7tk5b9m` (renamed from `settings-5f8d7c9b2k`)" in body

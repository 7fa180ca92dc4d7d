"""The dashboard after a real deploy and a lock: its JSON, its token, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bot.environments import EnvRef, Environments, Sync
from bot.forges.github import signature
from tests.conftest import payload
from tests.fakes.github_api import FakeGitHub
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, PASSWORD_BASE, Bot, bot_env

REPO, SECRET, TOKEN, DASHBOARD_TOKEN = "acme/infra", "dash-secret", "ghp_dashTOKEN0123456789", "dash-token-42"
FILES = {".gitops.yaml": "environments:\n  staging: {branch: main, path: apps, cluster: staging, namespace: shop}\n",
         "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n", **BASE_FILES}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def deployed(tmp_path: Path, remote, redis_server, redis):
    """A bot whose `staging` environment was deployed by a push, then locked."""
    with FakeGitHub(bot_login="gitops-bot") as github, FakeKubeAPI() as kube:
        kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
        config = (f'repos: ["acme/*"]\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, repos: ["*"]}}\n')
        github.add_repo(REPO, clone_url=remote.url)
        bot = Bot(bot_env(tmp_path, redis_server.url, config, GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN,
                          GITHUB_API_URL=github.url, GITOPS_BOT_DASHBOARD_TOKEN=DASHBOARD_TOKEN))
        sha = remote.commit("main", FILES, "base")
        push = payload("github/push.branch")
        push.update(ref="refs/heads/main", before="0" * 40, after=sha)
        push["repository"].update(full_name=REPO, clone_url=remote.url, default_branch="main")
        raw = json.dumps(push).encode()
        answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "push-1",
                                                    "X-Hub-Signature-256": signature(SECRET, raw)})
        assert answer.status == 202
        bot.work()
        Environments(redis, "gitops-bot").lock(EnvRef("github", REPO, "staging"), "alice", "release freeze")
        yield bot, sha
        bot.stop()


def test_the_api_shows_the_deploy_the_lock_and_the_delivery(deployed):
    bot, sha = deployed
    state = bot.get(f"/api/state?token={DASHBOARD_TOKEN}")
    assert state.status == 200
    (env,) = state.body["environments"]
    assert (env["repo"], env["environment"], env["deployed_sha"], env["result"]) == (REPO, "staging", sha, "success")
    assert env["commit_url"].endswith(f"/{REPO}/commit/{sha}")
    assert env["lock"]["actor"] == "alice" and env["lock"]["reason"] == "release freeze"
    assert env["history"][0]["created"] == 4  # the namespace, Deployment, Secret and ConfigMap
    assert state.body["deliveries"][0]["delivery"] == "push-1"
    assert {q["name"] for q in state.body["queues"]} == {"gitops-bot.deploy", "gitops-bot.commands", "gitops-bot.diff"}


def test_the_token_is_required(deployed):
    bot, _ = deployed
    for path in ("/", "/api/state", "/api/environments", "/api/deliveries", "/api/queues"):
        assert bot.get(path).status == 401
        assert bot.get(path + "?token=wrong").status == 401
    assert bot.get("/api/queues?token=" + DASHBOARD_TOKEN).status == 200


def test_nothing_on_it_reveals_a_token_or_a_secret_value(deployed):
    bot, _ = deployed
    import urllib.request

    page = urllib.request.urlopen(f"{bot.url}/?token={DASHBOARD_TOKEN}").read().decode()
    data = json.dumps(bot.get(f"/api/state?token={DASHBOARD_TOKEN}").body)
    for text in (page, data):
        for secret in (TOKEN, SECRET, PASSWORD_BASE, "password-one"):
            assert secret not in text


def record_checks(redis, sha: str) -> float:
    """`staging` drifted and degraded, `production` in sync, `payments` whose check failed; checked 5 minutes ago."""
    checked, envs = time.time() - 300, Environments(redis, "gitops-bot")
    envs.record_sync(EnvRef("github", REPO, "staging"), Sync(
        sha, checked, "drifted", 3,
        ({"key": "apps/Deployment shop/web", "what": "changed", "fields": ["spec.replicas", "spec.template.image"],
          "managers": ["kubectl-edit"]},
         {"key": "ConfigMap shop/settings", "what": "missing", "fields": [], "managers": []}),
        compared=4, health={"healthy": 2, "degraded": 1, "unknown": 1},
        unhealthy=({"key": "apps/Deployment shop/web", "health": "degraded",
                    "message": "quota exceeded <img src=x onerror=alert(1)>"},)))
    envs.record_sync(EnvRef("github", REPO, "production"), Sync("f" * 40, checked, "in_sync", compared=41,
                                                                health={"healthy": 41}))
    envs.record_sync(EnvRef("github", REPO, "payments"), Sync("f" * 40, checked, "error",
                                                              error="cluster staging: connection refused"))
    return checked


def test_the_api_shows_each_environments_sync_check(deployed, redis):
    bot, sha = deployed
    envs = {row["environment"]: row for row in bot.get(f"/api/environments?token={DASHBOARD_TOKEN}").body}
    assert envs["staging"]["sync"]["state"] == "in_sync" and envs["staging"]["attention"] == []  # as the deploy left it

    checked = record_checks(redis, sha)
    envs = {row["environment"]: row for row in bot.get(f"/api/environments?token={DASHBOARD_TOKEN}").body}
    staging = envs["staging"]["sync"]
    assert (staging["state"], staging["sha"], staging["stale"], staging["compared"]) == ("drifted", sha, False, 4)
    assert staging["checked"] == checked
    assert staging["checked_utc"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checked))
    assert staging["drifted_count"] == 3 and staging["drifted"][0] == {
        "key": "apps/Deployment shop/web", "what": "changed", "fields": ["spec.replicas", "spec.template.image"],
        "managers": ["kubectl-edit"]}
    assert staging["health"] == {"healthy": 2, "degraded": 1, "unknown": 1}
    assert staging["health_words"] == "2 healthy, 1 degraded, 1 without health information"
    assert staging["unhealthy"][0]["health"] == "degraded" and staging["unhealthy_count"] == 1
    assert envs["staging"]["attention"] == ["3 objects drifted", "1 degraded"]
    assert envs["production"]["attention"] == [] and envs["production"]["sync"]["state"] == "in_sync"
    assert envs["production"]["sync"]["stale"]  # checked against a commit it never deployed
    assert envs["payments"]["attention"] == ["sync check failed: cluster staging: connection refused"]


def chromium_dom(url: str, tmp_path: Path) -> str:
    """The page as headless Chromium renders it."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60)
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_the_page_in_a_real_browser(deployed, tmp_path):
    bot, sha = deployed
    dom = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    environments = dom.split('id="environments"', 1)[1].split("</table>", 1)[0]
    assert f'<code class="sha">{sha[:7]}</code>' in environments
    assert "locked by alice: release freeze" in environments
    assert "staging" in environments
    refused = chromium_dom(f"{bot.url}/", tmp_path)
    assert sha[:7] not in refused and "token" in refused


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_a_drifted_or_degraded_environment_stands_out_in_a_real_browser(deployed, tmp_path, redis):
    bot, sha = deployed
    calm = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    assert 'id="attention"' not in calm and '<span class="ok">in sync</span>' in calm  # as the deploy left it

    checked = record_checks(redis, sha)
    dom = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    assert dom.index('id="attention"') < dom.index('id="environments"')  # above the fold, before the table
    attention = dom.split('id="attention"', 1)[1].split("</section>", 1)[0]
    payments, staging = attention.split('<div class="environment">')[1:]  # by name, as the table
    assert "<b>staging</b>: <span class=\"bad\">3 objects drifted; 1 degraded</span>" in staging
    absolute = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(checked))
    assert f"checked 5m ago ({absolute}) against <code>{sha[:7]}</code>;" in staging
    assert ("<td><code>apps/Deployment shop/web</code></td><td class=\"bad\">changed</td>"
            "<td><code>spec.replicas</code>, <code>spec.template.image</code></td><td>kubectl-edit</td>") in staging
    assert "<td><code>ConfigMap shop/settings</code></td><td class=\"bad\">missing</td>" in staging
    assert "and 1 more" in staging  # 3 drifted, 2 named
    assert "quota exceeded &lt;img src=x onerror=alert(1)&gt;" in staging and "<img" not in dom
    assert "<b>payments</b>: <span class=\"bad\">sync check failed: cluster staging: connection refused" in payments
    assert "production" not in attention  # in sync and healthy: nothing to look at

    Environments(redis, "gitops-bot").record_sync(EnvRef("github", REPO, "staging"), Sync(
        sha, checked, "drifted", 70, tuple({"key": f"ConfigMap shop/cm-{i:02}", "what": "missing"} for i in range(50)),
        compared=80, health={"healthy": 80}))
    many = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path).split('id="attention"', 1)[1]
    assert "cm-09" in many and "cm-10" not in many and "and 60 more" in many  # a few, then a count

    table = dom.split('id="environments"', 1)[1].split("</table>", 1)[0]
    rows = {row.split("<b>", 1)[1].split("</b>", 1)[0]: row for row in table.split("<tr")[2:]}
    assert 'class="attention"' in rows["staging"] and 'class="attention"' not in rows["production"]
    assert '<span class="bad">3 drifted</span> of 4 objects' in rows["staging"]
    assert f"checked 5m ago ({absolute})" in rows["staging"]
    assert '<span class="bad">2 healthy, 1 degraded, 1 without health information</span>' in rows["staging"]
    assert '<span class="ok">in sync</span>, 41 objects' in rows["production"]
    assert '<span class="bad">check failed: cluster staging: connection refused</span>' in rows["payments"]

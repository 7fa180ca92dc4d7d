"""The dashboard after a real deploy and a lock: its JSON, its token, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.environments import EnvRef, Environments
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

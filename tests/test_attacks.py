"""Attacks on the bot, each through its real entry point (the web app over HTTP, a real worker, real
Redis and git): forged deliveries, pull requests that try to widen their rights or read outside
the repository, unauthorised commands, an open dashboard, and secrets leaking into what is posted."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from bot.forges.github import signature
from tests.conftest import Symlink, payload
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.fakes.http import RecordingServer
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import (BASE_FILES, HEAD_CHANGES, PASSWORD_BASE, PASSWORD_HEAD, Bot, ForgeScenario,
                           MergeRequestScenario, PullRequestScenario, bot_env)

SECRET, TOKEN, DASHBOARD_TOKEN = "attack-webhook-secret", "attack-TOKEN-value-0123", "attack-dashboard-token"
REPO, PROJECT = "acme/infra", "group/sub/infra"
STRING_DATA = "plain-text-api-key-5e1f"
"""A Secret's `stringData` value: it must never be shown either."""


def config(tmp_path: Path, kube: FakeKubeAPI | None = None) -> str:
    clusters = ""
    if kube:
        clusters = (f"clusters:\n  staging: {{kubeconfig: {kube.kubeconfig(str(tmp_path / 'kubeconfig'))}, "
                    f"context: {kube.context}, repos: ['*']}}\ndeploy: {{rollout_timeout: 10}}\n")
    return f"repos: ['acme/*', 'group/sub/*']\n{clusters}"


@pytest.fixture
def kube():
    with FakeKubeAPI() as fake:
        yield fake


@contextlib.contextmanager
def running(env: dict[str, str]) -> Iterator[Bot]:
    bot = Bot(env)
    try:
        yield bot
    finally:
        bot.stop()


@pytest.fixture
def github_bot(tmp_path, redis_server, redis, github) -> Iterator[Bot]:
    with running(bot_env(tmp_path, redis_server.url, config(tmp_path), GITHUB_WEBHOOK_SECRET=SECRET,
                         GITHUB_TOKEN=TOKEN, GITHUB_API_URL=github.url)) as bot:
        yield bot


# -- forged deliveries ----------------------------------------------------------------------------------

def hub(algorithm: str, secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()


BODY = json.dumps(payload("github/push.branch") | {"repository": {
    **payload("github/push.branch")["repository"], "full_name": REPO,
    "clone_url": "file:///srv/git/infra.git"}}).encode()
FORGED = {
    "missing": {},
    "sha1 only": {"X-Hub-Signature": "sha1=" + hub("sha1", SECRET, BODY)},
    "sha512 prefix": {"X-Hub-Signature-256": "sha512=" + hub("sha512", SECRET, BODY)},
    "upper-case prefix": {"X-Hub-Signature-256": "SHA256=" + hub("sha256", SECRET, BODY)},
    "no prefix": {"X-Hub-Signature-256": hub("sha256", SECRET, BODY)},
    "truncated": {"X-Hub-Signature-256": signature(SECRET, BODY)[:-8]},
    "empty": {"X-Hub-Signature-256": ""},
    "other body": {"X-Hub-Signature-256": signature(SECRET, BODY + b"\n")},
    "empty key": {"X-Hub-Signature-256": signature("", BODY)},
}


def deliver_push(bot: Bot, body: bytes, headers: dict[str, str], delivery: str = "forged-1"):
    return bot.post("/webhooks/github", body, {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, **headers})


@pytest.mark.parametrize("forged", list(FORGED))
def test_a_forged_github_signature_is_refused_and_queues_nothing(github_bot, forged):
    answer = deliver_push(github_bot, BODY, FORGED[forged])
    assert answer.status == 401 and "X-Hub-Signature-256" in answer.body["error"]
    assert github_bot.queued() == 0
    # The refusal is not remembered: the genuine delivery with the same id is still taken.
    assert deliver_push(github_bot, BODY, {"X-Hub-Signature-256": signature(SECRET, BODY)}).status == 202


def test_the_right_signature_over_a_body_altered_by_one_byte_is_refused(github_bot):
    altered = BODY.replace(b'"refs/heads/', b'"refs/heads/'.upper(), 1)
    assert len(altered) == len(BODY) and altered != BODY
    assert deliver_push(github_bot, altered, {"X-Hub-Signature-256": signature(SECRET, BODY)}).status == 401
    assert github_bot.queued() == 0


@pytest.mark.parametrize("sign_with", ["", SECRET])
def test_without_a_webhook_secret_the_github_endpoint_refuses_everything(tmp_path, redis_server, redis, sign_with):
    with running(bot_env(tmp_path, redis_server.url, config(tmp_path), GITHUB_WEBHOOK_SECRET="")) as bot:
        answer = deliver_push(bot, BODY, {"X-Hub-Signature-256": signature(sign_with, BODY)})
        assert answer.status == 401 and "GITHUB_WEBHOOK_SECRET is not set" in answer.body["error"]
        assert bot.queued() == 0


@pytest.mark.parametrize("configured, sent", [(SECRET, None), (SECRET, ""), (SECRET, SECRET[:-1]),
                                              (SECRET, SECRET.upper()), (SECRET, SECRET + "x"),
                                              ("", ""), ("", SECRET), (None, SECRET)])
def test_a_wrong_or_missing_gitlab_token_is_refused_and_queues_nothing(tmp_path, redis_server, redis, configured, sent):
    env = bot_env(tmp_path, redis_server.url, config(tmp_path),
                  **({} if configured is None else {"GITLAB_WEBHOOK_TOKEN": configured}))
    body = payload("gitlab/push")
    body["project"]["path_with_namespace"] = PROJECT
    with running(env) as bot:
        answer = bot.post("/webhooks/gitlab", json.dumps(body).encode(), {
            "X-Gitlab-Event": "Push Hook", **({} if sent is None else {"X-Gitlab-Token": sent})})
        assert answer.status == 401 and ("GITLAB_WEBHOOK_TOKEN" in answer.body["error"]
                                         or "X-Gitlab-Token" in answer.body["error"])
        assert bot.queued() == 0


# -- pull requests that reach for more than they may --------------------------------------------------

def diff_comment(scenario: PullRequestScenario, head: dict) -> tuple[str, str]:
    """The head pushed, its pull request opened and diffed: (head SHA, the diff comment)."""
    sha = scenario.push_head(head)
    assert scenario.deliver(scenario.event("opened", sha)).status == 202
    scenario.bot.work()
    (comment,) = scenario.comments()
    assert "Traceback" not in comment["body"]
    return sha, comment["body"]


def test_a_pull_request_cannot_widen_its_own_rights(remote, github, github_bot):
    gitops = "environments:\n  staging: {branch: main, path: apps, deployers: maintain}\n"
    pr = PullRequestScenario(remote, github, github_bot, REPO, SECRET, files={**BASE_FILES, ".gitops.yaml": gitops})
    _, body = diff_comment(pr, {
        **HEAD_CHANGES,
        ".gitops.yaml": "environments:\n  staging: {branch: main, path: ., deployers: read}\n"
                        "  sneaky: {branch: main, path: loot}\n",
        "loot/stolen.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n"})
    assert "#### `staging` · `apps`" in body and "**1 added, 2 changed, 0 removed** in 1 environment." in body
    # The diff follows the base's config; the head's widening is shown as what it is, a change to review.
    assert "#### `sneaky`" not in body and "stolen" not in body and "#### `staging` · `.`" not in body
    assert "| `staging` | path `apps` → `.`; deployers `maintain` → `read` |" in body


def test_symlinks_out_of_the_repository_show_an_error_and_nothing_from_outside(remote, github, github_bot):
    gitops = "environments:\n  staging: {branch: main, path: apps}\n  linked: {branch: main, path: linked}\n"
    pr = PullRequestScenario(remote, github, github_bot, REPO, SECRET, files={**BASE_FILES, ".gitops.yaml": gitops})
    head, body = diff_comment(pr, {"apps/passwd.yaml": Symlink("/etc/passwd"), "linked": Symlink("../../../../../etc")})
    assert "apps/passwd.yaml: at " in body and "linked: at " in body
    assert body.count("symlink points outside the repository") == 2
    assert "root:" not in body and "/bin/" not in body
    assert github.statuses(REPO, head)[-1]["state"] == "failure"


def test_kustomize_remote_bases_and_exec_plugins_are_refused_without_network(remote, github, github_bot):
    gitops = ("environments:\n  remote: {branch: main, path: envs/remote}\n"
              "  plugin: {branch: main, path: envs/plugin}\n")
    kustomizations = {"envs/remote/kustomization.yaml": "resources: []\n",
                      "envs/plugin/kustomization.yaml": "resources: []\n"}
    pr = PullRequestScenario(remote, github, github_bot, REPO, SECRET,
                             files={**BASE_FILES, ".gitops.yaml": gitops, **kustomizations})
    with RecordingServer() as elsewhere:
        _, body = diff_comment(pr, {
            "envs/remote/kustomization.yaml": f"resources: ['{elsewhere.url}/acme/base?ref=main']\n",
            "envs/plugin/kustomization.yaml": "generators: [plugin.yaml]\n",
            "envs/plugin/plugin.yaml": f"""apiVersion: example.com/v1
kind: Fetcher
metadata:
  name: fetch
  annotations:
    config.kubernetes.io/function: |
      exec: {{path: /bin/sh, args: [-c, "curl {elsewhere.url}/exec"]}}
"""})
        assert elsewhere.requests == []
    assert "is a remote reference; only files in this repository can be rendered" in body
    assert "plugin 'Fetcher' is not a kustomize built-in; exec, container and other external plugins are not " \
           "allowed" in body


# -- commands and the dashboard -----------------------------------------------------------------------

@pytest.fixture(params=["github", "gitlab"])
def forge_scenario(request, tmp_path, remote, redis_server, redis, kube) -> Iterator[ForgeScenario]:
    """A pull request on either forge, in a repository whose `staging` environment deploys to `kube`."""
    files = {**BASE_FILES, ".gitops.yaml": "environments:\n  staging: {branch: main, path: apps, cluster: staging, "
                                           "namespace: shop, deployers: write, require: [approved]}\n",
             "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"}
    github = request.param == "github"
    with (FakeGitHub(bot_login="gitops-bot") if github else FakeGitLab(bot_username="gitops-bot", token=TOKEN)) as fake:
        forge_env = (dict(GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN, GITHUB_API_URL=fake.url) if github else
                     dict(GITLAB_WEBHOOK_TOKEN=SECRET, GITLAB_TOKEN=TOKEN, GITLAB_URL=fake.url))
        with running(bot_env(tmp_path, redis_server.url, config(tmp_path, kube), **forge_env)) as bot:
            yield (PullRequestScenario(remote, fake, bot, REPO, SECRET, files=files) if github else
                   MergeRequestScenario(remote, fake, bot, PROJECT, SECRET, files=files))
    assert fake.errors == []


def test_a_forks_author_cannot_deploy(forge_scenario, kube):
    pr = forge_scenario
    if isinstance(pr, PullRequestScenario):
        pr.github.add_pull(REPO, pr.number, "0" * 40, "feature", author="mallory", head_full_name="mallory/infra")
    else:
        pr.gitlab.add_mr(PROJECT, pr.number, "feature", "main", "0" * 40, author="mallory", source_project_id=999)
    pr.push_head(HEAD_CHANGES)
    pr.approve("bob")
    answer, comment = pr.comment("/deploy staging", author="mallory")
    assert answer.status == 202
    pr.bot.work()
    (reply,) = pr.replies()
    assert "⛔ /deploy on staging needs write permission; you have " in reply
    assert not pr.merged() and kube.get("apps", "Deployment", "shop", "web") is None
    assert pr.reactions(comment) == ["eyes", "-1"]


@pytest.mark.parametrize("path", ["/", "/api/state", "/api/environments", "/api/deliveries", "/api/queues"])
def test_the_dashboard_needs_its_token(tmp_path, redis_server, redis, path):
    env = bot_env(tmp_path, redis_server.url, config(tmp_path), GITOPS_BOT_DASHBOARD_TOKEN=DASHBOARD_TOKEN)
    with running(env) as bot:
        for query in ("", "?token=", "?token=wrong", f"?token={DASHBOARD_TOKEN[:-1]}"):
            assert bot.get(path + query).status == 401, query
        request = urllib.request.Request(bot.url + path, headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(request, timeout=10)
        request.headers["Authorization"] = f"Bearer {DASHBOARD_TOKEN}"
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


# -- secrets ------------------------------------------------------------------------------------------

def test_no_secret_reaches_a_log_line_a_comment_or_a_status(forge_scenario, kube, caplog):
    caplog.set_level(logging.DEBUG, logger="gitops_bot")  # the web app runs in this process
    pr = forge_scenario
    change = {**HEAD_CHANGES, "apps/tokens.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: tokens}\n"
                                                  f"stringData: {{api-key: {STRING_DATA}}}\n"}
    head = pr.push_head(change)
    opened = pr.event("opened", head) if isinstance(pr, PullRequestScenario) else pr.event("open", head)
    assert pr.deliver(opened).status == 202
    pr.bot.work()  # before the merge, which would cancel the diff
    pr.deliver_merge(pr.remote.commit("main", change, "merge"))
    pr.bot.work()

    assert kube.get("", "Secret", "shop", "tokens")  # it was deployed, so the values went through everything
    posted, logs = pr.comments(), [*pr.bot.logs, *(json.dumps(vars(r), default=str) for r in caplog.records)]
    assert len(posted) == 2  # the diff, and the deploy's reply
    for words in ("webhook queued", "diff posted", "deploy finished"):  # the web's logs, and the worker's
        assert any(words in line for line in logs), words
    texts = (pr.github if isinstance(pr, PullRequestScenario) else pr.gitlab).posted_texts()
    values = [PASSWORD_BASE, PASSWORD_HEAD, STRING_DATA, base64.b64encode(STRING_DATA.encode()).decode(),
              *(base64.b64decode(v).decode() for v in (PASSWORD_BASE, PASSWORD_HEAD)), TOKEN, SECRET]
    for text in [*texts, *logs]:
        for value in values:
            assert value not in text

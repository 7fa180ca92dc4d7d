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
from typing import Any

import redis
from werkzeug.serving import make_server

from bot.queue import Store
from bot.settings import Settings
from bot.web import create_app

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

"""Benchmark: deploy 1,000 objects, then the same with 10 changed, and with none changed; then
check them for drift, in sync and with 10 objects edited by hand.

Run from the repository root: `python bench/deploy.py`. It deploys through the real `kubernetes`
client to the Kubernetes API stand-in, and prints each deploy's API write calls and wall time, and
each drift check's requests (a check's cost should follow the drift, not the environment's size).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stand-in lives under tests/, which is not installed

from bot import deploy, drift  # noqa: E402
from bot.cluster import connect  # noqa: E402
from bot.render import render  # noqa: E402
from bot.config import Cluster, Environment  # noqa: E402
from bot.gitrepo import WorkTreeSnapshot  # noqa: E402
from tests.fakes.kube_api import FakeKubeAPI  # noqa: E402

NAMESPACE = "bench"
CONFIGMAPS, SECRETS, SERVICES = 500, 250, 249  # with the Namespace, 1,000 objects
CHANGED = 10


def write_manifests(root: Path, changed: int = 0) -> None:
    """The environment's files; the first `changed` ConfigMaps get a new value."""
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"]
    docs += [f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-{i}, labels: {{app: bench}}}}\n"
             f"data: {{index: '{i}', value: '{'new' if i < changed else 'old'}'}}\n" for i in range(CONFIGMAPS)]
    docs += [f"apiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{i}}}\ndata: {{token: dG9rZW4=}}\n"
             for i in range(SECRETS)]
    docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\n"
             f"spec: {{selector: {{app: a{i}}}, ports: [{{port: 80, targetPort: {8000 + i}}}]}}\n"
             for i in range(SERVICES)]
    (root / "env").mkdir(exist_ok=True)
    (root / "env" / "objects.yaml").write_text("---\n".join(docs))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeKubeAPI() as kube:
        root = Path(tmp)
        cluster = Cluster("bench", kube.kubeconfig(str(root / "kubeconfig")), kube.context)
        env = Environment("bench", "main", "env", "bench", NAMESPACE, prune=True)
        inventory = deploy.Inventory.of("bench", "github", "acme/bench", "bench")
        kinds: set[str] = set()

        def run(label: str) -> None:
            kube.reset_records()
            result = deploy.run(WorkTreeSnapshot(root), env, cluster, inventory, known_kinds=kinds,
                                on_plan=lambda plan: kinds.update(plan.kinds))
            assert result.error is None, result.error
            requests = len(kube.requests)
            counts = ", ".join(f"{n} {what}" for what, n in result.counts.items())
            print(f"{label:<22} {result.writes:>5} write calls {requests:>6} requests {result.duration:7.2f} s   "
                  f"({counts})")

        write_manifests(root)
        print(f"{CONFIGMAPS + SECRETS + SERVICES + 1} objects")
        run("first deploy")
        run("no change")
        write_manifests(root, changed=CHANGED)
        run(f"{CHANGED} changed")
        run("no change")

        def check(label: str) -> None:
            kube.reset_records()
            with connect(cluster) as client:
                started = time.monotonic()
                report = drift.check(client, render(WorkTreeSnapshot(root), env), env, inventory, kinds)
                took = time.monotonic() - started
            lists = sum(r.method == "GET" and "labelSelector" in r.query for r in kube.requests)
            print(f"{label:<22} {len(kube.requests):>5} requests ({lists} lists, {report.dry_runs} dry runs, "
                  f"{len(kube.requests) - lists - report.dry_runs} discovery) "
                  f"{took:7.2f} s   ({len(report.drifted)} drifted of {report.compared})")

        check("drift, in sync")
        with connect(cluster) as client:  # someone edits ten ConfigMaps by hand
            configmaps = client.resource("", "ConfigMap", "v1")
            for i in range(CHANGED):
                configmaps.patch(body={"data": {"value": "by hand"}}, name=f"config-{i}", namespace=NAMESPACE,
                                 content_type="application/merge-patch+json", field_manager="kubectl-edit")
        check(f"drift, {CHANGED} edited")


if __name__ == "__main__":
    main()

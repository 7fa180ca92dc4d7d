"""Benchmark the diff pipeline on generated repositories: `python bench/diff.py [--objects N]`.

Everything is measured side by side in one run, on real git repositories in a temporary
directory, packed as a fetched mirror is:

- a plain tree of N objects (Deployments, Services, ConfigMaps, Secrets, CRs), one per file,
  with 5% of them changed on a second branch: the full pipeline (read both trees, render,
  diff, Markdown) against only parsing both trees with `yaml.CSafeLoader` (target <= 2.0);
- reading both trees as kubectl does (bot.yamlio, on the same C parser) against that parse
  (target <= 1.2);
- a one-file change in that repository against the same change in a 50-file one (target <= 1.2);
- peak memory of the full pipeline against the size of the parsed objects (target < 10);
- the PR comment of 5,000 changed objects, built from their diffs (target <= 1 s);
- a kustomization tree of 50 overlays over one base, changing one overlay (target: one
  environment rendered, not 50) and then the base (all 50, base and head: target <= 4 s, printed
  beside one `kubectl kustomize` of an overlay and the ratio, one given kustomize's schema as JSON
  as the bot gives it, and the same kustomize runs done bare), each commit's tree exported once;
  then, with renders kept, the pull request's next push and the next pull request after it merged
  (50 renders each);
- one Helm chart deployed as 20 environments, one values file each, changing a template: 20
  environments rendered at base and head, beside one render of the chart and the ratio.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.diff import DiffReport, EnvironmentDiff, diff_manifests  # noqa: E402
from bot.gitrepo import CommitSnapshot, Mirror  # noqa: E402
from bot.render import Manifest, render_concurrency  # noqa: E402
from bot.yamlio import parse_documents  # noqa: E402
from bot.pipeline import diff_snapshots  # noqa: E402
from bot.render_cache import RenderCache  # noqa: E402
from bot.renderers import helm, kustomize, openapi  # noqa: E402
from bot.report import markdown  # noqa: E402

KINDS = ("deployment", "service", "configmap", "secret", "certificate")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def init_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "Bench")
    return root


def commit(root: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


# -- a realistic plain tree -----------------------------------------------------------------------

def manifest(kind: str, app: int, version: int = 0) -> str:
    """One object of `kind` for app number `app`; `version` > 0 changes it as a real PR would."""
    name, ns = f"app-{app:04d}", f"team-{app % 20:02d}"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": f"team-{app % 20:02d}",
              "app.kubernetes.io/managed-by": "gitops-bot"}
    meta = {"name": name, "namespace": ns, "labels": labels}
    if kind == "deployment":
        doc: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 2 + version, "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {"metadata": {"labels": dict(labels), "annotations": {"prometheus.io/scrape": "true"}},
                         "spec": {"serviceAccountName": name, "containers": [{
                             "name": "app", "image": f"registry.example.com/{name}:1.{app % 30}.{version}",
                             "ports": [{"name": "http", "containerPort": 8080}],
                             "env": [{"name": "LOG_LEVEL", "value": "info"},
                                     {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
                                         "name": name, "key": "password"}}}],
                             "envFrom": [{"configMapRef": {"name": name}}],
                             "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                           "limits": {"cpu": "1", "memory": "512Mi"}},
                             "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                                "periodSeconds": 10},
                             "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                               "initialDelaySeconds": 30}}]}}}}
    elif kind == "service":
        doc = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
            "type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": 80 + version, "targetPort": "http"}]}}
    elif kind == "configmap":
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {
            "FEATURE_FLAGS": f"search,checkout,v{version}", "CACHE_TTL": str(300 + version),
            "app.properties": "".join(f"key.{i}=value-{app}-{i}\n" for i in range(12))}}
    elif kind == "secret":
        value = base64.b64encode(f"s3cr3t-{app}-{version}".encode()).decode()
        doc = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
               "data": {"password": value, "username": base64.b64encode(name.encode()).decode()}}
    else:
        doc = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": meta, "spec": {
            "secretName": f"{name}-tls", "duration": f"{2160 + version}h", "renewBefore": "360h",
            "dnsNames": [f"{name}.example.com", f"{name}.internal.example.com"],
            "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}}
    return yaml.safe_dump(doc, sort_keys=False)


def plain_files(objects: int) -> dict[str, str]:
    return {f"apps/team-{i // 5 % 20:02d}/app-{i // 5:04d}/{KINDS[i % 5]}.yaml": manifest(KINDS[i % 5], i // 5)
            for i in range(objects)}


def plain_repo(root: Path, objects: int, changed_fraction: float) -> tuple[Path, str, str, str]:
    """A repository of `objects` files on main, a branch changing a fraction of them, and a
    branch changing one file. Returns (repo, base, head, one-file head)."""
    repo = init_repo(root)
    files = plain_files(objects)
    base = commit(repo, files, "base")
    step = max(1, round(1 / changed_fraction))
    git(repo, "checkout", "-q", "-b", "change")
    changed = {name: manifest(KINDS[i % 5], i // 5, version=1)
               for i, name in enumerate(files) if i % step == 0}
    head = commit(repo, changed, "change")
    git(repo, "checkout", "-q", "-b", "one", base)
    one = commit(repo, {next(iter(files)): manifest("deployment", 0, version=1)}, "one file")
    git(repo, "gc", "-q")  # packed, as a fetched mirror is
    return repo, base, head, one


# -- a kustomization tree -------------------------------------------------------------------------

def kustomize_repo(root: Path, overlays: int) -> tuple[Path, str, str, str]:
    """One base, `overlays` overlays, each an environment. Returns (repo, base, overlay head, base head)."""
    repo = init_repo(root)
    files = {"base/kustomization.yaml": "resources: [deployment.yaml, service.yaml, configmap.yaml]\n",
             "base/deployment.yaml": manifest("deployment", 0), "base/service.yaml": manifest("service", 0),
             "base/configmap.yaml": manifest("configmap", 0)}
    config: dict[str, Any] = {"environments": {}}
    for i in range(overlays):
        path = f"envs/env-{i:02d}"
        files[f"{path}/kustomization.yaml"] = (f"resources: [../../base]\nnamePrefix: env{i:02d}-\n"
                                               f"namespace: env-{i:02d}\npatches: [{{path: replicas.yaml}}]\n")
        files[f"{path}/replicas.yaml"] = ("apiVersion: apps/v1\nkind: Deployment\n"
                                          "metadata: {name: app-0000, namespace: team-00}\nspec: {replicas: 3}\n")
        config["environments"][f"env-{i:02d}"] = {"branch": "main", "path": path}
    files[".gitops.yaml"] = yaml.safe_dump(config)
    base = commit(repo, files, "base")
    git(repo, "checkout", "-q", "-b", "overlay")
    overlay = commit(repo, {"envs/env-07/replicas.yaml": files["envs/env-07/replicas.yaml"]
                            .replace("replicas: 3", "replicas: 4")}, "one overlay")
    git(repo, "checkout", "-q", "-b", "base-change", base)
    base_change = commit(repo, {"base/service.yaml": manifest("service", 0, version=1)}, "the base")
    return repo, base, overlay, base_change


# -- measuring ------------------------------------------------------------------------------------

def pipeline(repo: Path, base: str, head: str, *, incremental: bool = True,
             cache: RenderCache | None = None) -> tuple[str, Any]:
    """The whole job as the worker runs it, from a fresh mirror object: read, render, diff, Markdown."""
    mirror = Mirror(repo / ".git")
    changed = mirror.changed_paths(base, head) if incremental else None
    report = diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                            base_sha=base, head_sha=head, branch="main", default_branch="main",
                            changed=changed, cache=cache)
    errors = [report.error] if report.error else [e.error for e in report.environments if e.error]
    if errors:
        raise SystemExit(f"bench: the diff failed: {errors[0]}")
    return "".join(markdown(report, "bench")), report


def blobs(repo: Path, sha: str) -> list[bytes]:
    """Every manifest's bytes at `sha`, read up front so that only parsing is timed."""
    names = git(repo, "ls-tree", "-r", "--name-only", sha).splitlines()
    batch = "".join(f"{sha}:{n}\n" for n in names).encode()
    out = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, input=batch, capture_output=True,
                         check=True).stdout
    contents, pos = [], 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        contents.append(out[header_end + 1:header_end + 1 + size])
        pos = header_end + 2 + size
    return contents


def parse_only(trees: list[list[bytes]]) -> list[list[Any]]:
    return [[d for data in tree for d in yaml.load_all(data, Loader=yaml.CSafeLoader)] for tree in trees]


def read_as_kubectl(trees: list[list[bytes]]) -> list[list[Any]]:
    return [[d for data in tree for d in parse_documents(data, "bench.yaml")] for tree in trees]


def timed(runs: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """The median wall time of each run, in seconds. Runs alternate, so that a machine busy with
    something else slows them alike and their ratios stay fair."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            gc.collect()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def traced_peak(run: Callable[[], Any]) -> tuple[int, Any]:
    """(peak bytes allocated while `run` runs, what it returned)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def held(build: Callable[[], Any]) -> int:
    """The bytes still allocated by what `build` returns, while it is kept."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        size = tracemalloc.get_traced_memory()[0] - before
        del kept
        return size
    finally:
        tracemalloc.stop()


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def bench_plain(tmp: Path, objects: int, repeat: int) -> None:
    print(f"== plain tree: {objects:,} objects in {objects:,} files, 5% changed")
    started = time.perf_counter()
    big, base, head, one_file = plain_repo(tmp / "big", objects, 0.05)
    small, s_base, _, s_one = plain_repo(tmp / "small", 50, 0.05)
    print(f"   generated in {time.perf_counter() - started:.1f}s")
    trees = [blobs(big, base), blobs(big, head)]
    megabytes = sum(len(b) for t in trees for b in t) / 1e6
    t = timed({"parse": lambda: parse_only(trees), "read": lambda: read_as_kubectl(trees),
               "full": lambda: pipeline(big, base, head, incremental=False),
               "incremental": lambda: pipeline(big, base, head)}, repeat)
    text, report = pipeline(big, base, head)
    counts = report.counts
    print(f"   parse both trees with CSafeLoader ({megabytes:.1f} MB): {t['parse'] * 1000:8.0f} ms")
    print(f"   read both trees as kubectl does:          {t['read'] * 1000:8.0f} ms   ratio "
          f"{t['read'] / t['parse']:.2f} (target <= 1.2: {verdict(t['read'] / t['parse'] <= 1.2)})")
    print(f"   full pipeline, every file rendered:       {t['full'] * 1000:8.0f} ms   ratio "
          f"{t['full'] / t['parse']:.2f} (target <= 2.0: {verdict(t['full'] / t['parse'] <= 2.0)})")
    print(f"   incremental pipeline, as a PR runs:       {t['incremental'] * 1000:8.0f} ms   ratio "
          f"{t['incremental'] / t['parse']:.2f}")
    print(f"   diff: {counts.added} added, {counts.changed} changed, {counts.removed} removed; "
          f"Markdown {len(text):,} characters")

    one = timed({"big": lambda: pipeline(big, base, one_file), "small": lambda: pipeline(small, s_base, s_one)},
                repeat * 10)
    ratio = one["big"] / one["small"]
    print(f"   one-file change, {objects:,} files:            {one['big'] * 1000:8.1f} ms")
    print(f"   one-file change, 50 files:               {one['small'] * 1000:8.1f} ms   ratio "
          f"{ratio:.2f} (target <= 1.2: {verdict(ratio <= 1.2)})")

    parsed = held(lambda: parse_only(trees))
    peak, _ = traced_peak(lambda: pipeline(big, base, head, incremental=False))
    print(f"   parsed objects of both trees:             {parsed / 1e6:8.1f} MB")
    print(f"   peak memory of the full pipeline:         {peak / 1e6:8.1f} MB   ratio {peak / parsed:.2f} "
          f"(target < 10: {verdict(peak / parsed < 10)})")

    report = changed_everywhere(parse_only(trees[:1])[0])
    t = timed({"comment": lambda: markdown(report, "bench")}, repeat)
    print(f"   PR comment of {report.counts.changed:,} changed objects:     {t['comment'] * 1000:8.0f} ms   "
          f"(target <= 1000 ms: {verdict(t['comment'] <= 1.0)})")


def changed_everywhere(docs: list[Any]) -> DiffReport:
    """A report in which every object of `docs` changed, as a PR relabelling them all would."""
    base = [Manifest(f"apps/{i}.yaml", doc) for i, doc in enumerate(docs)]
    head = [Manifest(m.source, {**m.doc, "metadata": {**m.doc["metadata"], "labels": {
        **m.doc["metadata"]["labels"], "app.kubernetes.io/version": "2"}}}) for m in base]
    changes, _ = diff_manifests(base, head)
    return DiffReport("0" * 40, "1" * 40, (EnvironmentDiff("default", ".", changes=tuple(changes)),))


def bench_kustomize(tmp: Path, overlays: int, repeat: int) -> None:
    print(f"== kustomize: {overlays} overlays over one base, one environment each "
          f"({render_concurrency()} renders at a time)")
    repo, base, overlay, base_change = kustomize_repo(tmp / "kustomize", overlays)
    kubectl = kustomize._find_kubectl(None)
    one = timed({"kubectl": lambda: subprocess.run([kubectl, "kustomize", str(repo / "envs/env-00")],
                                                   check=True, capture_output=True)}, repeat * 5)["kubectl"]
    print(f"   one `kubectl kustomize` of an overlay:    {one * 1000:8.0f} ms")
    given = tmp / "given-schema"  # the overlay as the bot builds it: with kustomize's schema as JSON
    shutil.copytree(repo / "base", given / "base")
    shutil.copytree(repo / "envs/env-00", given / "envs/env-00")
    kfile = given / "envs/env-00/kustomization.yaml"
    kfile.write_text(kustomize.with_openapi_schema(kfile.read_text(), kfile.name) or "")
    openapi.place(openapi.write(tmp), kfile.parent)
    fast = timed({"kubectl": lambda: subprocess.run([kubectl, "kustomize", str(kfile.parent)],
                                                    check=True, capture_output=True)}, repeat * 5)["kubectl"]
    print(f"   the same, given the schema as JSON:        {fast * 1000:8.0f} ms   (as the bot runs it)")
    with counted(kustomize, "render_kustomize") as calls, counted(CommitSnapshot, "export_tree") as exports:
        for label, head, expected in [("one overlay changed", overlay, 1), ("the base changed", base_change, overlays)]:
            calls.clear()
            exports.clear()
            started = time.perf_counter()
            _, report = pipeline(repo, base, head)
            elapsed = time.perf_counter() - started
            rendered = len({path for _, path, *_ in calls})
            print(f"   {label:20}: {rendered:2} of {overlays} environments rendered ({len(calls)} kustomize "
                  f"runs, base and head; {len(exports)} trees exported), {report.counts.changed} objects "
                  f"changed, {elapsed:.2f}s (target {expected}: {verdict(rendered == expected)})")
    print(f"   the base changed, whole diff:             {elapsed * 1000:8.0f} ms   ratio {elapsed / one:.1f} "
          f"to one kubectl (target <= 4 s: {verdict(elapsed <= 4)})")
    floor = bare_kubectl(repo, tmp, kubectl, [base, base_change], [f"envs/env-{i:02d}" for i in range(overlays)])
    print(f"   the same {2 * overlays} bare kubectl runs, {render_concurrency()} at a time: {floor * 1000:8.0f} ms   "
          f"whole diff / bare: {elapsed / floor:.2f}")
    # As the worker runs: the first diff of the pull request keeps its renders, so its next push
    # renders only the new head (the base's renders are kept by what they read).
    cache = RenderCache(tmp / "renders")

    def with_kept_renders(label: str, base_sha: str, head_sha: str) -> None:
        with counted(kustomize, "render_kustomize") as calls:
            started = time.perf_counter()
            pipeline(repo, base_sha, head_sha, cache=cache)
            elapsed = time.perf_counter() - started
        print(f"   {label + ':':41} {elapsed * 1000:8.0f} ms   ratio {elapsed / one:.1f} to one kubectl "
              f"({len(calls)} kustomize runs; target <= 4 s: {verdict(elapsed <= 4)})")

    pipeline(repo, base, base_change, cache=cache)
    git(repo, "checkout", "-q", "base-change")
    next_push = commit(repo, {"base/service.yaml": manifest("service", 0, version=2)}, "the base again")
    with_kept_renders("its next push, base renders kept", base, next_push)
    # Once that pull request merges, the next one's base is the tree its head had, already rendered.
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge", "base-change")
    merged = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "next-pull", merged)
    following = commit(repo, {"base/configmap.yaml": manifest("configmap", 0, version=1)}, "the base, later")
    with_kept_renders("the next pull request, after a merge", merged, following)


def bare_kubectl(repo: Path, tmp: Path, kubectl: str, commits: list[str], overlays: list[str]) -> float:
    """`kubectl kustomize` of every overlay at every commit, on checked-out trees, nothing else:
    as many at a time as the bot renders. The floor for a diff that must render them all."""
    trees = []
    for sha in commits:
        tree = tmp / f"bare-{sha[:7]}"
        tree.mkdir()
        subprocess.run(f"git archive {sha} | tar -x -C {tree}", shell=True, cwd=repo, check=True)
        trees.append(tree)
    runs = [[kubectl, "kustomize", str(tree / overlay)] for tree in trees for overlay in overlays]
    started = time.perf_counter()
    with ThreadPoolExecutor(render_concurrency()) as pool:
        list(pool.map(lambda argv: subprocess.run(argv, check=True, capture_output=True), runs))
    return time.perf_counter() - started


def helm_repo(root: Path, environments: int) -> tuple[Path, str, str]:
    """One chart, `environments` environments with a values file each. Returns (repo, base, head)."""
    repo = init_repo(root)
    named = ("name: app-0000\n  namespace: team-00", "name: {{ .Release.Name }}\n  namespace: {{ .Release.Namespace }}")
    files = {"chart/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\n",
             "chart/values.yaml": "replicas: 1\nimage: registry.example.com/app:1.0.0\n",
             **{f"chart/templates/{kind}.yaml": manifest(kind, 0).replace(*named)
                for kind in ("deployment", "service", "configmap")}}
    files["chart/templates/deployment.yaml"] = files["chart/templates/deployment.yaml"].replace(
        "replicas: 2", "replicas: {{ .Values.replicas }}")
    config: dict[str, Any] = {"environments": {}}
    for i in range(environments):
        files[f"chart/values-env-{i:02d}.yaml"] = f"replicas: {i % 5 + 1}\n"
        config["environments"][f"env-{i:02d}"] = {"branch": "main", "path": "chart", "namespace": f"env-{i:02d}",
                                                  "helm": {"release": f"app-{i:02d}",
                                                           "values": ["values.yaml", f"values-env-{i:02d}.yaml"]}}
    files[".gitops.yaml"] = yaml.safe_dump(config)
    base = commit(repo, files, "base")
    git(repo, "checkout", "-q", "-b", "template")
    head = commit(repo, {"chart/templates/service.yaml": files["chart/templates/service.yaml"].replace(
        "port: 80", "port: 8080")}, "a template")
    return repo, base, head


def bench_helm(tmp: Path, environments: int, repeat: int) -> None:
    print(f"== helm: one chart, {environments} environments with a values file each "
          f"({render_concurrency()} renders at a time)")
    repo, base, head = helm_repo(tmp / "helm", environments)
    one = timed({"helm": lambda: helm.render_helm(repo, "chart", release="app-00", namespace="env-00",
                                                  values=["values.yaml", "values-env-00.yaml"])}, repeat)["helm"]
    print(f"   one render of the chart (Helm SDK, boxed): {one * 1000:7.0f} ms")
    with counted(helm, "render_helm") as calls, counted(CommitSnapshot, "export_tree") as exports:
        started = time.perf_counter()
        _, report = pipeline(repo, base, head)
        elapsed = time.perf_counter() - started
    print(f"   a template changed: {len(calls)} renders ({environments} environments, base and head; "
          f"{len(exports)} trees exported), {report.counts.changed} objects changed")
    print(f"   whole diff:                               {elapsed * 1000:8.0f} ms   ratio {elapsed / one:.1f} "
          f"to one render (one at a time: {len(calls)})")


@contextlib.contextmanager
def counted(owner: Any, name: str) -> Iterator[list[Any]]:
    """The positional arguments of every call to `owner.name` while inside, in a list."""
    calls: list[Any] = []
    original = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    setattr(owner, name, counting)
    try:
        yield calls
    finally:
        setattr(owner, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--overlays", type=int, default=50)
    parser.add_argument("--charts", type=int, default=20, help="environments of the Helm chart")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (the median is shown)")
    parser.add_argument("--only", choices=("plain", "kustomize", "helm"), help="run one of the three")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitops-bot-bench-") as tmp:
        if args.only in (None, "plain"):
            bench_plain(Path(tmp), args.objects, args.repeat)
        if args.only in (None, "kustomize"):
            bench_kustomize(Path(tmp), args.overlays, args.repeat)
        if args.only in (None, "helm"):
            bench_helm(Path(tmp), args.charts, args.repeat)


if __name__ == "__main__":
    main()

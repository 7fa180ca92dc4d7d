"""The live plan in the pull request comment: what applying the head would do to the cluster now.

End to end: a merge deploys the base for real, then a pull request's webhook (or a `/diff`) goes
through the real web app, a real worker, real Redis and git, the GitHub and GitLab stand-ins and the
Kubernetes API stand-in, whose recorded requests show that only dry runs ever reach it.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import pytest

from bot.cluster import ClusterError
from bot.config import Environment
from bot.diff import Change, DiffReport, EnvironmentDiff, ObjectKey
from bot.preview import LivePlan, Person, Refused, Reverted, decide, refusal_reason
from bot.report import as_json, markdown, text
from tests.fakes.github_api import FakeGitHub
from tests.fakes.http import Reply
from tests.fakes.kube_api import status_body
from tests.harness import (BASE_FILES, HEAD_CHANGES, PASSWORD_BASE, PASSWORD_HEAD, Bot, ForgeScenario, KubeTarget,
                           MergeRequestScenario, PullRequestScenario, bot_on_forge)

SECRET, TOKEN = "plan-webhook-secret", "plan-TOKEN-value-0123456789"
MARKER = "<!-- gitops-bot:diff:gitops-bot -->"
OLD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: old}\ndata: {gone: soon}\n"


def files(ns: str) -> dict[str, str]:
    return {
        ".gitops.yaml": f"environments:\n  staging: {{branch: main, path: apps, cluster: staging, namespace: {ns}, "
                        "prune: true, deployers: write}\n",
        "apps/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n",
        "apps/old.yaml": OLD,
        **BASE_FILES,
    }


class World:
    """A bot, a forge scenario, and the cluster with the base branch deployed to it by a real merge."""

    def __init__(self, scenario: ForgeScenario, kube: KubeTarget):
        self.scenario, self.kube, self.ns = scenario, kube, kube.namespace

    @property
    def bot(self) -> Bot:
        return self.scenario.bot

    def deploy_base(self) -> None:
        self.scenario.deliver_push(self.scenario.base_sha)
        self.bot.work()
        assert self.kube.get("v1", "ConfigMap", "old", self.ns) is not None

    def open_pull(self, changes: dict[str, str | None], author: str, fork: bool = False) -> str:
        """The pull request opened by `author` (from a fork of theirs, if `fork`); its webhook delivered."""
        sc = self.scenario
        sha = sc.push_head(changes)
        if isinstance(sc, PullRequestScenario):
            pull = sc.github.pulls[sc.repo, sc.number]
            pull["author"] = author
            if fork:
                pull["head_full_name"] = f"{author}/infra"
            body = sc.event("opened", sha)
            body["pull_request"]["user"]["login"] = author
            if fork:
                body["pull_request"]["head"]["repo"].update(full_name=f"{author}/infra",
                                                            clone_url=f"https://github.com/{author}/infra.git")
        else:
            assert isinstance(sc, MergeRequestScenario)
            mr = sc.gitlab.mrs[sc.repo, sc.number]
            mr["author"] = sc.gitlab._user(author)
            if fork:
                mr["source_project_id"] = 4242
            body = sc.event("open", sha)
            body["user"]["username"] = author
            body["object_attributes"]["author_id"] = mr["author"]["id"]
            if fork:
                body["object_attributes"]["source_project_id"] = 4242
                body["object_attributes"]["source"].update(
                    path_with_namespace=f"{author}/infra", git_http_url=f"https://gitlab.example/{author}/infra.git",
                    http_url=f"https://gitlab.example/{author}/infra.git")
        assert sc.deliver(body).status == 202
        return sha

    def run(self) -> str:
        """Work the queues with the cluster's request record cleared first; the diff comment after."""
        if self.kube.fake:
            self.kube.fake.reset_records()
        self.bot.work()
        return self.comment()

    def comment(self) -> str:
        (body,) = [b for b in self.scenario.replies() if b.startswith(MARKER)]
        return body

    def requests(self) -> list:
        return list(self.kube.fake.requests)

    def assert_only_reads_and_dry_runs(self) -> None:
        requests = self.requests()
        assert self.kube.fake.writes() == []
        sent = [r for r in requests if r.method != "GET"]
        assert sent and all(r.method == "PATCH" and r.query.get("dryRun") == ["All"] for r in sent)


@contextlib.contextmanager
def world_on(forge_name: str, tmp_path: Path, remote, redis_server, kube: KubeTarget,
             grant: str = "") -> Iterator[World]:
    """`grant`: more of the cluster's server config (`namespaces: [...]`)."""
    cluster = kube.cluster
    context = f", context: {cluster.context}" if cluster.context else ""
    config = (f"repos: ['acme/*', 'group/sub/*']\nclusters:\n  staging: {{kubeconfig: {cluster.kubeconfig}"
              f"{context}, repos: ['*']{grant}}}\ndeploy: {{rollout_timeout: {kube.rollout_timeout:g}}}\n")
    with contextlib.ExitStack() as stack:
        forge, bot = bot_on_forge(stack, forge_name, tmp_path, redis_server.url, config, SECRET, TOKEN)
        if isinstance(forge, FakeGitHub):
            scenario: ForgeScenario = PullRequestScenario(remote, forge, bot, "acme/infra", SECRET,
                                                          files=files(kube.namespace))
        else:
            scenario = MergeRequestScenario(remote, forge, bot, "group/sub/infra", SECRET, files=files(kube.namespace))
        world = World(scenario, kube)
        world.deploy_base()
        yield world
        assert bot.failed_jobs() == []
        for posted in [*bot.logs, *forge.posted_texts()]:
            assert TOKEN not in posted and SECRET not in posted
            assert PASSWORD_BASE not in posted and PASSWORD_HEAD not in posted  # never a Secret's value
    assert forge.errors == []


@pytest.fixture
def world(tmp_path, remote, redis_server, redis, kube_target) -> Iterator[World]:
    if not kube_target.fake:
        pytest.skip("these tests read the stand-in's record of requests")
    with world_on("github", tmp_path, remote, redis_server, kube_target) as w:
        yield w


def section(comment: str) -> str:
    """The live plan's part of the comment."""
    assert "##### Live plan" in comment, comment
    return comment[comment.index("##### Live plan"):]


# -- a deployer's pull request ------------------------------------------------------------------------

def test_a_deployers_pull_request_shows_created_changed_pruned_and_drift_reverted(world):
    ns = world.ns
    world.scenario.grant("alice", "write")
    # Someone edits the live ConfigMap with the real kubectl; the pull request does not touch it in Git.
    world.kube.kubectl("-n", ns, "patch", "configmap", "settings", "--type=merge", "-p", '{"data":{"mode":"slow"}}')
    new_ns = f"{ns}-new"
    head = world.open_pull({**HEAD_CHANGES, "apps/old.yaml": None,
                            "apps/extra.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {new_ns}}}\n---\n"
                                               f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra, "
                                               f"namespace: {new_ns}}}\ndata: {{a: b}}\n"}, author="alice")
    comment = world.run()

    plan = section(comment)
    assert "##### Live plan · cluster `staging` now" in plan
    assert f"What applying head `{head[:7]}` would do to the cluster now" in plan
    assert "the author @alice holds write" in plan
    assert "| 3 | 2 | 1 | 1 | 0 | 1 |" in plan  # create, change, prune, drift reverted, refused, unchanged
    assert f"<code>+ Service {ns}/web</code> <sub>create</sub>" in plan
    assert f"<code>+ Namespace {new_ns}</code> <sub>create</sub>" in plan
    assert f"<code>- ConfigMap {ns}/old</code> <sub>prune</sub>" in plan
    # What really changes: the live object against the dry run's answer, not Git against Git.
    deployment = plan[plan.index(f"<code>~ apps/Deployment {ns}/web</code> <sub>change</sub>"):]
    assert "-  replicas: 1\n+  replicas: 3" in deployment.split("</details>")[0]
    secret = plan[plan.index(f"<code>~ Secret {ns}/db</code> <sub>change</sub>"):].split("</details>")[0]
    assert "*** (before)" in secret and "*** (after)" in secret
    drifted = plan[plan.index(f"<code>~ ConfigMap {ns}/settings</code>"):].split("</details>")[0]
    assert "drift reverted · data.mode · held by kubectl-patch" in drifted
    assert "-  mode: slow\n+  mode: fast" in drifted
    assert "managedFields" not in plan and "last-applied-configuration" not in plan
    # What a dry run cannot validate: it needs a Namespace this head creates.
    assert f"`ConfigMap {new_ns}/extra` needs a Namespace or CustomResourceDefinition that this head creates" in plan
    # The Git diff keeps its place and format ahead of it.
    assert comment.index(f"<code>~ apps/Deployment {ns}/web</code> <sub>") < comment.index("##### Live plan")

    world.assert_only_reads_and_dry_runs()
    assert not any(f"/namespaces/{new_ns}/" in r.path for r in world.requests())  # nothing in it was sent
    live = world.kube.fake
    assert live.get("", "ConfigMap", ns, "settings")["data"] == {"mode": "slow"}
    assert live.get("", "ConfigMap", ns, "old") is not None and live.get("", "Service", ns, "web") is None
    assert live.get("apps", "Deployment", ns, "web")["spec"]["replicas"] == 1


def test_applying_the_head_would_change_nothing_says_so(world):
    world.scenario.grant("alice", "write")
    world.open_pull({"README.md": "docs only\n"}, author="alice")
    plan = section(world.run())
    assert "| 0 | 0 | 0 | 0 | 0 | 5 |" in plan
    assert "Applying the head would change nothing in the cluster." in plan
    assert [r for r in world.requests() if r.method != "GET"] == []  # nothing to dry-run: no request sent


# -- refusals -------------------------------------------------------------------------------------------

def test_an_object_the_api_server_refuses_shows_its_reason_before_merge(world):
    ns = world.ns
    world.scenario.grant("alice", "write")
    bad = BASE_FILES["apps/web.yaml"].replace("replicas: 1", "replicas: -1")
    # A Secret's refusal may quote its values: only its reason and field are shown.
    world.kube.fake.fail("PATCH", r"/secrets/db$", Reply(422, status_body(
        422, "Invalid", f'Secret "db" is invalid: data[password]: Invalid value: "{PASSWORD_HEAD}"',
        {"name": "db", "kind": "Secret", "causes": [
            {"reason": "FieldValueInvalid", "field": "data[password]",
             "message": f'Invalid value: "{PASSWORD_HEAD}"'}]})))
    head = world.open_pull({"apps/web.yaml": bad, "apps/secret.yaml": HEAD_CHANGES["apps/secret.yaml"]},
                           author="alice")
    plan = section(world.run())
    sc = world.scenario
    (status,) = [s for s in sc.github.statuses(sc.repo, head) if s["context"] == "gitops-bot/diff"][-1:]
    assert (status["state"], status["description"]) == ("failure", "0 added, 2 changed, 0 removed; 2 refused by "
                                                                    "the cluster")

    assert "| 0 | 0 | 0 | 0 | 2 |" in plan
    assert (f"⛔ **Refused:** `apps/Deployment {ns}/web`: `Invalid (422): Deployment web at spec.replicas: "
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0`") in plan
    assert f"⛔ **Refused:** `Secret {ns}/db`: `Invalid (422): Secret db at data[…]`\n" in plan + "\n"
    assert PASSWORD_HEAD not in plan
    world.assert_only_reads_and_dry_runs()
    assert world.kube.fake.get("apps", "Deployment", ns, "web")["spec"]["replicas"] == 1


def test_an_object_outside_the_clusters_namespaces_is_refused_by_the_server_config(tmp_path, remote, redis_server,
                                                                                    redis, kube_target):
    if not kube_target.fake:
        pytest.skip("reads the stand-in's record of requests")
    ns = kube_target.namespace
    with world_on("github", tmp_path, remote, redis_server, kube_target, grant=f", namespaces: [{ns}]") as world:
        world.scenario.grant("alice", "write")
        outside = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n"
        world.open_pull({"apps/other.yaml": outside}, author="alice")
        plan = section(world.run())
        assert "**The live plan could not be computed:**" in plan
        assert f"ConfigMap kube-system/x: the cluster takes objects only in the namespaces {ns}" in plan
        assert world.kube.fake.writes() == [] and [r for r in world.requests() if r.method != "GET"] == []


def test_a_cluster_that_cannot_answer_leaves_the_git_diff_and_says_so(world):
    world.scenario.grant("alice", "write")
    world.kube.fake.inject("PATCH", r"/deployments/web$", 503, times=3)  # past the client's retries
    world.open_pull(HEAD_CHANGES, author="alice")
    comment = world.run()
    assert "<code>~ apps/Deployment" in comment  # the Git diff is posted whatever the cluster does
    plan = section(comment)
    assert "**The live plan could not be computed:**" in plan and "ServiceUnavailable (503)" in plan
    assert "⛔ **Refused:**" not in plan  # a cluster's bad moment is not the API server's refusal
    assert world.kube.fake.writes() == []


def test_a_refusal_names_the_causes_but_never_a_secrets():
    causes = (("data[password]", 'Invalid value: "hunter2"'),)
    err = ClusterError("apply Secret shop/db: Invalid (422): Secret db at data[…]", 422, causes=causes)
    assert refusal_reason(ObjectKey("", "Secret", "shop", "db"), err) == "Invalid (422): Secret db at data[…]"
    err = ClusterError("apply ConfigMap shop/x: Invalid (422)", 422, causes=(("metadata.name", "bad name"), ("", "no")))
    assert refusal_reason(ObjectKey("", "ConfigMap", "shop", "x"), err) == \
        "Invalid (422): metadata.name: bad name; no"


# -- who may reach the cluster ----------------------------------------------------------------------------

def test_a_non_deployers_pull_request_is_not_planned_until_a_deployer_asks(world):
    world.scenario.grant("bob", "read")
    world.scenario.grant("carol", "triage")
    world.scenario.grant("alice", "maintain")
    world.open_pull(HEAD_CHANGES, author="bob")
    plan = section(world.run())
    assert ("⏸️ **Not computed:** @bob holds read; `staging`'s live plan needs write: someone with write can "
            "comment `/diff`.") in plan
    assert world.requests() == []  # not one request reached the cluster

    world.scenario.comment("/diff", author="carol")
    plan = section(world.run())
    assert "@carol asked with `/diff` but holds triage; @bob holds read; `staging`'s live plan needs write" in plan
    assert world.requests() == []

    world.scenario.comment("/diff", author="alice")
    plan = section(world.run())
    assert "Computed because asked for with `/diff` by @alice, who holds maintain." in plan
    assert f"<code>+ Service {world.ns}/web</code> <sub>create</sub>" in plan
    world.assert_only_reads_and_dry_runs()


def test_a_forks_pull_request_never_reaches_the_cluster_on_its_own(world):
    world.scenario.grant("alice", "admin")  # even an admin's fork: its head is not the repository's
    world.open_pull(HEAD_CHANGES, author="alice", fork=True)
    plan = section(world.run())
    assert "this pull request comes from a fork, which never reaches a cluster on its own" in plan
    assert world.requests() == []

    world.scenario.comment("/diff", author="alice")  # the fork's author asking changes nothing ...
    plan = section(world.run())
    assert "Computed because asked for with `/diff` by @alice, who holds admin." in plan  # ... but a deployer's does
    world.assert_only_reads_and_dry_runs()


def test_a_merge_requests_diff_command_on_gitlab_plans_for_a_deployer(tmp_path, remote, redis_server, redis,
                                                                      kube_target):
    if not kube_target.fake:
        pytest.skip("reads the stand-in's record of requests")
    with world_on("gitlab", tmp_path, remote, redis_server, kube_target) as world:
        world.scenario.grant("bob", "read")
        world.scenario.grant("dave", "write")
        world.open_pull(HEAD_CHANGES, author="bob", fork=True)
        plan = section(world.run())
        assert "this pull request comes from a fork" in plan and world.requests() == []
        world.scenario.comment("/diff", author="dave")
        plan = section(world.run())
        assert "asked for with `/diff` by @dave, who holds write" in plan
        assert f"<code>~ apps/Deployment {world.ns}/web</code> <sub>change</sub>" in plan
        world.assert_only_reads_and_dry_runs()


ENV = Environment("staging", "main", "apps", cluster="staging", deployers="maintain")


@pytest.mark.parametrize("author, fork, requester, allowed, reason", [
    (Person("ann", "maintain"), False, None, True, "the author @ann holds maintain"),
    (Person("ann", "admin"), True, None, False,
     "this pull request comes from a fork, which never reaches a cluster on its own; `staging`'s live plan needs "
     "maintain: someone with maintain can comment `/diff`"),
    (Person("bob", "write"), False, None, False,
     "@bob holds write; `staging`'s live plan needs maintain: someone with maintain can comment `/diff`"),
    (Person("bob", "write"), False, Person("bob", "write"), False,
     "@bob asked with `/diff` but holds write; `staging`'s live plan needs maintain: someone with maintain can "
     "comment `/diff`"),
    (Person("bob", "read"), True, Person("cy", "admin"), True, "asked for with `/diff` by @cy, who holds admin"),
    (Person("ann", "admin"), False, Person("bob", "none"), True, "the author @ann holds admin"),
    (Person("", "none"), False, None, False,
     "the forge names no author; `staging`'s live plan needs maintain: someone with maintain can comment `/diff`"),
])
def test_who_may_reach_the_cluster(author, fork, requester, allowed, reason):
    decision = decide(ENV, author, fork, requester)
    assert (decision.allowed, decision.reason) == (allowed, reason)


# -- the comment's shape --------------------------------------------------------------------------------

def _report(objects: int, diff_lines: int) -> DiffReport:
    key = ObjectKey("", "ConfigMap", "shop", "c")
    diff = "\n".join(f"+  line{i}: {'x' * 60}" for i in range(diff_lines))
    plan = LivePlan("staging", "the author @ann holds write",
                    created=tuple(Change("+", ObjectKey("", "ConfigMap", "shop", f"c{i}"), diff, "")
                                  for i in range(objects)),
                    reverted=(Reverted(Change("~", key, diff, ""), ("data.a",), ("kubectl-edit",)),),
                    refused=(Refused(ObjectKey("apps", "Deployment", "shop", "w"), "Invalid (422)"),))
    env = EnvironmentDiff("staging", "apps", changes=(Change("~", key, diff, "apps/c.yaml"),), cluster="staging",
                          live=plan)
    return DiffReport("a" * 40, "b" * 40, (env,))


def test_a_long_plan_splits_only_between_objects_and_repeats_its_headers():
    bodies = markdown(_report(objects=12, diff_lines=80), "gitops-bot", limit=20_000)
    assert len(bodies) > 2
    for body in bodies:
        assert len(body) <= 20_000
        assert body.count("<details>") == body.count("</details>")
        assert body.count("```") % 2 == 0
    continued = [b for b in bodies[1:] if "##### Live plan (continued)" in b]
    assert continued, "a part that starts inside the plan says so"
    assert all("#### `staging` · `apps` → cluster `staging` (continued)" in b for b in continued)
    joined = "".join(bodies)
    assert joined.count("<sub>create</sub>") == 12
    assert "drift reverted · data.a · held by kubectl-edit" in joined


def test_a_plan_in_text_and_json():
    report = _report(objects=1, diff_lines=2)
    shown = text(report)
    assert "-- live plan, cluster staging: 1 to create, 0 to change, 0 to prune, 1 drift reverted, 1 refused" in shown
    assert "refused: apps/Deployment shop/w: Invalid (422)" in shown
    assert "⛔ **Refused:** `apps/Deployment shop/w`: `Invalid (422)`" in markdown(report, "gitops-bot")[0]
    data = __import__("json").loads(as_json(report))
    live = data["environments"][0]["live"]
    assert live["counts"] == {"created": 1, "changed": 0, "pruned": 0, "reverted": 1, "refused": 1, "unchanged": 0}
    assert [o["op"] for o in live["objects"]] == ["create", "drift reverted"]
    assert live["refused"] == [{"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "w",
                                "reason": "Invalid (422)"}]
    skipped = DiffReport("a" * 40, "b" * 40, (EnvironmentDiff("staging", "apps", cluster="staging", live=LivePlan(
        "staging", skipped="@bob holds read")),))
    assert "⏸️ **Not computed:** @bob holds read." in markdown(skipped, "gitops-bot")[0]
    assert re.search(r"live plan, cluster staging: not computed\n   @bob holds read", text(skipped))

"""Renders of commits are kept by what decides them: a pull request's base is rendered once for all
its pushes, and nothing else is ever taken for it (another tree, other options, a failure, a
working tree)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import Environment, HelmOptions
from bot.gitrepo import WorkTreeSnapshot
from bot.render import inputs_id, render, render_inputs
from bot.render_cache import RenderCache
from bot.renderers import helm, kustomize
from bot.renderers.errors import RenderError
from tests.test_render_concurrency import CHANGE, CM, TREE, diff, mirror_of

KUSTOMIZE = Environment("k0", "main", "envs/k0")
CHART = Environment("chart", "main", "chart", namespace="web", helm=HelmOptions("web", ("values.yaml",)))


@pytest.fixture
def runs(monkeypatch) -> dict[str, int]:
    """How many times each renderer really ran."""
    counted = {"kustomize": 0, "helm": 0}

    def counting(module: Any, name: str, kind: str) -> None:
        real = getattr(module, name)

        def run(*args: Any, **kwargs: Any) -> str:
            counted[kind] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, run)
    counting(kustomize, "render_kustomize", "kustomize")
    counting(helm, "render_helm", "helm")
    return counted


def as_tuples(manifests) -> list[tuple]:
    return [(m.source, m.doc, m.generator) for m in manifests]


def test_a_commit_is_rendered_once_and_the_kept_render_is_the_same(remote, tmp_path, runs):
    mirror, base, head = mirror_of(remote, tmp_path, CHANGE)
    cache = RenderCache(tmp_path / "renders")
    first = render(mirror.snapshot(base), KUSTOMIZE, sandbox=False, cache=cache)
    again = render(mirror.snapshot(base), KUSTOMIZE, sandbox=False, cache=cache)
    assert runs["kustomize"] == 1 and as_tuples(again) == as_tuples(first)
    assert first[0].source == "base/app.yaml"  # the origin survives the cache
    render(mirror.snapshot(head), KUSTOMIZE, sandbox=False, cache=cache)  # another tree: rendered
    assert runs["kustomize"] == 2
    render(mirror.snapshot(base), Environment("k1", "main", "envs/k1"), sandbox=False, cache=cache)
    assert runs["kustomize"] == 3


def test_helm_options_are_part_of_what_decides_a_render(remote, tmp_path, runs):
    mirror, base, _ = mirror_of(remote, tmp_path, CHANGE)
    cache = RenderCache(tmp_path / "renders")
    render(mirror.snapshot(base), CHART, sandbox=False, cache=cache)
    render(mirror.snapshot(base), CHART, sandbox=False, cache=cache)
    assert runs["helm"] == 1
    other = Environment("chart", "main", "chart", namespace="other", helm=CHART.helm)
    assert render(mirror.snapshot(base), other, sandbox=False, cache=cache)[0].doc["metadata"].get(
        "namespace") in (None, "other")
    assert runs["helm"] == 2


def test_a_failure_and_a_working_tree_are_never_kept(remote, tmp_path, runs):
    mirror, _, head = mirror_of(remote, tmp_path, CHANGE)
    cache = RenderCache(tmp_path / "renders")
    broken = Environment("broken", "main", "envs/broken")
    for _ in range(2):
        with pytest.raises(RenderError):
            render(mirror.snapshot(head), broken, sandbox=False, cache=cache)
    assert not list((tmp_path / "renders").glob("*/*.json"))
    work = tmp_path / "work"
    for path, text in TREE.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    for _ in range(2):
        render(WorkTreeSnapshot(work), KUSTOMIZE, sandbox=False, cache=cache)
    assert runs["kustomize"] == 2 and not list((tmp_path / "renders").glob("*/*.json"))


def test_a_render_is_kept_by_its_inputs_whatever_else_a_commit_changes(remote, tmp_path, runs):
    mirror, base, _ = mirror_of(remote, tmp_path, CHANGE)
    cache = RenderCache(tmp_path / "renders")

    def rendered(commit: str) -> list[tuple]:
        mirror.ensure(remote.url, [commit], ["+refs/heads/*:refs/heads/*"])
        return as_tuples(render(mirror.snapshot(commit), KUSTOMIZE, sandbox=False, cache=cache))

    first = rendered(base)
    # Elsewhere: another overlay, the chart, and names that sort beside the overlay's directory.
    elsewhere = remote.commit("main", {"envs/k1/kustomization.yaml": "resources: [../../base]\nnamePrefix: x-\n",
                                       "chart/values.yaml": "value: '9'\n", "envs/k0-notes.md": "-",
                                       "envs/k0.md": "-"}, parent=base)
    assert rendered(elsewhere) == first and runs["kustomize"] == 1
    # Its own inputs: the base it includes, and any file in its directory.
    changed_base = remote.commit("main", {"base/app.yaml": CM.format(name="app", value="5")})
    assert rendered(changed_base)[0][1]["data"] == {"k": "5"} and runs["kustomize"] == 2
    rendered(remote.commit("main", {"envs/k0/notes.md": "-"}))
    assert runs["kustomize"] == 3


def test_a_pull_requests_base_renders_once_for_all_its_pushes(remote, tmp_path, runs):
    mirror, base, head = mirror_of(remote, tmp_path, CHANGE)
    cache = RenderCache(tmp_path / "renders")
    first = diff(mirror, base, head, sandbox=False, cache=cache)
    rendered = runs["kustomize"]
    second_head = remote.commit("pr", {"base/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n"
                                                        "data: {k: '3'}\n"})
    mirror.ensure(remote.url, [second_head], ["+refs/heads/*:refs/heads/*"])
    second = diff(mirror, base, second_head, sandbox=False, cache=cache)
    assert runs["kustomize"] == rendered + rendered // 2  # only the new head's renders
    assert [e.counts for e in second.environments] == [e.counts for e in first.environments]
    assert diff(mirror, base, head, sandbox=False) == first  # as without a cache


def test_the_cache_keeps_to_its_budget_forgetting_the_least_recently_used(remote, tmp_path):
    mirror, base, head = mirror_of(remote, tmp_path, CHANGE)
    probe = RenderCache(tmp_path / "probe")
    render(mirror.snapshot(base), KUSTOMIZE, sandbox=False, cache=probe)
    size = sum(f.stat().st_size for f in (tmp_path / "probe").glob("*/*.json"))
    cache = RenderCache(tmp_path / "renders", budget=int(size * 2.5))
    envs = [Environment(f"k{i}", "main", f"envs/k{i}") for i in range(4)]
    for env in envs:
        render(mirror.snapshot(base), env, sandbox=False, cache=cache)
    kept = list((tmp_path / "renders").glob("*/*.json"))
    assert len(kept) == 2 and sum(f.stat().st_size for f in kept) <= cache.budget
    assert {cache.key(inputs_id(mirror.snapshot(base), render_inputs(mirror.snapshot(base), env)), "kustomize", env,
                      4 * 1024 * 1024) for env in envs[2:]} == \
        {f.stem for f in kept}

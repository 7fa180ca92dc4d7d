"""Webhook to comment on a small repository: `python bench/latency.py [--pushes 40]`.

A pull request on the GitHub stand-in gets `--pushes` new heads, one at a time, each delivered as a
signed `synchronize` webhook to the real app over HTTP, with a long-running `gitops-bot worker`
and a real Redis. For each push it times the delivery's answer and the moment its diff comment
names the new head, and prints their p50 and p90 beside the job's own run time (as RQ records it)
and the ratio of the two: what queuing, fetching and reporting add to the diff itself.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.embedded import RedisServer  # noqa: E402
from tests.conftest import GitRemote  # noqa: E402
from tests.fakes.github_api import FakeGitHub  # noqa: E402
from tests.harness import Bot, PullRequestScenario, bot_env  # noqa: E402

REPO, SECRET = "acme/infra", "bench-secret"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def until(condition, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    """Poll `condition` every millisecond; the moment it held."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise SystemExit("bench: no comment within a minute; see the worker's log")
        time.sleep(0.001)
    return time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=40)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the app's server: a line per request
    tmp = Path(tempfile.mkdtemp(prefix="gitops-bot-bench-"))
    with RedisServer(tmp / "redis") as server, FakeGitHub(bot_login="gitops-bot") as github:
        bot = Bot(bot_env(tmp, server.url, 'repos: ["acme/*"]\n', GITHUB_WEBHOOK_SECRET=SECRET,
                          GITHUB_TOKEN="ghp_benchTOKENvalue0123456789", GITHUB_API_URL=github.url))
        scenario = PullRequestScenario(GitRemote(tmp), github, bot, REPO, SECRET)
        worker = bot.spawn_worker()
        try:
            answers, comments, runs = [], [], []
            for push in range(args.pushes + 1):  # the first warms the mirror and the worker up
                head = scenario.push_head({"apps/config.yaml": "apiVersion: v1\nkind: ConfigMap\n"
                                           f"metadata: {{name: settings}}\ndata: {{mode: fast, push: '{push}'}}\n"})
                started = time.perf_counter()
                answer = scenario.deliver(scenario.event("opened" if push == 0 else "synchronize", head))
                answered = time.perf_counter()
                done = until(lambda: any(head[:7] in c["body"] for c in scenario.comments()))
                if push:
                    job = bot.job(answer.body["queued"][0])
                    while job.ended_at is None:  # the comment comes before the job's end is recorded
                        time.sleep(0.001)
                        job.refresh()
                    answers.append(answered - started)
                    comments.append(done - started)
                    runs.append((job.ended_at - job.started_at).total_seconds())
        finally:
            bot.stop_worker(worker)
            bot.stop()

    def ms(values: list[float], fraction: float) -> str:
        return f"{percentile(values, fraction) * 1000:7.1f} ms"

    print(f"{args.pushes} pushes to one pull request, one at a time; a long-running worker, real Redis and git")
    print(f"   webhook answered:         p50 {ms(answers, 0.5)}   p90 {ms(answers, 0.9)}")
    print(f"   webhook to comment:       p50 {ms(comments, 0.5)}   p90 {ms(comments, 0.9)}")
    print(f"   the diff job itself:      p50 {ms(runs, 0.5)}   p90 {ms(runs, 0.9)}")
    print(f"   webhook to comment / job: {statistics.median(comments) / statistics.median(runs):.2f} at p50")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

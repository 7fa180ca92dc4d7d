"""The dashboard after a real deploy and a lock: its JSON, its token, what jobs did, refused deliveries,
pull requests, the fleet, and the page in headless Chromium, at a laptop's size too."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

from bot.dashboard import Links, reconcile_words, summarize
from bot.environments import EnvRef, Environments, Record, Sync
from bot.forges.github import signature, web_url
from bot.queue import RECENT_REFUSALS
from tests.conftest import payload
from tests.fakes.github_api import FakeGitHub
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, HEAD_CHANGES, PASSWORD_BASE, Bot, PullRequestScenario, bot_env

REPO, SECRET, TOKEN, DASHBOARD_TOKEN = "acme/infra", "dash-secret", "ghp_dashTOKEN0123456789", "dash-token-42"
FILES = {".gitops.yaml": "environments:\n  staging: {branch: main, path: apps, cluster: staging, namespace: shop}\n",
         "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n", **BASE_FILES}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def deployed(tmp_path: Path, remote, redis_server, redis):
    """A bot whose `staging` environment was deployed by a push, then locked."""
    with FakeGitHub(bot_login="gitops-bot") as github, FakeKubeAPI() as kube:
        kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
        config = (f'repos: ["acme/*"]\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, repos: ["*"]}}\n')
        github.add_repo(REPO, clone_url=remote.url)
        bot = Bot(bot_env(tmp_path, redis_server.url, config, GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN,
                          GITHUB_API_URL=github.url, GITOPS_BOT_DASHBOARD_TOKEN=DASHBOARD_TOKEN))
        sha = remote.commit("main", FILES, "base")
        push = payload("github/push.branch")
        push.update(ref="refs/heads/main", before="0" * 40, after=sha)
        push["repository"].update(full_name=REPO, clone_url=remote.url, default_branch="main")
        raw = json.dumps(push).encode()
        answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "push-1",
                                                    "X-Hub-Signature-256": signature(SECRET, raw)})
        assert answer.status == 202
        bot.work()
        Environments(redis, "gitops-bot").lock(EnvRef("github", REPO, "staging"), "alice", "release freeze")
        bot.github = github
        yield bot, sha
        bot.stop()


def test_the_api_shows_the_deploy_the_lock_and_the_delivery(deployed):
    bot, sha = deployed
    state = bot.get(f"/api/state?token={DASHBOARD_TOKEN}")
    assert state.status == 200
    (env,) = state.body["environments"]
    assert (env["repo"], env["environment"], env["deployed_sha"], env["result"]) == (REPO, "staging", sha, "success")
    assert env["commit_url"].endswith(f"/{REPO}/commit/{sha}")
    assert env["lock"]["actor"] == "alice" and env["lock"]["reason"] == "release freeze"
    assert env["history"][0]["created"] == 4  # the namespace, Deployment, Secret and ConfigMap
    assert state.body["deliveries"][0]["delivery"] == "push-1"
    assert {q["name"] for q in state.body["queues"]} == {"gitops-bot.deploy", "gitops-bot.commands", "gitops-bot.diff"}


def test_the_token_is_required(deployed):
    bot, _ = deployed
    for path in ("/", "/api/state", "/api/environments", "/api/deliveries", "/api/queues"):
        assert bot.get(path).status == 401
        assert bot.get(path + "?token=wrong").status == 401
    assert bot.get("/api/queues?token=" + DASHBOARD_TOKEN).status == 200


def test_nothing_on_it_reveals_a_token_or_a_secret_value(deployed):
    bot, _ = deployed
    import urllib.request

    page = urllib.request.urlopen(f"{bot.url}/?token={DASHBOARD_TOKEN}").read().decode()
    data = json.dumps(bot.get(f"/api/state?token={DASHBOARD_TOKEN}").body)
    for text in (page, data):
        for secret in (TOKEN, SECRET, PASSWORD_BASE, "password-one"):
            assert secret not in text


def record_checks(redis, sha: str) -> float:
    """`staging` drifted and degraded, `production` in sync, `payments` whose check failed; checked 5 minutes ago."""
    checked, envs = time.time() - 300, Environments(redis, "gitops-bot")
    envs.record_sync(EnvRef("github", REPO, "staging"), Sync(
        sha, checked, "drifted", 3,
        ({"key": "apps/Deployment shop/web", "what": "changed", "fields": ["spec.replicas", "spec.template.image"],
          "managers": ["kubectl-edit"]},
         {"key": "ConfigMap shop/settings", "what": "missing", "fields": [], "managers": []}),
        compared=4, health={"healthy": 2, "degraded": 1, "unknown": 1},
        unhealthy=({"key": "apps/Deployment shop/web", "health": "degraded",
                    "message": "quota exceeded <img src=x onerror=alert(1)>"},)))
    envs.record_sync(EnvRef("github", REPO, "production"), Sync("f" * 40, checked, "in_sync", compared=41,
                                                                health={"healthy": 41}))
    envs.record_sync(EnvRef("github", REPO, "payments"), Sync("f" * 40, checked, "error",
                                                              error="cluster staging: connection refused"))
    return checked


def test_the_api_shows_each_environments_sync_check(deployed, redis):
    bot, sha = deployed
    envs = {row["environment"]: row for row in bot.get(f"/api/environments?token={DASHBOARD_TOKEN}").body}
    assert envs["staging"]["sync"]["state"] == "in_sync" and envs["staging"]["attention"] == []  # as the deploy left it

    checked = record_checks(redis, sha)
    envs = {row["environment"]: row for row in bot.get(f"/api/environments?token={DASHBOARD_TOKEN}").body}
    staging = envs["staging"]["sync"]
    assert (staging["state"], staging["sha"], staging["stale"], staging["compared"]) == ("drifted", sha, False, 4)
    assert staging["checked"] == checked
    assert staging["checked_utc"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checked))
    assert staging["drifted_count"] == 3 and staging["drifted"][0] == {
        "key": "apps/Deployment shop/web", "what": "changed", "fields": ["spec.replicas", "spec.template.image"],
        "managers": ["kubectl-edit"]}
    assert staging["health"] == {"healthy": 2, "degraded": 1, "unknown": 1}
    assert staging["health_words"] == "2 healthy, 1 degraded, 1 without health information"
    assert staging["unhealthy"][0]["health"] == "degraded" and staging["unhealthy_count"] == 1
    assert envs["staging"]["attention"] == ["3 objects drifted", "1 degraded"]
    assert envs["production"]["attention"] == [] and envs["production"]["sync"]["state"] == "in_sync"
    assert envs["production"]["sync"]["stale"]  # checked against a commit it never deployed
    assert envs["payments"]["attention"] == ["sync check failed: cluster staging: connection refused"]


def chromium_dom(url: str, tmp_path: Path) -> str:
    """The page as headless Chromium renders it."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60)
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_a_heal_of_the_drift_is_listed_among_the_deploys_as_such(deployed, redis):
    bot, sha = deployed
    envs = Environments(redis, "gitops-bot")
    lease = envs.acquire(EnvRef("github", REPO, "staging"), sha, "heal-job")
    assert envs.record_heal(lease, Record(sha, "gitops-bot", time.time(), "success", 0.2, changed=1, heal=True))
    lease.release()
    page = urllib.request.urlopen(f"{bot.url}/?token={DASHBOARD_TOKEN}").read().decode()
    deploys = page.split('id="deploys"', 1)[1].split("</table>", 1)[0]
    assert deploys.count("<tr>") == 3  # the header, the heal, the deploy
    assert '<td>gitops-bot</td><td class="ok">drift re-applied: success</td>' in deploys
    assert "<td>0 / 1 / 0 / 0</td>" in deploys


def test_the_page_in_a_real_browser(deployed, tmp_path):
    bot, sha = deployed
    dom = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    environments = dom.split('id="environments"', 1)[1].split("</table>", 1)[0]
    assert f'<code class="sha">{sha[:7]}</code>' in environments
    assert "locked by alice: release freeze" in environments
    assert "staging" in environments
    refused = chromium_dom(f"{bot.url}/", tmp_path)
    assert sha[:7] not in refused and "token" in refused


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_a_drifted_or_degraded_environment_stands_out_in_a_real_browser(deployed, tmp_path, redis):
    bot, sha = deployed
    calm = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    assert 'id="attention"' not in calm and '<span class="ok">in sync</span>' in calm  # as the deploy left it

    checked = record_checks(redis, sha)
    dom = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    assert dom.index('id="attention"') < dom.index('id="environments"')  # above the fold, before the table
    attention = dom.split('id="attention"', 1)[1].split("</section>", 1)[0]
    payments, staging = attention.split('<div class="environment">')[1:]  # by name, as the table
    assert "<b>staging</b>: <span class=\"bad\">3 objects drifted; 1 degraded</span>" in staging
    absolute = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(checked))
    assert f"checked 5m ago ({absolute}) against <code>{sha[:7]}</code>;" in staging
    assert ("<td><code>apps/Deployment shop/web</code></td><td class=\"bad\">changed</td>"
            "<td><code>spec.replicas</code>, <code>spec.template.image</code></td><td>kubectl-edit</td>") in staging
    assert "<td><code>ConfigMap shop/settings</code></td><td class=\"bad\">missing</td>" in staging
    assert "and 1 more" in staging  # 3 drifted, 2 named
    assert "quota exceeded &lt;img src=x onerror=alert(1)&gt;" in staging and "<img" not in dom
    assert "<b>payments</b>: <span class=\"bad\">sync check failed: cluster staging: connection refused" in payments
    assert "production" not in attention  # in sync and healthy: nothing to look at

    Environments(redis, "gitops-bot").record_sync(EnvRef("github", REPO, "staging"), Sync(
        sha, checked, "drifted", 70, tuple({"key": f"ConfigMap shop/cm-{i:02}", "what": "missing"} for i in range(50)),
        compared=80, health={"healthy": 80}))
    many = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path).split('id="attention"', 1)[1]
    assert "cm-09" in many and "cm-10" not in many and "and 60 more" in many  # a few, then a count

    table = dom.split('id="environments"', 1)[1].split("</table>", 1)[0]
    rows = {row.split("<b>", 1)[1].split("</b>", 1)[0]: row for row in table.split("<tr")[2:]}
    assert 'class="attention"' in rows["staging"] and 'class="attention"' not in rows["production"]
    assert '<span class="bad">3 drifted</span> of 4 objects' in rows["staging"]
    assert f"checked 5m ago ({absolute})" in rows["staging"]
    assert '<span class="bad">2 healthy, 1 degraded, 1 without health information</span>' in rows["staging"]
    assert '<span class="ok">in sync</span>, 41 objects' in rows["production"]
    assert '<span class="bad">check failed: cluster staging: connection refused</span>' in rows["payments"]


def api(bot: Bot, what: str):
    return bot.get(f"/api/{what}?token={DASHBOARD_TOKEN}").body


def refuse_some(bot: Bot) -> None:
    """Two deliveries signed with the wrong secret, one malformed, one too large."""
    raw = b'{"zen": "x"}'
    for delivery in ("wrong-1", "wrong-2"):
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": delivery,
                   "X-Hub-Signature-256": signature("not-the-secret", raw)}
        assert bot.post("/webhooks/github", raw, headers).status == 401
    assert bot.post("/webhooks/github", b"{", {"X-GitHub-Event": "push", "X-GitHub-Delivery": "broken-1",
                                               "X-Hub-Signature-256": signature(SECRET, b"{")}).status == 400
    assert bot.post("/webhooks/github", b"x" * (25 * 1024 * 1024 + 1), {"X-GitHub-Event": "push"}).status == 413


def test_each_delivery_says_what_its_job_did_and_open_pull_requests_their_last_diff(deployed, remote):
    bot, sha = deployed
    (push,) = api(bot, "deliveries")
    (job,) = push["jobs"]
    assert (job["state"], job["kind"], job["ok"]) == ("finished", "deploy_push", True)
    assert job["words"] == "staging success (4 created, 0 changed, 0 deleted)"
    assert push["repo_url"] == f"{web_url(bot.github.url)}/{REPO}"  # the forge's web host, not the payload's URL

    pr = PullRequestScenario(remote, bot.github, bot, REPO, SECRET, number=12, files=FILES)
    head = pr.push_head(HEAD_CHANGES)
    assert pr.deliver(pr.event("opened", head), delivery="pr-1").status == 202
    (pull,) = api(bot, "pulls")
    assert (pull["repo"], pull["number"], pull["head_sha"], pull["diff"]["state"]) == (REPO, 12, head, "queued")
    assert pull["diff"]["words"] == "waiting for a worker"
    bot.work()
    (pull,) = api(bot, "pulls")
    assert pull["diff"]["ok"] is True and pull["diff"]["words"].startswith("diff posted: 1 added, 2 changed, 0 removed")
    assert pull["url"].endswith(f"/{REPO}/pull/12") and pull["commit_url"].endswith(f"/{REPO}/commit/{head}")
    newest = api(bot, "deliveries")[0]
    assert newest["delivery"] == "pr-1" and newest["pull"] == 12 and newest["pull_url"] == pull["url"]
    assert newest["jobs"][0]["words"] == pull["diff"]["words"]

    closed = pr.event("opened", head)
    closed["action"] = "closed"
    assert pr.deliver(closed, delivery="pr-2").status == 200
    assert api(bot, "pulls") == []  # closed: no longer listed


def test_refused_deliveries_are_listed_with_their_reason_and_never_their_body(deployed, redis):
    bot, _ = deployed
    refuse_some(bot)
    refused = api(bot, "refused")
    assert [(r["status"], r["delivery"]) for r in refused] == [(413, None), (400, "broken-1"), (401, "wrong-2"),
                                                                (401, "wrong-1")]
    assert refused[2]["reason"] == "X-Hub-Signature-256 does not match the body"
    assert refused[1]["reason"] == "body is not valid JSON"
    assert refused[0]["reason"] == "body is over 25 MiB"
    assert all(r["source"] == "127.0.0.1" and r["forge"] == "github" for r in refused)
    assert "zen" not in json.dumps(refused) and "sha256=" not in json.dumps(refused)
    groups = api(bot, "state")["refused_recently"]
    assert [(g["status"], g["count"]) for g in groups] == [(413, 1), (400, 1), (401, 2)]

    for _ in range(RECENT_REFUSALS + 5):  # bounded: the newest are kept
        bot.store.refuse({"forge": "gitlab", "status": 401, "reason": "X-Gitlab-Token is wrong", "at": time.time()})
    assert redis.llen(bot.store.refusals_key) == RECENT_REFUSALS


def test_the_fleet_workers_redis_the_last_reconcile_and_the_version(deployed):
    bot, _ = deployed
    fleet = api(bot, "fleet")
    assert fleet["version"] and fleet["workers"] == []  # burst workers have come and gone
    assert fleet["redis"]["up"] and fleet["redis"]["version"] and fleet["redis"]["memory"]
    assert fleet["reconcile"] is None
    bot.store.record_reconcile({"diffs": [f"{REPO}#3 at abc1234"], "deploys": [], "checks": [f"{REPO} staging"],
                                "not_deployed": [], "errors": []})
    reconcile = api(bot, "fleet")["reconcile"]
    assert reconcile["words"] == "1 diff, 0 deploys, 1 sync check queued" and time.time() - reconcile["at"] < 60

    worker = bot.spawn_worker()
    try:
        deadline = time.time() + 30
        while not api(bot, "fleet")["workers"] and time.time() < deadline:
            time.sleep(0.2)
        (alive,) = api(bot, "fleet")["workers"]
        assert set(alive["queues"]) == {"gitops-bot.deploy", "gitops-bot.commands", "gitops-bot.diff"}
        assert alive["last_heartbeat"] and time.time() - alive["last_heartbeat"] < 60
    finally:
        bot.stop_worker(worker)


LINKS = [  # (web URLs, forge, repo, number, sha) -> repository, pull request, commit
    ({"github": "https://github.com"}, "github", "acme/infra", 7, "abc",
     ("https://github.com/acme/infra", "https://github.com/acme/infra/pull/7",
      "https://github.com/acme/infra/commit/abc")),
    ({"github": "https://ghe.example/"}, "github", "acme/infra", 7, "abc",
     ("https://ghe.example/acme/infra", "https://ghe.example/acme/infra/pull/7",
      "https://ghe.example/acme/infra/commit/abc")),
    ({"gitlab": "https://gitlab.example"}, "gitlab", "group/sub/infra", 3, "abc",
     ("https://gitlab.example/group/sub/infra", "https://gitlab.example/group/sub/infra/-/merge_requests/3",
      "https://gitlab.example/group/sub/infra/-/commit/abc")),
    ({"github": "https://github.com"}, "gitlab", "group/infra", 3, "abc", (None, None, None)),
]


@pytest.mark.parametrize("urls, forge, repo, number, sha, expected", LINKS)
def test_links_go_to_the_configured_forge(urls, forge, repo, number, sha, expected):
    links = Links(urls)
    assert (links.repo(forge, repo), links.pull(forge, repo, number), links.commit(forge, repo, sha)) == expected


SUMMARIES = [  # (job, its result) -> words, went well
    ("diff_pull_request", {"state": "success", "added": 1, "changed": 2, "removed": 0, "parts": 1},
     ("diff posted: 1 added, 2 changed, 0 removed", True)),
    ("diff_pull_request", {"state": "failure", "added": 0, "changed": 0, "removed": 0, "parts": 1},
     ("diff posted: 0 added, 0 changed, 0 removed (status failure)", False)),
    ("diff_pull_request", {"superseded": True}, ("superseded by a newer head", True)),
    ("deploy_push", {"skipped": "abc1234 is not on the current history of main"},
     ("skipped: abc1234 is not on the current history of main", True)),
    ("deploy_push", {"error": ".gitops.yaml: bad"}, ("failed: .gitops.yaml: bad", False)),
    ("deploy_push", {"production": {"state": "failure", "created": 0, "changed": 1, "deleted": 0, "error": "timed out"},
                     "staging": {"state": "joined"}},
     ("production failure (0 created, 1 changed, 0 deleted): timed out; staging: joined", False)),
    ("deploy_push", {}, ("no environment with a cluster on this branch", True)),
    ("run_commands", {"commands": [{"command": "/lock staging", "result": "locked"}]}, ("/lock staging: locked", True)),
    ("run_commands", {"ignored": "no command"}, ("no command run: no command", True)),
    ("check_sync", {"state": "drifted", "drifted": 2, "healed": False, "error": None}, ("2 drifted", False)),
    ("check_sync", {"state": "in_sync", "drifted": 0, "healed": False, "error": None}, ("in sync", True)),
    ("check_sync", {"state": "error", "error": "connection refused"}, ("sync check failed: connection refused", False)),
]


@pytest.mark.parametrize("kind, value, expected", SUMMARIES)
def test_what_a_finished_job_did_in_words(kind, value, expected):
    assert summarize(kind, value) == expected


def test_a_reconcile_in_words():
    assert reconcile_words({"diffs": ["a"], "deploys": ["b", "c"], "checks": [], "not_deployed": ["d: why"],
                            "errors": ["e"]}) == "1 diff, 2 deploys, 0 sync checks queued; 1 not deployed; 1 error"


def fail_a_job(bot: Bot) -> str:
    """A job that fails for good: its function does not exist, and it has no retries."""
    job = bot.store.queue("deploy").enqueue("bot.jobs.no_such_job", description="deploy acme/infra main at 0000000")
    bot.work()
    assert job.id in bot.failed_jobs()
    return job.id


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_failures_head_the_page_in_a_real_browser(deployed, tmp_path, redis, remote):
    bot, sha = deployed
    refuse_some(bot)
    fail_a_job(bot)
    record_checks(redis, sha)
    dom = chromium_dom(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    attention = dom.split('id="attention"', 1)[1].split("</section>", 1)[0]
    assert dom.index('id="attention"') < dom.index('id="environments"')
    assert attention.index('id="failed-jobs"') < attention.index('id="refused-recently"') < attention.index(
        'class="environment"')  # failed jobs, refused deliveries, then environments
    failed = attention.split('id="failed-jobs"', 1)[1].split("</table>", 1)[0]
    assert "1 job failed in the last 24 h" in failed and "deploy acme/infra main at 0000000" in failed
    assert "no_such_job" in failed
    refused = attention.split('id="refused-recently"', 1)[1].split("</table>", 1)[0]
    assert "<td>X-Hub-Signature-256 does not match the body</td><td>2</td>" in refused
    assert "127.0.0.1" in refused and " UTC)" in refused

    deliveries = dom.split('id="deliveries"', 1)[1].split("</table>", 1)[0]
    assert '<div class="ok">staging success (4 created, 0 changed, 0 deleted)</div>' in deliveries
    assert f'<a href="{web_url(bot.github.url)}/{REPO}">{REPO}</a>' in deliveries
    environments = dom.split('id="environments"', 1)[1].split("</table>", 1)[0]
    assert f'/{REPO}/commit/{sha}"><code class="sha">{sha[:7]}</code></a>' in environments
    assert time.strftime("%Y-%m-%d", time.gmtime()) in environments  # the absolute time beside "ago"
    fleet = dom.split('id="fleet-line"', 1)[1].split("</p>", 1)[0]
    assert '<span class="bad">0 workers alive</span>' in fleet and "Redis " in fleet


def screenshot(url: str, tmp_path: Path, width: int = 1366, height: int = 768) -> list[list[tuple[int, int, int]]]:
    """What a laptop's screen shows of the page before any scrolling, as rows of RGB pixels."""
    out = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={width},{height}",
                    f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={out}", url],
                   capture_output=True, timeout=60, check=True)
    return png_rows(out.read_bytes())


def png_rows(data: bytes) -> list[list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (as Chromium writes them)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        header = body if kind == b"IHDR" else header
        if kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw, stride, rows, previous = zlib.decompress(b"".join(chunks)), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return rows


ATTENTION_RED = (0xcf, 0x22, 0x2e)


def red_rows(rows: list[list[tuple[int, int, int]]]) -> list[int]:
    """Rows of the screen crossed by a long run of the attention box's red border."""
    return [y for y, row in enumerate(rows) if sum(1 for pixel in row if pixel == ATTENTION_RED) > len(row) // 2]


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_on_a_laptop_screen_the_failures_show_without_scrolling(deployed, tmp_path, redis):
    bot, sha = deployed
    calm = screenshot(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    assert len(calm) == 768 and len(calm[0]) == 1366
    assert red_rows(calm) == []  # nothing failed: no red box

    refuse_some(bot)
    fail_a_job(bot)
    record_checks(redis, sha)
    rows = screenshot(f"{bot.url}/?token={DASHBOARD_TOKEN}", tmp_path)
    edges = red_rows(rows)
    assert edges and edges[0] < 150  # the box's top border, right under the title and the fleet line

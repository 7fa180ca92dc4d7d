"""Intake load: signed, real-sized pull_request deliveries against `gitops-bot serve` on loopback.

Prints accepted webhooks per second, p50 and p99 latency and the server's CPU time per request
(Redis's and wrk's beside it, and the machine's idle share: with none idle, the rate is roughly the
cores over their sum), the same for a bare Flask endpoint answering 204 under the same server
(worker class, workers, threads) and load, their ratios, and whether every 202 became a job.

    python bench/intake.py [--seconds 10] [--connections 32] [--workers 3] [--threads-per-worker 4]

Needs `wrk` (Debian package `wrk`) for the load: a Python client would eat the cores it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.embedded import RedisServer, free_port  # noqa: E402
from bot.forges.github import signature  # noqa: E402
from bot.queue import Store  # noqa: E402

SECRET = "bench-secret"
WRK_SCRIPT = r"""
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  wrk.method = "POST"
  wrk.body = io.open(args[1]):read("*a")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "pull_request"
  wrk.headers["X-Hub-Signature-256"] = args[2]
  accepted = 0
  other = 0
end
function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = string.format("%d-%d-%d", id, counter, math.random(1, 1e9))
  return wrk.format()
end
function response(status, headers, body)
  if status == 202 or status == 204 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("RESULT accepted=%d other=%d seconds=%f p50_us=%d p99_us=%d\n",
    a, o, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
"""


def wait_up(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def load(url: str, body: Path, sig: str, seconds: int, connections: int, threads: int, script: Path) -> dict:
    """wrk's counts and latencies, with its own CPU time and the machine's idle share while it ran: the
    server's CPU per request sets its rate only while the machine is busy, wrk and Redis included."""
    before, ticks = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_ticks()
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", "-s", str(script), url, "--", str(body), sig],
                         capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle, total = (b - a for a, b in zip(ticks, cpu_ticks()))
    match = re.search(r"RESULT accepted=(\d+) other=(\d+) seconds=([\d.]+) p50_us=(\d+) p99_us=(\d+)", out)
    accepted, other, secs, p50, p99 = match.groups()
    wrk_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"accepted": int(accepted), "other": int(other), "rate": int(accepted) / float(secs),
            "p50_ms": int(p50) / 1000, "p99_ms": int(p99) / 1000, "idle": idle / max(total, 1),
            "wrk_ms": 1000 * wrk_cpu / max(int(accepted) + int(other), 1)}


def cpu_ticks() -> tuple[int, int]:
    """The machine's idle CPU ticks (iowait included) and all its ticks, so far."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def serve(command: list[str], env: dict[str, str], port: int, health: str) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}{health}")
    return process


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its children, reaped or alive (gunicorn's workers)."""
    pids = [pid, *map(int, subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                          text=True).stdout.split())]
    ticks = 0
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers, for both servers "
                        "(`gitops-bot serve`'s default)")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="gunicorn threads, for both servers "
                        "(`gitops-bot serve`'s default)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/intake.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="gitops-bot-bench-"))
    body = json.loads((ROOT / "tests/fixtures/github/pull_request.synchronize.json").read_text())
    body["repository"]["full_name"] = "acme/infra"
    raw = json.dumps(body, indent=2).encode()  # the size GitHub sends, about 28 KB
    (tmp / "body.json").write_bytes(raw)
    (tmp / "wrk.lua").write_text(WRK_SCRIPT)
    (tmp / "bot.yaml").write_text('repos: ["acme/*"]\n')
    sig = signature(SECRET, raw)

    with RedisServer(tmp / "redis", appendonly=os.environ.get("BENCH_AOF", "yes") == "yes") as server:
        env = {**os.environ, "REDIS_URL": server.url, "GITOPS_BOT_CONFIG": str(tmp / "bot.yaml"),
               "GITHUB_WEBHOOK_SECRET": SECRET, "GITOPS_BOT_DATA_DIR": str(tmp / "data")}
        results = {}
        for name, command in {
            "gitops-bot": [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"],
            "bare flask": [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--worker-class",
                           "bot.webserver.IntakeWorker", "bench.bare_app:app"],
        }.items():
            port = free_port()
            command = [c.replace("{port}", str(port)) for c in command]
            command += ["--workers", str(args.workers), "--threads", str(args.threads_per_worker)]
            if name == "gitops-bot":
                command += ["--port", str(port)]
            process = serve(command, env, port, "/healthz" if name == "gitops-bot" else "/")
            try:
                cpu = cpu_seconds(process.pid), cpu_seconds(server.process.pid)
                forks = redis.Redis.from_url(server.url).info("stats")["total_forks"]
                results[name] = load(f"http://127.0.0.1:{port}/webhooks/github", tmp / "body.json", sig,
                                     args.seconds, args.connections, args.threads, tmp / "wrk.lua")
                answered = results[name]["accepted"] + results[name]["other"]
                results[name]["cpu_ms"] = 1000 * (cpu_seconds(process.pid) - cpu[0]) / max(answered, 1)
                results[name]["redis_ms"] = 1000 * (cpu_seconds(server.process.pid) - cpu[1]) / max(answered, 1)
                # Redis forks only to rewrite its append-only file (snapshots are off): a CPU-bound child
                # on the same cores for a while, which shows in the tail.
                results[name]["rewrites"] = redis.Redis.from_url(server.url).info("stats")["total_forks"] - forks
            finally:
                process.terminate()
                process.wait(30)
        store = Store(redis.Redis.from_url(server.url), "gitops-bot")
        jobs = store.queue("diff").count

    bot, bare = results["gitops-bot"], results["bare flask"]
    print(f"payload: {len(raw):,} bytes, {args.connections} connections, {args.seconds} s, "
          f"gunicorn {args.workers} workers × {args.threads_per_worker} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, r in results.items():
        print(f"{name:>11}: {r['rate']:8.0f} accepted/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms"
              f"   CPU per request: server {r['cpu_ms']:.2f} ms, Redis {r['redis_ms']:.2f} ms, wrk {r['wrk_ms']:.2f} ms"
              f"   machine idle {100 * r['idle']:.0f}%   (non-2xx: {r['other']}; AOF rewrites: {r['rewrites']})")
    print(f"gitops-bot / bare flask: rate {bot['rate'] / bare['rate']:.2f}, p99 {bot['p99_ms'] / bare['p99_ms']:.2f}, "
          f"server CPU per request {bot['cpu_ms'] / bare['cpu_ms']:.2f}")
    # wrk stops counting at the deadline: a request answered after it is a job without a counted 202.
    print(f"jobs in Redis: {jobs}, 202 answers: {bot['accepted']}, lost: {max(bot['accepted'] - jobs, 0)}"
          f" (answered after the deadline: {max(jobs - bot['accepted'], 0)})")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if jobs >= bot["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())

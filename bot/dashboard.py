"""The read-only dashboard at `/` and its data at `/api/...`: server-rendered, refreshing itself."""

from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

import redis
from flask import Blueprint, Response, abort, jsonify, render_template_string, request
from rq.job import Job
from rq.results import Result
from rq.worker import Worker

from bot import __version__
from bot.deploy_report import health_summary, unhealthy_total
from bot.environments import EnvRef, Environments, Record, Sync
from bot.queue import Store

REFRESH_SECONDS = 10
FAILURES_SHOWN = 10
OBJECTS_SHOWN = 10
"""Drifted, and unhealthy, objects the page lists per environment; the JSON has all the check kept."""
PULLS_SHOWN = 50
RECENT_TROUBLE = 24 * 3600
"""Seconds a failed job or a refused delivery stays in "Needs attention"; the tables below keep them longer."""


@dataclass(frozen=True)
class Links:
    """Where a person sees a repository, a pull request or a commit on its forge: the web URL of each
    forge (GitHub's from GITHUB_API_URL, GitLab's GITLAB_URL), never a URL a payload gave."""

    web_urls: Mapping[str, str]

    def repo(self, forge: str, repo: str) -> str | None:
        base = self.web_urls.get(forge)
        return f"{base.rstrip('/')}/{quote(repo, safe='/')}" if base and repo else None

    def pull(self, forge: str, repo: str, number: int | None) -> str | None:
        base = self.repo(forge, repo)
        if base is None or number is None:
            return None
        return f"{base}/-/merge_requests/{number}" if forge == "gitlab" else f"{base}/pull/{number}"

    def commit(self, forge: str, repo: str, sha: str | None) -> str | None:
        base = self.repo(forge, repo)
        if base is None or not sha:
            return None
        return f"{base}/-/commit/{quote(sha)}" if forge == "gitlab" else f"{base}/commit/{quote(sha)}"


def queues(store: Store) -> list[dict[str, Any]]:
    """Depth, running and failed per queue, with the error of the latest failures."""
    out = []
    for queue in store.queues():
        failed_ids = queue.failed_job_registry.get_job_ids(0, FAILURES_SHOWN - 1)
        failures = []
        for job in Job.fetch_many(failed_ids, connection=store.redis):
            if job is not None:
                result = job.latest_result()
                error = (result.exc_string if result else "") or ""
                failures.append({"id": job.id, "description": job.description,
                                 "ended_at": job.ended_at.isoformat() if job.ended_at else None,
                                 "ended": _timestamp(job.ended_at),
                                 "error": _last_line(error)})
        out.append({"name": queue.name, "queued": queue.count, "running": queue.started_job_registry.count,
                    "failed": queue.failed_job_registry.count, "failures": failures})
    return out


# -- what jobs did ---------------------------------------------------------------------------------

def job_outcomes(connection: redis.Redis, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each job's state and, once it ran, what it did in words: two round trips for any number of jobs
    (their hashes, then their latest results), read when the page is drawn, never at intake."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return {}
    jobs = Job.fetch_many(ids, connection=connection)
    pipe = connection.pipeline(transaction=False)
    for job_id in ids:
        pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
    latest = pipe.execute()
    outcomes = {}
    for job_id, job, found in zip(ids, jobs, latest):
        result = None
        if job is not None and found:
            result_id, payload = found[0]
            result = Result.restore(job_id, result_id.decode(), payload, connection=connection,
                                    serializer=job.serializer)
        outcomes[job_id] = job_outcome(job_id, job, result)
    return outcomes


def job_outcome(job_id: str, job: Job | None, result: Result | None) -> dict[str, Any]:
    """`state` is RQ's (`expired` once RQ forgot the job); `ok` is True, False, or None while it has not
    ended; `words` say what it did or why it failed."""
    if job is None:
        return {"id": job_id, "state": "expired", "ok": None, "words": "its record has expired", "kind": ""}
    state = job.get_status(refresh=False)
    state = state.value if state is not None else "unknown"
    kind = (job.func_name or "").rsplit(".", 1)[-1]
    base = {"id": job_id, "state": state, "kind": kind, "description": job.description,
            "ended": _timestamp(job.ended_at)}
    error = _last_line(result.exc_string or "") if result is not None and result.exc_string else ""
    if state == "finished" and result is not None and result.type == Result.Type.SUCCESSFUL:
        words, ok = summarize(kind, result.return_value)
        return {**base, "ok": ok, "words": words}
    if state == "failed":
        return {**base, "ok": False, "words": f"failed: {error or 'no reason recorded'}"}
    if state == "scheduled" and error:
        return {**base, "ok": None, "words": f"failed, retry scheduled: {error}"}
    return {**base, "ok": None, "words": {"queued": "waiting for a worker", "started": "running",
                                          "deferred": "waiting for another job"}.get(state, state)}


def summarize(kind: str, value: Any) -> tuple[str, bool | None]:
    """What a finished job did, from the result `bot.jobs` returned, and whether it went well."""
    if not isinstance(value, dict):
        return ("done", True)
    if kind == "diff_pull_request":
        if value.get("superseded"):
            return "superseded by a newer head", True
        counts = f"{value.get('added', 0)} added, {value.get('changed', 0)} changed, {value.get('removed', 0)} removed"
        ok = value.get("state") == "success"
        return f"diff posted: {counts}" + ("" if ok else f" (status {value.get('state')})"), ok
    if kind == "deploy_push":
        if "skipped" in value:
            return f"skipped: {value['skipped']}", True
        if "error" in value:
            return f"failed: {value['error']}", False
        if not value:
            return "no environment with a cluster on this branch", True
        parts = [deploy_words(name, outcome) for name, outcome in sorted(value.items())]
        return "; ".join(parts), not any(isinstance(o, dict) and o.get("state") in ("failure", "refused")
                                         for o in value.values())
    if kind == "run_commands":
        if "ignored" in value:
            return f"no command run: {value['ignored']}", True
        return "; ".join(f"{c.get('command')}: {c.get('result')}" for c in value.get("commands", [])), True
    if kind == "check_sync":
        if value.get("error"):
            return f"sync check failed: {value['error']}", False
        state = value.get("state")
        if state == "drifted":
            healed = ", re-applied" if value.get("healed") else ""
            return f"{value.get('drifted', 0)} drifted{healed}", bool(value.get("healed"))
        return str(state).replace("_", " "), True
    if kind == "run_periodically":
        return reconcile_words(value), not value.get("errors")
    return "done", True


def deploy_words(environment: str, outcome: Any) -> str:
    if not isinstance(outcome, dict):
        return f"{environment}: {outcome}"
    state = outcome.get("state", "unknown")
    if state in ("success", "failure", "refused") and "created" in outcome:
        counts = (f"{outcome.get('created', 0)} created, {outcome.get('changed', 0)} changed, "
                  f"{outcome.get('deleted', 0)} deleted")
        error = f": {outcome['error']}" if outcome.get("error") else ""
        return f"{environment} {state} ({counts}){error}"
    return f"{environment}: {state}"


def reconcile_words(findings: Mapping[str, Any]) -> str:
    """`2 diffs, 1 deploy, 3 sync checks queued; 1 not deployed; 0 errors`"""
    def many(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"
    queued = [many(len(findings.get(key) or []), word) for key, word in
              (("diffs", "diff"), ("deploys", "deploy"), ("checks", "sync check"))]
    words = ", ".join(queued) + " queued"
    if findings.get("not_deployed"):
        words += f"; {len(findings['not_deployed'])} not deployed"
    if findings.get("errors"):
        words += f"; {many(len(findings['errors']), 'error')}"
    return words


def delivery_rows(deliveries: list[dict[str, Any]], outcomes: Mapping[str, dict[str, Any]],
                  links: Links) -> list[dict[str, Any]]:
    """The recent deliveries, each with what its jobs did and links to its repository and pull request."""
    rows = []
    for entry in deliveries:
        forge, repo = entry.get("forge", ""), entry.get("repo") or ""
        jobs = [outcomes.get(job_id) or job_outcome(job_id, None, None) for job_id in entry.get("jobs") or []]
        rows.append({**entry, "jobs": jobs, "repo_url": links.repo(forge, repo),
                     "pull_url": links.pull(forge, repo, entry.get("pull"))})
    return rows


def pull_rows(pulls: list[dict[str, Any]], outcomes: Mapping[str, dict[str, Any]],
              links: Links) -> list[dict[str, Any]]:
    """Open pull requests with their newest diff: its state, counts and words."""
    return [{**pull, "diff": outcomes.get(pull.get("job", "")) or job_outcome(pull.get("job", ""), None, None),
             "url": links.pull(pull["forge"], pull["repo"], pull["number"]),
             "repo_url": links.repo(pull["forge"], pull["repo"]),
             "commit_url": links.commit(pull["forge"], pull["repo"], pull.get("head_sha"))}
            for pull in pulls[:PULLS_SHOWN]]


def refused_groups(refusals: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """Recent refusals by forge, code and reason, the newest group first: a wrong secret shows as one
    line with its count, however many deliveries it cost."""
    groups: dict[tuple[str, int, str], dict[str, Any]] = {}
    for entry in refusals:
        if (entry.get("at") or 0) < since:
            continue
        key = (entry.get("forge", ""), entry.get("status", 0), entry.get("reason", ""))
        group = groups.setdefault(key, {"forge": key[0], "status": key[1], "reason": key[2], "count": 0,
                                        "last": entry})
        group["count"] += 1
    return list(groups.values())


def fleet(store: Store) -> dict[str, Any]:
    """Workers alive on the bot's queues, Redis's version and memory, the last reconcile, the version."""
    names = {queue.name for queue in store.queues()}
    workers = [{"name": w.name, "hostname": w.hostname, "pid": w.pid, "state": w.get_state(),
                "queues": w.queue_names(), "last_heartbeat": _timestamp(w.last_heartbeat),
                "started": _timestamp(w.birth_date), "done": w.successful_job_count, "failed": w.failed_job_count}
               for w in Worker.all(connection=store.redis) if names & set(w.queue_names())]
    try:
        info = store.redis.info()
        server = {"up": True, "version": info.get("redis_version"), "memory": info.get("used_memory_human"),
                  "max_memory": info.get("maxmemory_human") if info.get("maxmemory") else None,
                  "uptime": info.get("uptime_in_seconds"), "clients": info.get("connected_clients")}
    except redis.ResponseError:  # INFO renamed or refused: Redis answers, that is all we know
        server = {"up": True}
    last = store.last_reconcile()
    return {"version": __version__, "workers": sorted(workers, key=lambda w: w["name"]), "redis": server,
            "reconcile": {**last, "words": reconcile_words(last)} if last else None}


def environment_rows(envs: Environments, commit_url: Callable[[EnvRef, str], str | None]) -> list[dict[str, Any]]:
    """Each known environment: what is deployed, by whom, its lock, what is pending, recent deploys, and its
    last sync check (`sync`, None until the first) with what needs someone's attention (`attention`)."""
    rows = []
    for ref in envs.known():
        status, history, sync = envs.status(ref), envs.history(ref, limit=10), envs.sync(ref)
        deployed, last = status.deployed, (history[0] if history else None)
        rows.append({
            "forge": ref.forge, "repo": ref.repo, "environment": ref.name,
            "deployed_sha": deployed.sha if deployed else None,
            "commit_url": commit_url(ref, deployed.sha) if deployed else None,
            "deployed_at": deployed.started if deployed else None,
            "deployed_by": deployed.actor if deployed else None,
            "result": last.result if last else None,
            "deploying_sha": status.deploying,
            "lock": asdict(status.hold) if status.hold else None,
            "pending_sha": status.pending.sha if status.pending else None,
            "history": [{**asdict(r), "environment": ref.name, "repo": ref.repo, "forge": ref.forge} for r in history],
            "sync": sync_row(sync, deployed) if sync else None,
            "attention": attention(sync) if sync else [],
        })
    return rows


def sync_row(sync: Sync, deployed: Record | None) -> dict[str, Any]:
    """A sync check as the dashboard shows it: the check's own fields, and the words and times around them."""
    return {**asdict(sync), "checked_utc": _utc(sync.checked, "%Y-%m-%dT%H:%M:%SZ"),
            "stale": deployed is None or deployed.sha != sync.sha,
            "unhealthy_count": unhealthy_total(sync), "health_words": health_summary(sync.health)}


def attention(sync: Sync) -> list[str]:
    """Why an environment needs someone: drift left in place, degraded objects, or a check that failed."""
    reasons = []
    if sync.state == "error":
        reasons.append(f"sync check failed: {' '.join((sync.error or 'no reason given').split())}")
    elif sync.state == "drifted" and not sync.healed:
        reasons.append(f"{sync.drifted_count} object{'' if sync.drifted_count == 1 else 's'} drifted")
    if sync.health.get("degraded"):
        reasons.append(f"{sync.health['degraded']} degraded")
    return reasons


def blueprint(store: Store, token: str | None, environments: Callable[[], list[dict[str, Any]]],
              links: Links | None = None) -> Blueprint:
    """`environments` gives each environment's state, most recent deploys included; `links` point at the forges."""
    pages = Blueprint("dashboard", __name__)
    links = links or Links({})

    @pages.before_request
    def require_token() -> None:
        if not token:
            # Deploy errors and repository names are for operators: with no token, only this machine sees them.
            if not _loopback(request.remote_addr):
                abort(403, "the dashboard is served to this machine only until GITOPS_BOT_DASHBOARD_TOKEN is set")
            return
        given = request.args.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:]
        if not hmac.compare_digest(given.encode(), token.encode()):
            abort(401, "the dashboard needs its token: Authorization: Bearer <token> or ?token=")

    def deliveries_and_pulls() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Both read their jobs' outcomes in one go."""
        deliveries, pulls = store.recent_deliveries(), store.open_pulls()
        outcomes = job_outcomes(store.redis, [*(i for d in deliveries for i in d.get("jobs") or []),
                                              *(p["job"] for p in pulls[:PULLS_SHOWN] if p.get("job"))])
        return delivery_rows(deliveries, outcomes, links), pull_rows(pulls, outcomes, links)

    def data() -> dict[str, Any]:
        deliveries, pulls = deliveries_and_pulls()
        refused, waiting, since = store.recent_refusals(), queues(store), time.time() - RECENT_TROUBLE
        failed = sorted(({**f, "queue": q["name"]} for q in waiting for f in q["failures"]
                         if (f["ended"] or 0) >= since), key=lambda f: f["ended"], reverse=True)
        return {"environments": environments(), "deliveries": deliveries, "pulls": pulls, "refused": refused,
                "refused_recently": refused_groups(refused, since), "failed_recently": failed,
                "queues": waiting, "fleet": fleet(store), "generated_at": time.time()}

    @pages.errorhandler(redis.RedisError)
    def redis_down(_: redis.RedisError) -> Response | tuple[str, int]:
        if request.path.startswith("/api/"):
            return Response('{"error": "redis unreachable"}', status=503, mimetype="application/json")
        return render_template_string(PAGE_DOWN, refresh=REFRESH_SECONDS), 503

    @pages.get("/api/state")
    def state() -> Response:
        return jsonify(data())

    @pages.get("/api/environments")
    def api_environments() -> Response:
        return jsonify(environments())

    @pages.get("/api/deliveries")
    def api_deliveries() -> Response:
        return jsonify(deliveries_and_pulls()[0])

    @pages.get("/api/pulls")
    def api_pulls() -> Response:
        return jsonify(deliveries_and_pulls()[1])

    @pages.get("/api/refused")
    def api_refused() -> Response:
        return jsonify(store.recent_refusals())

    @pages.get("/api/queues")
    def api_queues() -> Response:
        return jsonify(queues(store))

    @pages.get("/api/fleet")
    def api_fleet() -> Response:
        return jsonify(fleet(store))

    @pages.get("/")
    def index() -> str:
        return render_template_string(PAGE, refresh=REFRESH_SECONDS, ago=_ago, utc=_utc, objects_shown=OBJECTS_SHOWN,
                                      recent=time.time() - RECENT_TROUBLE, links=links, **data())

    return pages


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = int(time.time() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def _utc(timestamp: float, form: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return time.strftime(form, time.gmtime(timestamp))


def _timestamp(moment: datetime | None) -> float | None:
    """Unix time of one of RQ's datetimes, which are UTC whether or not they say so."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _last_line(text: str) -> str:
    """The exception's own line from a traceback."""
    return text.strip().splitlines()[-1] if text.strip() else ""


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2rem 2rem;color:#1f2328;background:#fff}
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.35rem .6rem;border-bottom:1px solid #d0d7de}
th{background:#f6f8fa;font-weight:600}code{font:12px ui-monospace,monospace}a{color:#0969da}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}.muted,.utc{color:#656d76}.utc{font-size:12px}
#fleet-line{margin:.2rem 0 1rem}#fleet-line span+span:before{content:" · ";color:#656d76}
#attention{border:2px solid #cf222e;border-radius:6px;padding:.2rem 1rem 1rem;background:#fff8f8}
#attention h2{color:#cf222e;margin-top:.6rem}#attention h3{font-size:.95rem;margin:1rem 0 .3rem}
#attention table{margin-top:.4rem}tr.attention td{background:#fff8f8}
"""

PAGE_DOWN = """<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="{{ refresh }}">
<title>gitops-bot</title><h1>gitops-bot</h1><p class="bad">Redis is unreachable; this page retries.</p>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{{ refresh }}">
<title>gitops-bot</title><style>""" + STYLE + """</style></head><body>
{% macro when(ts) %}{% if ts %}{{ ago(ts) }} <span class="utc">({{ utc(ts) }})</span>{% else %}<span class="muted">never</span>{% endif %}{% endmacro %}
{% macro link(url, text) %}{% if url %}<a href="{{ url }}">{{ text }}</a>{% else %}{{ text }}{% endif %}{% endmacro %}
{% macro sha(forge, repo, value) %}{% if value %}{% set url = links.commit(forge, repo, value) %}{% if url %}<a href="{{ url }}"><code class="sha">{{ value[:7] }}</code></a>{% else %}<code class="sha">{{ value[:7] }}</code>{% endif %}{% endif %}{% endmacro %}
<h1>gitops-bot <span class="muted">{{ fleet.version }}</span></h1>
<p id="fleet-line" class="muted">
<span class="{{ 'ok' if fleet.workers else 'bad' }}">{{ fleet.workers | length }} worker{{ '' if fleet.workers | length == 1 else 's' }} alive</span>
<span class="ok">Redis {{ fleet.redis.version or 'up' }}{% if fleet.redis.memory %}, {{ fleet.redis.memory }} used{% endif %}</span>
<span>last reconcile {% if fleet.reconcile %}{{ when(fleet.reconcile.at) }}{% else %}never{% endif %}</span>
<span>generated {{ utc(generated_at) }}, refreshes every {{ refresh }} s</span></p>

{% set troubled = environments | selectattr('attention') | list %}
{% if troubled or failed_recently or refused_recently %}<section id="attention">
<h2>Needs attention</h2>
{% if failed_recently %}<div id="failed-jobs"><h3 class="bad">{{ failed_recently | length }} job{{ '' if failed_recently | length == 1 else 's' }} failed in the last 24 h</h3>
<table><tr><th>When</th><th>Job</th><th>Why</th></tr>
{% for f in failed_recently %}<tr><td>{{ when(f.ended) }}</td><td><code>{{ f.description }}</code></td><td class="bad">{{ f.error }}</td></tr>{% endfor %}
</table></div>{% endif %}
{% if refused_recently %}<div id="refused-recently"><h3 class="bad">Deliveries refused in the last 24 h</h3>
<table><tr><th>Forge</th><th>Answer</th><th>Why</th><th>How many</th><th>Last</th><th>From</th></tr>
{% for g in refused_recently %}<tr><td>{{ g.forge }}</td><td class="bad">{{ g.status }}</td><td>{{ g.reason }}</td><td>{{ g.count }}</td>
<td>{{ when(g.last.at) }}</td><td>{{ g.last.source or "" }}{% if g.last.forwarded_for %} <span class="muted">for {{ g.last.forwarded_for }}</span>{% endif %}</td></tr>{% endfor %}
</table></div>{% endif %}
{% for env in troubled %}{% set s = env.sync %}<div class="environment">
<h3>{{ env.repo }} <b>{{ env.environment }}</b>: <span class="bad">{{ env.attention | join('; ') }}</span></h3>
<div class="muted">checked {{ ago(s.checked) }} ({{ utc(s.checked) }}) against <code>{{ s.sha[:7] }}</code>{% if s.stale %}, not the deployed commit{% endif %}{% if s.state != 'error' %}; {{ s.compared }} objects compared{% endif %}</div>
{% if s.drifted %}<table class="drifted"><tr><th>Drifted object</th><th>What</th><th>Fields</th><th>Managed by</th></tr>
{% for d in s.drifted[:objects_shown] %}<tr><td><code>{{ d.key }}</code></td><td class="bad">{{ d.what }}</td><td>{% for f in d.fields or [] %}<code>{{ f }}</code>{{ ", " if not loop.last }}{% endfor %}</td><td>{{ (d.managers or []) | join(', ') }}</td></tr>{% endfor %}
</table>{% if s.drifted_count > s.drifted[:objects_shown] | length %}<div class="muted">and {{ s.drifted_count - s.drifted[:objects_shown] | length }} more</div>{% endif %}{% endif %}
{% if s.unhealthy %}<table class="unhealthy"><tr><th>Unhealthy object</th><th>Health</th><th>Why</th></tr>
{% for u in s.unhealthy[:objects_shown] %}<tr><td><code>{{ u.key }}</code></td><td class="{{ 'bad' if u.health == 'degraded' else 'warn' }}">{{ u.health }}</td><td>{{ u.message or "" }}</td></tr>{% endfor %}
</table>{% if s.unhealthy_count > s.unhealthy[:objects_shown] | length %}<div class="muted">and {{ s.unhealthy_count - s.unhealthy[:objects_shown] | length }} more</div>{% endif %}{% endif %}
</div>{% endfor %}
</section>{% endif %}

<h2>Environments</h2>
{% if environments %}<table id="environments">
<tr><th>Repository</th><th>Environment</th><th>Deployed</th><th>When</th><th>By</th><th>Result</th><th>Sync</th><th>Health</th><th>Lock</th><th>Pending</th></tr>
{% for env in environments %}{% set s = env.sync %}<tr class="{{ 'attention' if env.attention else '' }}">
<td>{{ link(links.repo(env.forge, env.repo), env.repo) }}</td><td><b>{{ env.environment }}</b></td>
<td>{% if env.deployed_sha %}{% if env.commit_url %}<a href="{{ env.commit_url }}"><code class="sha">{{ env.deployed_sha[:7] }}</code></a>{% else %}<code class="sha">{{ env.deployed_sha[:7] }}</code>{% endif %}{% else %}<span class="muted">none</span>{% endif %}</td>
<td>{{ when(env.deployed_at) }}</td><td>{{ env.deployed_by or "" }}</td>
<td class="{{ 'ok' if env.result == 'success' else 'bad' if env.result else 'muted' }}">{{ env.result or "" }}</td>
<td class="sync">{% if not s %}<span class="muted">not checked yet</span>{% else %}{% if s.state == 'error' %}<span class="bad">check failed: {{ s.error }}</span>{% elif s.state == 'in_sync' %}<span class="ok">in sync</span>, {{ s.compared }} objects{% elif s.healed %}<span class="warn">{{ s.drifted_count }} drifted, re-applied</span>{% else %}<span class="bad">{{ s.drifted_count }} drifted</span> of {{ s.compared }} objects{% endif %}
<div class="muted">checked {{ ago(s.checked) }} ({{ utc(s.checked) }})</div>{% endif %}</td>
<td class="health">{% if s and s.health_words %}<span class="{{ 'bad' if s.health.degraded else 'warn' if s.health.progressing else '' }}">{{ s.health_words }}</span>{% if s.unhealthy %}<div class="muted"><code>{{ s.unhealthy[0].key }}</code> {{ s.unhealthy[0].health }}{% if s.unhealthy[0].message %}: {{ s.unhealthy[0].message }}{% endif %}</div>{% endif %}{% endif %}</td>
<td class="lock">{% if env.lock %}<span class="warn">locked by {{ env.lock.actor }}{% if env.lock.reason %}: {{ env.lock.reason }}{% endif %}</span>{% endif %}</td>
<td>{% if env.pending_sha %}{{ sha(env.forge, env.repo, env.pending_sha) }}{% endif %}</td>
</tr>{% endfor %}</table>{% else %}<p class="muted">No environment has been deployed yet.</p>{% endif %}

<h2>Pull requests</h2>
{% if pulls %}<table id="pulls">
<tr><th>Pull request</th><th>Head</th><th>Last diff</th><th>Queued</th></tr>
{% for p in pulls %}<tr><td>{{ link(p.url, p.repo ~ '#' ~ p.number) }} {{ p.title }}<div class="muted">by {{ p.author or "?" }} into {{ p.base_ref }}</div></td>
<td>{{ sha(p.forge, p.repo, p.head_sha) }}</td>
<td class="{{ 'ok' if p.diff.ok else 'bad' if p.diff.ok == false else 'muted' }}">{{ p.diff.words }}</td><td>{{ when(p.at) }}</td></tr>{% endfor %}
</table>{% else %}<p class="muted">No open pull request has been diffed yet.</p>{% endif %}

<h2>Recent deliveries</h2>
{% if deliveries %}<table id="deliveries">
<tr><th>When</th><th>Forge</th><th>Event</th><th>Repository</th><th>What the bot did</th><th>Delivery</th></tr>
{% for d in deliveries[:30] %}<tr><td>{{ when(d.at) }}</td><td>{{ d.forge }}</td><td>{{ d.event }}</td>
<td>{{ link(d.repo_url, d.repo or "") }}{% if d.pull %} {{ link(d.pull_url, '#' ~ d.pull) }}{% endif %}</td>
<td class="outcome">{% for j in d.jobs %}<div class="{{ 'ok' if j.ok else 'bad' if j.ok == false else 'muted' }}">{{ j.words }}</div>{% else %}{{ d.outcome }}{% endfor %}</td>
<td><code class="muted">{{ d.delivery }}</code></td></tr>{% endfor %}
</table>{% else %}<p class="muted">No deliveries yet.</p>{% endif %}

<h2>Refused deliveries</h2>
{% if refused %}<table id="refused">
<tr><th>When</th><th>Forge</th><th>Answer</th><th>Why</th><th>From</th><th>Event</th><th>Delivery</th></tr>
{% for r in refused[:30] %}<tr><td>{{ when(r.at) }}</td><td>{{ r.forge }}</td><td class="bad">{{ r.status }}</td><td>{{ r.reason }}</td>
<td>{{ r.source or "" }}{% if r.forwarded_for %} <span class="muted">for {{ r.forwarded_for }}</span>{% endif %}</td>
<td>{{ r.event or "" }}</td><td><code class="muted">{{ r.delivery or "" }}</code></td></tr>{% endfor %}
</table>{% else %}<p class="muted">No delivery has been refused.</p>{% endif %}

<h2>Recent deploys</h2>
{% set deploys = environments | map(attribute='history') | sum(start=[]) | sort(attribute='started', reverse=True) %}
{% if deploys %}<table id="deploys">
<tr><th>When</th><th>Environment</th><th>Commit</th><th>By</th><th>Result</th><th>Created / changed / deleted / unchanged</th><th>Took</th></tr>
{% for d in deploys[:20] %}<tr><td>{{ when(d.started) }}</td><td>{{ d.environment }}</td><td>{{ sha(d.forge, d.repo, d.sha) }}</td>
<td>{{ d.actor or "" }}</td><td class="{{ 'ok' if d.result == 'success' else 'bad' }}">{% if d.heal %}drift re-applied: {% endif %}{{ d.result }}{% if d.error %}: {{ d.error }}{% endif %}</td>
<td>{{ d.created }} / {{ d.changed }} / {{ d.deleted }} / {{ d.unchanged }}</td><td>{{ '%.1f' | format(d.duration or 0) }} s</td></tr>{% endfor %}
</table>{% else %}<p class="muted">No deploys yet.</p>{% endif %}

<h2>Queues</h2>
<table id="queues"><tr><th>Queue</th><th>Waiting</th><th>Running</th><th>Failed</th><th>Latest failures</th></tr>
{% for q in queues %}<tr><td>{{ q.name }}</td><td>{{ q.queued }}</td><td>{{ q.running }}</td>
<td class="{{ 'bad' if q.failed else '' }}">{{ q.failed }}</td>
<td>{% for f in q.failures %}<div><code>{{ f.description }}</code>: {{ f.error }} <span class="utc">{{ when(f.ended) }}</span></div>{% endfor %}</td></tr>{% endfor %}
</table>

<h2>Fleet</h2>
<table id="workers"><tr><th>Worker</th><th>State</th><th>Queues</th><th>Last heartbeat</th><th>Started</th><th>Jobs done / failed</th></tr>
{% for w in fleet.workers %}<tr><td><code>{{ w.name }}</code><div class="muted">{{ w.hostname }} pid {{ w.pid }}</div></td><td>{{ w.state }}</td>
<td>{{ w.queues | join(', ') }}</td><td>{{ when(w.last_heartbeat) }}</td><td>{{ when(w.started) }}</td><td>{{ w.done }} / {{ w.failed }}</td></tr>
{% else %}<tr><td colspan="6" class="bad">No worker is alive: queued jobs wait until one starts (gitops-bot worker).</td></tr>{% endfor %}
</table>
<p id="redis">Redis {{ fleet.redis.version or "" }} is up{% if fleet.redis.memory %}, using {{ fleet.redis.memory }}{% if fleet.redis.max_memory %} of {{ fleet.redis.max_memory }}{% endif %}{% endif %}{% if fleet.redis.clients %}, {{ fleet.redis.clients }} clients{% endif %}{% if fleet.redis.uptime %}, up {{ (fleet.redis.uptime // 3600) }} h{% endif %}.</p>
<div id="reconcile">{% set r = fleet.reconcile %}{% if r %}<p>Last reconcile {{ when(r.at) }}: {{ r.words }}.</p>
{% for key, title in (('diffs', 'Diffs queued'), ('deploys', 'Deploys queued'), ('checks', 'Sync checks queued'), ('not_deployed', 'Not deployed'), ('errors', 'Errors')) %}{% if r[key] %}<div class="{{ 'bad' if key == 'errors' else '' }}"><b>{{ title }}:</b> {{ r[key] | join('; ') }}</div>{% endif %}{% endfor %}
{% else %}<p class="muted">No reconcile has run yet.</p>{% endif %}</div>
<p class="muted">gitops-bot {{ fleet.version }}</p>
</body></html>"""

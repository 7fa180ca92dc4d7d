"""The read-only dashboard at `/` and its data at `/api/...`: server-rendered, refreshing itself."""

from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import asdict
from typing import Any, Callable

import redis
from flask import Blueprint, Response, abort, jsonify, render_template_string, request
from rq.job import Job

from bot.environments import EnvRef, Environments
from bot.queue import Store

REFRESH_SECONDS = 10
FAILURES_SHOWN = 10


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
                                 "error": error.strip().splitlines()[-1] if error.strip() else ""})
        out.append({"name": queue.name, "queued": queue.count, "running": queue.started_job_registry.count,
                    "failed": queue.failed_job_registry.count, "failures": failures})
    return out


def environment_rows(envs: Environments, commit_url: Callable[[EnvRef, str], str | None]) -> list[dict[str, Any]]:
    """Each known environment: what is deployed, by whom, its lock, what is pending, recent deploys."""
    rows = []
    for ref in envs.known():
        status, history = envs.status(ref), envs.history(ref, limit=10)
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
            "history": [{**asdict(r), "environment": ref.name, "repo": ref.repo} for r in history],
        })
    return rows


def blueprint(store: Store, token: str | None, environments: Callable[[], list[dict[str, Any]]]) -> Blueprint:
    """`environments` gives each environment's state, most recent deploys included."""
    pages = Blueprint("dashboard", __name__)

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

    def data() -> dict[str, Any]:
        return {"environments": environments(), "deliveries": store.recent_deliveries(),
                "queues": queues(store), "generated_at": time.time()}

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
        return jsonify(store.recent_deliveries())

    @pages.get("/api/queues")
    def api_queues() -> Response:
        return jsonify(queues(store))

    @pages.get("/")
    def index() -> str:
        return render_template_string(PAGE, refresh=REFRESH_SECONDS, ago=_ago, **data())

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


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #d0d7de}
th{background:#f6f8fa;font-weight:600}code{font:12px ui-monospace,monospace}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}.muted{color:#656d76}
"""

PAGE_DOWN = """<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="{{ refresh }}">
<title>gitops-bot</title><h1>gitops-bot</h1><p class="bad">Redis is unreachable; this page retries.</p>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{{ refresh }}">
<title>gitops-bot</title><style>""" + STYLE + """</style></head><body>
<h1>gitops-bot</h1>
<p class="muted">Refreshes every {{ refresh }} s.</p>

<h2>Environments</h2>
{% if environments %}<table id="environments">
<tr><th>Repository</th><th>Environment</th><th>Deployed</th><th>When</th><th>By</th><th>Result</th><th>Lock</th><th>Pending</th></tr>
{% for env in environments %}<tr>
<td>{{ env.repo }}</td><td><b>{{ env.environment }}</b></td>
<td>{% if env.deployed_sha %}{% if env.commit_url %}<a href="{{ env.commit_url }}"><code class="sha">{{ env.deployed_sha[:7] }}</code></a>{% else %}<code class="sha">{{ env.deployed_sha[:7] }}</code>{% endif %}{% else %}<span class="muted">none</span>{% endif %}</td>
<td>{{ ago(env.deployed_at) }}</td><td>{{ env.deployed_by or "" }}</td>
<td class="{{ 'ok' if env.result == 'success' else 'bad' if env.result else 'muted' }}">{{ env.result or "" }}</td>
<td class="lock">{% if env.lock %}<span class="warn">locked by {{ env.lock.actor }}{% if env.lock.reason %}: {{ env.lock.reason }}{% endif %}</span>{% endif %}</td>
<td>{% if env.pending_sha %}<code>{{ env.pending_sha[:7] }}</code>{% endif %}</td>
</tr>{% endfor %}</table>{% else %}<p class="muted">No environment has been deployed yet.</p>{% endif %}

<h2>Recent deploys</h2>
{% set deploys = environments | map(attribute='history') | sum(start=[]) | sort(attribute='started', reverse=True) %}
{% if deploys %}<table id="deploys">
<tr><th>When</th><th>Environment</th><th>Commit</th><th>By</th><th>Result</th><th>Created / changed / deleted / unchanged</th><th>Took</th></tr>
{% for d in deploys[:20] %}<tr><td>{{ ago(d.started) }}</td><td>{{ d.environment }}</td><td><code>{{ d.sha[:7] }}</code></td>
<td>{{ d.actor or "" }}</td><td class="{{ 'ok' if d.result == 'success' else 'bad' }}">{{ d.result }}{% if d.error %}: {{ d.error }}{% endif %}</td>
<td>{{ d.created }} / {{ d.changed }} / {{ d.deleted }} / {{ d.unchanged }}</td><td>{{ '%.1f' | format(d.duration or 0) }} s</td></tr>{% endfor %}
</table>{% else %}<p class="muted">No deploys yet.</p>{% endif %}

<h2>Recent deliveries</h2>
{% if deliveries %}<table id="deliveries">
<tr><th>When</th><th>Forge</th><th>Event</th><th>Repository</th><th>What the bot did</th><th>Delivery</th></tr>
{% for d in deliveries[:30] %}<tr><td>{{ ago(d.at) }}</td><td>{{ d.forge }}</td><td>{{ d.event }}</td><td>{{ d.repo or "" }}</td>
<td>{{ d.outcome }}</td><td><code class="muted">{{ d.delivery }}</code></td></tr>{% endfor %}
</table>{% else %}<p class="muted">No deliveries yet.</p>{% endif %}

<h2>Queues</h2>
<table id="queues"><tr><th>Queue</th><th>Waiting</th><th>Running</th><th>Failed</th><th>Latest failures</th></tr>
{% for q in queues %}<tr><td>{{ q.name }}</td><td>{{ q.queued }}</td><td>{{ q.running }}</td>
<td class="{{ 'bad' if q.failed else '' }}">{{ q.failed }}</td>
<td>{% for f in q.failures %}<div><code>{{ f.description }}</code>: {{ f.error }}</div>{% endfor %}</td></tr>{% endfor %}
</table>
</body></html>"""

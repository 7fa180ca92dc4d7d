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

from bot.deploy_report import health_summary, unhealthy_total
from bot.environments import EnvRef, Environments, Record, Sync
from bot.queue import Store

REFRESH_SECONDS = 10
FAILURES_SHOWN = 10
OBJECTS_SHOWN = 10
"""Drifted, and unhealthy, objects the page lists per environment; the JSON has all the check kept."""


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
            "history": [{**asdict(r), "environment": ref.name, "repo": ref.repo} for r in history],
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
        return render_template_string(PAGE, refresh=REFRESH_SECONDS, ago=_ago, utc=_utc, objects_shown=OBJECTS_SHOWN,
                                      **data())

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


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #d0d7de}
th{background:#f6f8fa;font-weight:600}code{font:12px ui-monospace,monospace}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}.muted{color:#656d76}
#attention{border:2px solid #cf222e;border-radius:6px;padding:.2rem 1rem 1rem;background:#fff8f8}
#attention h2{color:#cf222e;margin-top:.6rem}#attention h3{font-size:.95rem;margin:1rem 0 .3rem}
#attention table{margin-top:.4rem}tr.attention td{background:#fff8f8}
"""

PAGE_DOWN = """<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="{{ refresh }}">
<title>gitops-bot</title><h1>gitops-bot</h1><p class="bad">Redis is unreachable; this page retries.</p>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{{ refresh }}">
<title>gitops-bot</title><style>""" + STYLE + """</style></head><body>
<h1>gitops-bot</h1>
<p class="muted">Refreshes every {{ refresh }} s.</p>

{% set troubled = environments | selectattr('attention') | list %}
{% if troubled %}<section id="attention">
<h2>Needs attention</h2>
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
<td>{{ env.repo }}</td><td><b>{{ env.environment }}</b></td>
<td>{% if env.deployed_sha %}{% if env.commit_url %}<a href="{{ env.commit_url }}"><code class="sha">{{ env.deployed_sha[:7] }}</code></a>{% else %}<code class="sha">{{ env.deployed_sha[:7] }}</code>{% endif %}{% else %}<span class="muted">none</span>{% endif %}</td>
<td>{{ ago(env.deployed_at) }}</td><td>{{ env.deployed_by or "" }}</td>
<td class="{{ 'ok' if env.result == 'success' else 'bad' if env.result else 'muted' }}">{{ env.result or "" }}</td>
<td class="sync">{% if not s %}<span class="muted">not checked yet</span>{% else %}{% if s.state == 'error' %}<span class="bad">check failed: {{ s.error }}</span>{% elif s.state == 'in_sync' %}<span class="ok">in sync</span>, {{ s.compared }} objects{% elif s.healed %}<span class="warn">{{ s.drifted_count }} drifted, re-applied</span>{% else %}<span class="bad">{{ s.drifted_count }} drifted</span> of {{ s.compared }} objects{% endif %}
<div class="muted">checked {{ ago(s.checked) }} ({{ utc(s.checked) }})</div>{% endif %}</td>
<td class="health">{% if s and s.health_words %}<span class="{{ 'bad' if s.health.degraded else 'warn' if s.health.progressing else '' }}">{{ s.health_words }}</span>{% if s.unhealthy %}<div class="muted"><code>{{ s.unhealthy[0].key }}</code> {{ s.unhealthy[0].health }}{% if s.unhealthy[0].message %}: {{ s.unhealthy[0].message }}{% endif %}</div>{% endif %}{% endif %}</td>
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

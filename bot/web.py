"""The web process: verify, parse, de-duplicate and enqueue webhooks; health endpoints."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

import orjson
import redis
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from bot.config import ServerConfig, load_server_config
from bot import dashboard
from bot.environments import Environments
from bot.forges import web_urls, webhook_parser
from bot.forges.base import WebhookError
from bot.events import CommentEvent, Event, PullRequestEvent, event_repo
from bot.intake import plan
from bot.metrics import WEBHOOKS, FleetCollector, FleetMetrics, exposition
from bot.queue import Store
from bot.settings import Settings

MAX_BODY = 25 * 1024 * 1024
REFUSAL_HEADERS = {"github": {"delivery": "HTTP_X_GITHUB_DELIVERY", "event": "HTTP_X_GITHUB_EVENT"},
                   "gitlab": {"delivery": "HTTP_X_GITLAB_EVENT_UUID", "event": "HTTP_X_GITLAB_EVENT"}}
"""The headers of a refused delivery kept to name it: the forge's delivery id and event, as sent."""
REFUSAL_FIELD = 100
"""Characters kept of each, as an unverified sender wrote it."""
log = logging.getLogger("gitops_bot.web")
Answer = tuple[int, dict[str, Any]]
"""A webhook's answer: status code and JSON body."""


def create_app(settings: Settings | None = None, server: ServerConfig | None = None,
               connection: redis.Redis | None = None) -> Flask:
    settings = settings or Settings.from_env()
    server = server or load_server_config(settings.config_path)
    if connection is None:
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set (only `gitops-bot up` starts an embedded Redis)")
        connection = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    store = Store(connection, settings.name)
    forge_web_urls = web_urls(settings)
    envs = Environments(connection, settings.name)
    fleet = FleetCollector(FleetMetrics(connection, store.prefix), store.queues(), envs)

    app = Flask(__name__)
    # One byte over: a chunked body has no length to refuse up front, and werkzeug cuts it off
    # silently at the limit, so reading one byte more is how its excess shows.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1

    def answer(code: int, **body: Any) -> Response:
        return Response(orjson.dumps(body), status=code, mimetype="application/json")

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        if err.code == 413:
            return answer(413, **too_large()[1])
        return answer(err.code or 500, error=err.description or err.name)

    def too_large() -> Answer:
        return 413, {"error": f"body is over {MAX_BODY // (1024 * 1024)} MiB"}

    @app.route("/webhooks/<forge>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def webhook(forge: str) -> Response:
        if request.method != "POST" and webhook_parser(forge) is not None:
            return answer(405, error="webhooks are delivered with POST")
        code, body = receive(forge, request.environ)
        return answer(code, **body)

    parsers = {forge: webhook_parser(forge) for forge in REFUSAL_HEADERS}  # looked up once, not per delivery

    def receive(forge: str, environ: dict[str, Any]) -> Answer:
        """One delivery to /webhooks/<forge>: verified, parsed, de-duplicated and queued; its answer."""
        parser = parsers.get(forge)
        if parser is None:
            return 404, {"error": f"no webhook endpoint for {forge!r}"}
        try:  # as Flask's request.get_data() reads it, without the request around it
            body: bytes | None = get_input_stream(environ, max_content_length=MAX_BODY + 1).read()
        except RequestEntityTooLarge:
            body = None
        if body is None or len(body) > MAX_BODY:
            return refuse(forge, environ, *too_large())
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")}
        headers.update((key.replace("_", "-").lower(), environ[key]) for key in ("CONTENT_TYPE", "CONTENT_LENGTH")
                       if environ.get(key))
        try:
            delivery = parser(headers, body, settings)
        except WebhookError as err:
            return refuse(forge, environ, err.status, {"error": err.message})
        decision = plan(delivery.event, server, forge_web_urls)
        context = {"forge": forge, "delivery": delivery.delivery_id, "event": delivery.event_name}
        repo = event_repo(delivery.event)
        entry = {**context, "repo": repo.full_name if repo else None, "pull": _pull_number(delivery.event),
                 "at": time.time()}
        outcome, response = _act(decision, delivery, repo, entry, context)
        WEBHOOKS.labels(forge, delivery.event_name, outcome).inc()
        return response

    def refuse(forge: str, environ: dict[str, Any], code: int, body: dict[str, Any]) -> Answer:
        """Count and log a refused delivery, and keep it for the dashboard: the reason, the sender's
        address and the headers that name the delivery, never its body or its signature."""
        # Not the event header: unverified senders must not mint label values.
        WEBHOOKS.labels(forge, "unverified", f"refused_{code}").inc()
        log.info("webhook refused", extra={"forge": forge, "status": code, "reason": body["error"]})
        named = {name: str(environ.get(key, ""))[:REFUSAL_FIELD] for name, key in REFUSAL_HEADERS[forge].items()}
        try:
            store.refuse({"forge": forge, "status": code, "reason": body["error"], "at": time.time(),
                          "source": environ.get("REMOTE_ADDR"),
                          "forwarded_for": str(environ.get("HTTP_X_FORWARDED_FOR", ""))[:REFUSAL_FIELD] or None,
                          **{name: value or None for name, value in named.items()}})
        except redis.RedisError:
            pass  # the answer does not depend on the log of refusals
        return code, body

    def _act(decision, delivery, repo, entry, context) -> tuple[str, Answer]:  # type: ignore[no-untyped-def]
        if not decision.jobs and not decision.cancel:
            log.info("webhook ignored", extra={**context, "reason": decision.ignored})
            try:
                store.note({**entry, "outcome": decision.ignored})
            except redis.RedisError:
                pass  # the answer does not depend on the log of deliveries
            return "ignored", (200, {"ignored": decision.ignored})
        try:
            job_ids = store.accept(repo, delivery.delivery_id, decision, entry)
        except redis.RedisError as err:
            log.warning("queue unreachable", extra={**context, "error": type(err).__name__})
            return "unavailable", (503, {"error": "the queue is unreachable; redeliver later"})
        if job_ids is None:
            log.info("webhook duplicate", extra=context)
            return "duplicate", (200, {"duplicate": True})
        if not job_ids:
            log.info("webhook recorded", extra={**context, "reason": decision.ignored})
            return "ignored", (200, {"ignored": decision.ignored})
        log.info("webhook queued", extra={**context, "jobs": job_ids})
        return "queued", (202, {"queued": job_ids})

    flask_wsgi = app.wsgi_app

    def deliveries_first(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """POSTs to /webhooks/<forge> go straight to `receive`, without Flask's request context,
        routing and response objects (intake's hot path); their answers are Flask's to the byte.
        Everything else goes to Flask."""
        path = environ.get("PATH_INFO", "")
        forge = path[len("/webhooks/"):] if path.startswith("/webhooks/") else ""
        if environ.get("REQUEST_METHOD") != "POST" or not forge or "/" in forge:
            return flask_wsgi(environ, start_response)
        try:
            code, body = receive(forge, environ)
        except Exception:  # as Flask answers and logs what the app did not expect
            log.exception("webhook failed", extra={"forge": forge})
            code, body = 500, {"error": InternalServerError.description}
        payload = orjson.dumps(body)
        start_response(f"{code} {HTTP_STATUS_CODES[code].upper()}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    app.wsgi_app = deliveries_first  # type: ignore[method-assign]

    @app.get("/healthz")
    def healthz() -> Response:
        return answer(200, status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            store.redis.ping()
        except redis.RedisError:
            return answer(503, status="redis unreachable")
        return answer(200, status="ready")

    if not settings.dashboard_token:
        log.warning("GITOPS_BOT_DASHBOARD_TOKEN is not set: the dashboard and /api answer this machine only")
    links = dashboard.Links(forge_web_urls)
    app.register_blueprint(dashboard.blueprint(store, settings.dashboard_token, lambda: dashboard.environment_rows(
        envs, lambda ref, sha: links.commit(ref.forge, ref.repo, sha)), links))

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(fleet), mimetype="text/plain; version=0.0.4")

    return app


def _pull_number(event: Event) -> int | None:
    """The pull request an event concerns, for the dashboard's link to it."""
    if isinstance(event, PullRequestEvent):
        return event.pull.number
    if isinstance(event, CommentEvent) and event.on_pull_request:
        return event.number
    return None

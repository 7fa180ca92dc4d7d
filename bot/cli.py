"""The `gitops-bot` command."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bot.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gitops-bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="the webhook and dashboard web server (gunicorn)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    serve.add_argument("--threads", type=int, default=int(os.environ.get("GITOPS_BOT_WEB_THREADS", "4")),
                       help="threads per worker; above 1, connections are kept alive (gthread)")

    worker = commands.add_parser("worker", help="an RQ worker on the bot's queues")
    worker.add_argument("--burst", action="store_true", help="drain the queues, then exit")

    up = commands.add_parser("up", help="web + worker in one command, with an embedded Redis")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))

    diff = commands.add_parser("diff", help="the diff a pull request would get, between two revisions")
    diff.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    diff.add_argument("--env", help="only this environment")
    diff.add_argument("--format", choices=("markdown", "text", "json"), default="text")
    diff.add_argument("base", help="base revision")
    diff.add_argument("head", nargs="?", help="head revision (default: the working tree)")

    check = commands.add_parser("check-config", help="validate the server and repo configs")
    check.add_argument("--server", help="server config file (default: $GITOPS_BOT_CONFIG)")
    check.add_argument("--repo", help="repository directory holding .gitops.yaml")

    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command in ("serve", "worker"):
        from bot import logs
        logs.setup(settings.secrets())
    handler = {"serve": cmd_serve, "worker": cmd_worker, "up": cmd_up, "diff": cmd_diff,
               "check-config": cmd_check_config}[args.command]
    return handler(args, settings)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    # gunicorn's workers are processes: their webhook counters meet in this directory.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gitops-bot-metrics-"))
    from bot.web import create_app

    class JsonLogger(Logger):
        """gunicorn's own messages through the bot's JSON handler."""

        def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                logger.handlers[:] = []
                logger.propagate = True

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("logger_class", JsonLogger)

        def load(self):  # type: ignore[no-untyped-def]
            return create_app(settings)

    Server().run()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import redis
    from rq import Worker

    from bot.queue import Store

    if not settings.redis_url:
        print("gitops-bot worker: REDIS_URL is not set", file=sys.stderr)
        return 2
    store = Store(redis.Redis.from_url(settings.redis_url), settings.name)
    worker = Worker(store.queues(), connection=store.redis)
    worker.work(burst=args.burst, with_scheduler=not args.burst, logging_level="INFO")
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start Redis (unless REDIS_URL is set), the web server and a worker; stop all on Ctrl-C."""
    from bot.embedded import RedisServer

    env = dict(os.environ)
    redis_server = None
    if not settings.redis_url:
        redis_server = RedisServer(settings.data_dir / "redis").start()
        env["REDIS_URL"] = redis_server.url
        print(f"gitops-bot: embedded Redis at {redis_server.url} (data in {redis_server.directory})")
    command = [sys.executable, "-m", "bot"]
    # Own sessions: Ctrl-C reaches only this process, which then stops the children in order.
    children = [
        subprocess.Popen([*command, "serve", "--host", args.host, "--port", str(args.port), "--workers", "1"],
                         env=env, start_new_session=True),
        subprocess.Popen([*command, "worker"], env=env, start_new_session=True),
    ]
    print(f"gitops-bot: webhooks at http://{args.host}:{args.port}/webhooks/github; Ctrl-C stops")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis_server:
            redis_server.stop()
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stopping else 0


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 with no changes, 1 with changes, 2 on error, as `kubectl diff` does."""
    import git

    from bot import report
    from bot.gitrepo import CommitSnapshot, Mirror, WorkTreeSnapshot
    from bot.pipeline import diff_snapshots

    try:
        repo = git.Repo(args.repo, search_parent_directories=True)
        mirror = Mirror(Path(repo.git_dir), repo)
        base_sha = repo.commit(args.base).hexsha
        head_sha = repo.commit(args.head).hexsha if args.head else None
    except (git.GitError, ValueError) as err:
        print(f"gitops-bot diff: {err}", file=sys.stderr)
        return 2
    base = CommitSnapshot(mirror, base_sha)
    head = CommitSnapshot(mirror, head_sha) if head_sha else WorkTreeSnapshot(Path(repo.working_tree_dir))
    changed = mirror.changed_paths(base_sha, head_sha) if head_sha else None
    default_branch = repo.active_branch.name if not repo.head.is_detached else "main"
    result = diff_snapshots(base, head, config_snapshot=base, base_sha=base_sha, head_sha=head_sha or "worktree",
                            branch=None, default_branch=default_branch, changed=changed, env_name=args.env)
    if args.format == "json":
        sys.stdout.write(report.as_json(result))
    elif args.format == "markdown":
        sys.stdout.write("\n".join(report.markdown(result, settings.name, limit=sys.maxsize)))
    else:
        sys.stdout.write(report.text(result, colour=sys.stdout.isatty()))
    if result.failed:
        return 2
    return 1 if result.counts.total else 0


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from bot.config import ConfigError, REPO_CONFIG_FILE, load_server_config, parse_repo_config

    errors = 0
    clusters = None
    server_path = Path(args.server) if args.server else settings.config_path
    try:
        server = load_server_config(server_path)
        clusters = set(server.clusters)
        print(f"{server_path}: ok ({len(server.repos)} repository patterns, {len(server.clusters)} clusters)")
    except ConfigError as err:
        print(err, file=sys.stderr)
        errors += 1
    if args.repo:
        path = Path(args.repo) / REPO_CONFIG_FILE
        if not path.exists():
            print(f"{path}: absent; the implicit `default` environment applies")
        else:
            try:
                config = parse_repo_config(path.read_bytes(), str(path), clusters=clusters)
                print(f"{path}: ok ({', '.join(e.name for e in config.environments)})")
            except ConfigError as err:
                print(err, file=sys.stderr)
                errors += 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

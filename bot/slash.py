"""Slash commands in a pull request thread: what each one asks for, decided purely from the facts
read just before it; one executor that carries it out; one reply that answers the comment."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping

import redis

from bot import runtime
from bot.commands import GUARDED, MAX_COMMANDS, USAGE, Command, authorize, parse, synopsis
from bot.config import REPO_CONFIG_FILE, ConfigError, Environment, RepoConfig
from bot.deploy_report import health_summary, unhealthy_total
from bot.environments import HISTORY_LIMIT, EnvRef, Environments, Hold, Record, Status, Sync
from bot.events import PullRequest, PullRequestEvent, Repo
from bot.forges.base import APPROVER_LEVEL, Comment, Forge, MergeRefused, PullState, Reaction
from bot.gitrepo import GitError
from bot.intake import deploy_job, diff_job
from bot.logs import Masker
from bot.pipeline import read_repo_config
from bot.queue import JobSpec
from bot.report import fit
from bot.rollback import Identity, RollbackError, roll_back

log = logging.getLogger("gitops_bot.slash")
Result = Literal["ok", "refused", "failed", "invalid"]
ICONS = {"refused": "⛔", "failed": "❌", "invalid": "❓"}


# -- deciding (pure) --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    result: Result
    text: str | None = None
    """This command's section of the reply; None when the reactions say it all."""

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@dataclass(frozen=True)
class EnvState:
    status: Status
    history: tuple[Record, ...] = ()
    """Finished deploys, newest first (as many as the command needs)."""
    sync: Sync | None = None
    """The last check of the cluster against the deployed commit; None until the first."""


@dataclass(frozen=True)
class Facts:
    """What one decision may look at. Read afresh before each command, so each sees what the last did."""

    author: str
    prefix: str
    pull: PullState | None = None
    config: RepoConfig | None = None
    """The repo config of the pull request's base branch, never its head."""
    config_error: str | None = None
    held: str | None = None
    """The author's permission on the forge; looked up only when a guarded command is present."""
    envs: Mapping[str, EnvState] = field(default_factory=dict)
    merged: RepoConfig | None = None
    """The repo config the merge would bring, when the pull request changes it (read for `/deploy`)."""
    merged_error: str | None = None
    """Why the pull request's `.gitops.yaml` cannot be read, if it cannot."""
    governing: RepoConfig | None = None
    """The default branch's repo config, which deploys read, when the base is another branch."""


@dataclass(frozen=True)
class Recompute:
    base_ref: str
    head_sha: str


@dataclass(frozen=True)
class Merge:
    env: Environment
    head_sha: str
    deploys: tuple[str, ...]
    """Every environment the merge deploys: all those of the branch with a cluster."""


@dataclass(frozen=True)
class Rollback:
    env: Environment
    target: str


@dataclass(frozen=True)
class Lock:
    env: Environment
    reason: str
    replaces: Hold | None


@dataclass(frozen=True)
class Unlock:
    env: Environment


Action = Recompute | Merge | Rollback | Lock | Unlock


@dataclass(frozen=True)
class Verdict:
    """What to do about one command: answer it, or act. `reason` is what the log records."""

    reason: str
    then: Outcome | Action


def decide(command: Command, facts: Facts) -> Verdict:
    p = facts.prefix
    if not command.known:
        return _answer("invalid", f"`{p}{command.name}` is not a command I know; `{p}help` lists those I do.")
    problem = command.problem(p)
    if problem:
        return _answer("invalid", f"I could not read this: {problem}.")
    if command.name == "help":
        return _open(command, facts, Outcome("ok", help_text(facts)))
    pull = facts.pull
    assert pull is not None  # read for every known command
    if command.name == "diff":
        if pull.state != "open":
            return _answer("refused", f"This pull request is {pull.state}: there is no diff to recompute.")
        return _open(command, facts, Recompute(pull.base_ref, pull.head_sha))
    if facts.config is None:
        return _answer("failed", f"The repo config on `{pull.base_ref}` could not be read: {facts.config_error}")
    if command.name == "status":
        return _open(command, facts, Outcome("ok", status_table(facts.config, facts.envs)))
    if command.name == "deploy":
        return _deploy(command, facts, facts.config, pull)
    return _on_environment(command, facts, facts.config)


def _open(command: Command, facts: Facts, then: Outcome | Action) -> Verdict:
    return Verdict(authorize(command.name, None, "none", facts.prefix).reason, then)


def _on_environment(command: Command, facts: Facts, config: RepoConfig) -> Verdict:
    """/lock, /unlock and /rollback, on the environment they name."""
    env = config.get(command.args[0])
    if env is None:
        return _no_such_environment(command.args[0], config)
    refusal = _guard(command.name, env, facts)
    if refusal:
        return refusal
    reason = authorize(command.name, env, facts.held or "none", facts.prefix).reason
    state = facts.envs[env.name]
    if command.name == "lock":
        return Verdict(reason, Lock(env, " ".join(command.args[1:]), state.status.hold))
    if command.name == "unlock":
        if state.status.hold is None and state.status.pending is None:
            return Verdict(reason, Outcome("ok", f"`{env.name}` is not locked; there is nothing to release."))
        return Verdict(reason, Unlock(env))
    return _rollback(command, env, state, reason, facts.prefix)


def _answer(result: Result, text: str) -> Verdict:
    return Verdict(text, Outcome(result, f"{ICONS[result]} {text}"))


def _guard(command: str, env: Environment, facts: Facts) -> Verdict | None:
    """Why a guarded command may not run on `env`, if it may not: the permission, then a cluster."""
    decision = authorize(command, env, facts.held or "none", facts.prefix)
    if not decision.allowed:
        return _answer("refused", f"{decision.reason}.")
    if not env.cluster:
        return _answer("refused", f"`{env.name}` has no cluster: it only gets diffs, so nothing deploys to it.")
    return None


def _no_such_environment(name: str, config: RepoConfig) -> Verdict:
    return _answer("refused", f"There is no environment `{name}`; this repository has "
                              f"{_names(e.name for e in config.environments)}.")


def _deploy(command: Command, facts: Facts, config: RepoConfig, pull: PullState) -> Verdict:
    p = facts.prefix
    if command.args:
        env = config.get(command.args[0])
        if env is None:
            return _no_such_environment(command.args[0], config)
    else:
        candidates = [e for e in config.for_branch(pull.base_ref) if e.cluster]
        if len(candidates) != 1:
            which = (f"deploys {_names(e.name for e in candidates)}: name one, as in "
                     f"`{p}deploy {candidates[0].name}`" if candidates else "deploys no environment")
            return _answer("refused", f"`{pull.base_ref}`, this pull request's base, {which}.")
        env = candidates[0]
    # The merge deploys every environment of the branch, so the author must be allowed all of them.
    deploys = [env, *(e for e in config.for_branch(env.branch) if e.cluster and e != env)]
    if facts.merged_error:
        return _answer("refused", f"What this pull request's merge would deploy is unknown, as its `.gitops.yaml` "
                                  f"cannot be read: {facts.merged_error}")
    governed = [e for e in facts.governing.for_branch(env.branch) if e.cluster] if facts.governing else []
    for each in dict.fromkeys([*deploys, *_redefined(config, facts.merged, env.branch), *governed]):
        refusal = _guard("deploy", each, facts)
        if refusal:
            return refusal
    if pull.state != "open":
        return _answer("refused", f"This pull request is {pull.state} already.")
    if env.branch != pull.base_ref:
        return _answer("refused", f"`{env.name}` deploys from `{env.branch}`, but this pull request merges into "
                                  f"`{pull.base_ref}`.")
    for each in deploys:
        hold = facts.envs[each.name].status.hold
        if hold:
            return _answer("refused", f"`{each.name}` is locked by @{hold.actor}{_because(hold.reason)}; "
                                      f"`{p}unlock {each.name}` first.")
    unmet = [why for need in dict.fromkeys(r for e in deploys for r in e.require) if (why := _unmet(need, pull))]
    if unmet:
        return _answer("refused", f"Not merged: {'; '.join(unmet)}.")
    return Verdict(authorize("deploy", env, facts.held or "none", facts.prefix).reason,
                   Merge(env, pull.head_sha, tuple(e.name for e in deploys)))


def _redefined(current: RepoConfig, merged: RepoConfig | None, branch: str) -> list[Environment]:
    """The environments, as the merged config defines them, that the merge deploys or redefines.

    The pull request may lower their `deployers`; each is guarded as both configs define it.
    """
    if merged is None:
        return []
    return [e for e in merged.environments
            if e.cluster and (e.branch == branch or current.get(e.name) != e)]


def _unmet(requirement: str, pull: PullState) -> str | None:
    if requirement == "approved" and not pull.approved:
        return (f"`require: approved` is unmet, as no one with {APPROVER_LEVEL} permission or above has approved "
                f"its head `{pull.head_sha[:7]}`" + (f" ({pull.approval_note})" if pull.approval_note else ""))
    if requirement == "mergeable" and pull.mergeable is not True:
        return ("`require: mergeable` is unmet, as the forge says it does not merge cleanly" if pull.mergeable is False
                else "`require: mergeable` is not known yet, as the forge is still checking; try again in a minute")
    return None


def _rollback(command: Command, env: Environment, state: EnvState, reason: str, prefix: str) -> Verdict:
    if len(command.args) > 1:
        return Verdict(reason, Rollback(env, command.args[1]))
    deployed = state.status.deployed
    previous = previous_deploy(state.history, deployed.sha) if deployed else None
    if previous is None:
        what = f"no successful deploy before `{deployed.sha[:7]}`" if deployed else "never been deployed"
        return _answer("refused", f"`{env.name}` has {what}, so there is nothing to roll back to; name a commit: "
                                  f"`{prefix}rollback {env.name} SHA`.")
    return Verdict(reason, Rollback(env, previous.sha))


def previous_deploy(history: Iterable[Record], current: str) -> Record | None:
    """The last successful deploy of another commit before `current` was deployed."""
    seen = False
    for record in history:
        if record.ok and record.sha == current:
            seen = True
        elif seen and record.ok:
            return record
    return None


def help_text(facts: Facts) -> str:
    p = facts.prefix
    commands = _table(["Command", "Who may run it", "What it does"], [
        [f"`{synopsis(name, p)}`", "the environment's deployers" if name in GUARDED else "anyone who can comment",
         usage.does] for name, usage in USAGE.items()])
    text = f"**Commands**, one per line, several per comment (not in code blocks or quotes):\n\n{commands}\n\n"
    base = f"`{facts.pull.base_ref}`" if facts.pull else "the base branch"
    if facts.config is None:
        return text + f"The repo config on {base} could not be read: {facts.config_error}"
    return text + f"**Environments** (`.gitops.yaml` on {base}):\n\n" + _table(
        ["Environment", "Branch", "Path", "Who may deploy", f"`{p}deploy` requires"],
        [[f"`{env.name}`", f"`{env.branch}`", f"`{env.path}`",
          f"{env.deployers} or above" if env.cluster else "nobody: no cluster, diffs only",
          ", ".join(env.require) or "nothing"] for env in facts.config.environments])


OBJECTS_LISTED = 5
"""Drifted, and unhealthy, objects `/status` lists below its table per environment; the rest are counted."""
FIELDS_LISTED = 3


def status_table(config: RepoConfig, envs: Mapping[str, EnvState]) -> str:
    """A row per environment (deploy, sync, health, lock), then the objects that drifted or are unhealthy."""
    rows, details = [], []
    for env in config.environments:
        if not env.cluster:
            rows.append([f"`{env.name}`", f"`{env.branch}`", "diffs only (no cluster)", *[""] * 7])
            continue
        state = envs[env.name]
        deployed, hold, pending = state.status.deployed, state.status.hold, state.status.pending
        rows.append([f"`{env.name}`", f"`{env.branch}`", f"`{deployed.sha[:7]}`" if deployed else "never",
                     _when(deployed.started) if deployed else "", f"@{deployed.actor}" if deployed else "",
                     _last_result(state), _sync_cell(state), _health_cell(state.sync),
                     f"🔒 @{hold.actor}{_because(hold.reason)}" if hold else "",
                     f"`{pending.sha[:7]}` since {_when(pending.since)}" if pending else ""])
        if state.sync:
            details += _sync_details(env.name, state.sync)
    table = _table(["Environment", "Branch", "Deployed", "When", "By", "Last result", "Sync", "Health", "Lock",
                    "Pending"], rows)
    return "\n\n".join([table, *details])


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a `|` in a cell (say, in a lock's reason) is escaped so the row stays whole."""
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                     for row in [header, ["---"] * len(header), *rows])


def _last_result(state: EnvState) -> str:
    if state.status.deploying:
        return f"⏳ deploying `{state.status.deploying[:7]}`"
    if not state.history:
        return ""
    last = state.history[0]
    what = "re-applied the drift" if last.heal else last.result
    return {"success": "✅", "failure": "❌", "refused": "⛔"}[last.result] + f" {what} of `{last.sha[:7]}`" + (
        f" ({last.result})" if last.heal and not last.ok else "")


def _sync_cell(state: EnvState) -> str:
    sync, deployed = state.sync, state.status.deployed
    if sync is None:
        return "❓ not checked yet"
    checked = f"checked {_when(sync.checked)}"
    if deployed is None or deployed.sha != sync.sha:  # a deploy since: this check is of the commit before it
        checked += f" against `{sync.sha[:7]}`"
    if sync.state == "error":
        return f"❌ check failed: {_words(sync.error or 'no reason given', 120)}; {checked}"
    if sync.in_sync:
        return f"✅ in sync: {sync.compared} object{'' if sync.compared == 1 else 's'}, {checked}"
    healed = " and re-applied" if sync.healed else ""
    return f"{'🩹' if sync.healed else '⚠️'} {sync.drifted_count} drifted{healed}, {checked}"


def _health_cell(sync: Sync | None) -> str:
    if sync is None or not sync.health:
        return ""
    text = health_summary(sync.health)
    if sync.unhealthy:
        text += f"; {_unhealthy(sync.unhealthy[0])}"
    return text


def _sync_details(name: str, sync: Sync) -> list[str]:
    """Short lists, below the table, of the objects that drifted and those not healthy."""
    sections = []
    if sync.drifted_count and sync.state == "drifted":
        what = "drifted and were re-applied" if sync.healed else "drifted"
        sections.append(_listed(f"**`{name}`**: {_count(sync.drifted_count)} {what}",
                                [_drifted(item) for item in sync.drifted], sync.drifted_count))
    unhealthy = unhealthy_total(sync)
    if unhealthy:
        sections.append(_listed(f"**`{name}`**: {_count(unhealthy)} not healthy",
                                [_unhealthy(item) for item in sync.unhealthy], unhealthy))
    return sections


def _listed(head: str, items: list[str], total: int) -> str:
    lines = [head, *(f"- {item}" for item in items[:OBJECTS_LISTED])]
    more = total - min(len(items), OBJECTS_LISTED)
    return "\n".join([*lines, f"- and {more} more"] if more > 0 else lines)


def _drifted(item: Mapping[str, Any]) -> str:
    """`Deployment shop/web` changed: `spec.replicas`, now managed by `kubectl-edit`"""
    text = f"{_code(item.get('key', '?'))} " + {
        "missing": "is missing from the cluster", "extra": "is no longer rendered but is still in the cluster",
    }.get(item.get("what", ""), str(item.get("what", "changed")))
    fields = list(item.get("fields") or ())
    if fields:
        more = len(fields) - FIELDS_LISTED
        text += ": " + ", ".join(_code(f) for f in fields[:FIELDS_LISTED]) + (f" and {more} more" if more > 0 else "")
    managers = list(item.get("managers") or ())
    if managers:
        text += ", now managed by " + ", ".join(_code(m) for m in managers[:FIELDS_LISTED])
    return text


def _unhealthy(item: Mapping[str, Any]) -> str:
    """`Deployment shop/web` degraded: `its rollout exceeded its progress deadline`"""
    message = _words(str(item.get("message") or ""), 100)
    return f"{_code(item.get('key', '?'))} {_words(str(item.get('health', 'unhealthy')), 20)}" + (
        f": {_code(message)}" if message else "")


def _count(number: int) -> str:
    return f"{number} object{'' if number == 1 else 's'}"


def _code(text: Any) -> str:
    """Inline code, which the forge renders as it is: no mention, link or markup from the cluster's words."""
    return f"`{_words(str(text), 200).replace('`', chr(39))}`"


def _words(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _because(reason: str) -> str:
    return f": {' '.join(reason.split())}" if reason.strip() else ""


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def reply(commands: list[Command], outcomes: list[Outcome], instance: str, skipped: int = 0) -> str | None:
    """One comment answering every command that has something to say, each under a quote of it, and
    saying how many more were not run."""
    sections = [f"> {command.line[:200]}\n\n{outcome.text}" for command, outcome in zip(commands, outcomes)
                if outcome.text]
    if skipped:
        sections.append(f"{ICONS['invalid']} {skipped} more command{'s' if skipped > 1 else ''} not run: one comment "
                        f"runs at most {MAX_COMMANDS}.")
    return "\n\n".join([marker(instance), *sections]) + "\n" if sections else None


def marker(instance: str) -> str:
    return f"<!-- gitops-bot:commands:{instance} -->"


def final_reaction(outcomes: list[Outcome]) -> Reaction:
    results = {o.result for o in outcomes}
    return "-1" if results & {"refused", "failed"} else "confused" if "invalid" in results else "+1"


# -- acting -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One new comment on a pull request, as its job receives it.

    The payload's `body` and `author` only say where to look: `run` reads the comment from the forge's
    API by its id, and acts on what the API says.
    """

    repo: Repo
    number: int
    comment_id: int
    body: str
    author: str


MAX_COMMENT_AGE = 24 * 3600
"""Seconds after it was made that a comment's commands still run: a delivery replayed later (an old
webhook resent, or a forged one naming an old comment) is ignored."""


def run(rt: runtime.Runtime, request: Request) -> dict[str, Any]:
    """Run a comment's commands in order, react on receipt and on the result, and reply once."""
    forge = rt.forge(request.repo.forge)
    comment = forge.comment(request.repo.full_name, request.number, request.comment_id)
    reason = ignored(comment, forge.bot_login(), time.time())
    if comment is None or reason:
        log.info("comment ignored", extra={"repo": request.repo.full_name, "pull": request.number,
                                           "comment": request.comment_id, "reason": reason})
        return {"ignored": reason}
    request = replace(request, body=comment.body, author=comment.author)
    commands = parse(request.body, rt.server.command_prefix)
    if not commands:
        return {"ignored": "no command"}
    return Executor(rt, forge, request).answer(commands)


def ignored(comment: Comment | None, bot_login: str, now: float) -> str | None:
    """Why a comment's commands are not run, as the forge's API tells the comment; None when they are."""
    if comment is None:
        return "no such comment on this pull request"
    if comment.author.lower() == bot_login.lower():
        return "the bot's own comment"
    if comment.author_is_bot:
        return f"a comment by the bot {comment.author}"
    if now - comment.created_at > MAX_COMMENT_AGE:
        return f"the comment is older than {MAX_COMMENT_AGE // 3600} hours"
    return None


class Executor:
    """Carries out the commands of one comment, and answers it."""

    def __init__(self, rt: runtime.Runtime, forge: Forge, request: Request):
        self.rt, self.forge, self.request = rt, forge, request
        self.prefix = rt.server.command_prefix
        self.envs = Environments(rt.store.redis, rt.settings.name)
        self.journal = Journal(rt.store.redis, f"{rt.store.prefix}:comment:{request.repo.forge}:"
                                               f"{request.repo.full_name}:{request.comment_id}")
        self.url = forge.clone_url(request.repo, allow_local=rt.server.allow_local_urls)

    def answer(self, commands: list[Command]) -> dict[str, Any]:
        skipped = max(len(commands) - MAX_COMMANDS, 0)
        commands = commands[:MAX_COMMANDS]
        self._react("eyes")
        facts = self._observe(commands)
        outcomes = []
        for index, command in enumerate(commands):
            outcome = self.journal.done(index)
            if outcome is None:  # not run by an earlier attempt of this job
                outcome = self._run(index, command, facts)
                self.journal.record(index, outcome)
                if outcome.ok and command.name == "deploy":
                    facts = replace(facts, pull=self.forge.pull_state(self.request.repo.full_name, self.request.number))
            outcomes.append(outcome)
        self._reply(reply(commands, outcomes, self.rt.settings.name, skipped))
        self._react("confused" if skipped else final_reaction(outcomes))
        return {"commands": [{"command": c.line, "result": o.result} for c, o in zip(commands, outcomes)],
                "skipped": skipped}

    def _run(self, index: int, command: Command, facts: Facts) -> Outcome:
        repo, author = self.request.repo, self.request.author
        facts = replace(facts, envs=self._env_states(facts.config, HISTORY_LIMIT if command.name == "rollback" else 1))
        if command.name == "deploy" and facts.pull is not None and facts.config is not None:
            facts = self._with_deploy_configs(facts, facts.pull)
        verdict = decide(command, facts)
        then = verdict.then
        log.info("slash command decided", extra={
            "actor": author, "command": command.line, "repo": repo.full_name, "pull": self.request.number,
            "allowed": then.ok if isinstance(then, Outcome) else True, "reason": verdict.reason,
            "permission": facts.held})
        return then if isinstance(then, Outcome) else self._perform(index, then)

    def _observe(self, commands: list[Command]) -> Facts:
        """The pull request, its base's repo config and the author's permission, as far as the commands need them."""
        facts = Facts(self.request.author, self.prefix)
        known = [c for c in commands if c.known]
        if not known:
            return facts
        repo = self.request.repo
        pull = self.forge.pull_state(repo.full_name, self.request.number)
        held = self.forge.permission(repo.full_name, self.request.author) \
            if any(c.name in GUARDED for c in known) else None
        mirror, ref = self.rt.mirrors.get(repo.forge, repo.full_name), f"refs/heads/{pull.base_ref}"
        default = self.forge.default_branch(repo.full_name)
        try:
            mirror.ensure(self.url, [], [f"+{ref}:{ref}"], refresh=True)
            config = read_repo_config(mirror.snapshot(mirror.resolve(ref)), default, set(self.rt.server.clusters))
        except (GitError, ConfigError) as err:
            return replace(facts, pull=pull, held=held, config_error=str(err))
        return replace(facts, pull=pull, held=held, config=config)

    def _with_deploy_configs(self, facts: Facts, pull: PullState) -> Facts:
        """`facts` with the other configs that say what a merge deploys: the one the merge would bring,
        if the pull request changes it, and the default branch's, which deploys read."""
        repo, number = self.request.repo, self.request.number
        mirror, ref = self.rt.mirrors.get(repo.forge, repo.full_name), f"refs/pull-heads/{number}"
        default, clusters = self.forge.default_branch(repo.full_name), set(self.rt.server.clusters)
        if pull.base_ref != default:
            try:
                mirror.ensure(self.url, [], [f"+refs/heads/{default}:refs/heads/{default}"], refresh=True)
                governing = read_repo_config(mirror.snapshot(mirror.resolve(f"refs/heads/{default}")), default, clusters)
            except (GitError, ConfigError) as err:
                return replace(facts, merged_error=f"the default branch's could not be read ({err})")
            facts = replace(facts, governing=governing)
        try:
            mirror.ensure(self.url, [pull.head_sha], [f"+{self.forge.pull_refspec(number)}:{ref}"])
            base = mirror.merge_base(mirror.resolve(f"refs/heads/{pull.base_ref}"), pull.head_sha)
            if base is not None and REPO_CONFIG_FILE not in mirror.changed_paths(base, pull.head_sha):
                return facts
            merged = read_repo_config(mirror.snapshot(pull.head_sha), default, clusters)
        except GitError as err:
            return replace(facts, merged_error=f"its head could not be fetched ({err})")
        except ConfigError as err:
            return replace(facts, merged_error=str(err))
        return replace(facts, merged=merged)

    def _env_states(self, config: RepoConfig | None, history: int) -> dict[str, EnvState]:
        refs = {env.name: self._ref(env) for env in (config.environments if config else ()) if env.cluster}
        return {name: EnvState(self.envs.status(ref), tuple(self.envs.history(ref, history)), self.envs.sync(ref))
                for name, ref in refs.items()}

    def _ref(self, env: Environment) -> EnvRef:
        return EnvRef(self.request.repo.forge, self.request.repo.full_name, env.name)

    def _perform(self, index: int, action: Action) -> Outcome:
        repo, number, author, p = self.request.repo, self.request.number, self.request.author, self.prefix
        match action:
            case Recompute(base_ref, head_sha):
                pull = PullRequest(repo, number, title="", author="", base_ref=base_ref, base_sha="", head_ref="",
                                   head_sha=head_sha, head_clone_url=repo.clone_url)
                self._queue(index, diff_job(PullRequestEvent("updated", pull, author, detail=f"{p}diff"),
                                            requested_by=author))
                return Outcome("ok")
            case Merge(env, head_sha, deploys):
                try:
                    sha = self.forge.merge(repo.full_name, number, head_sha,
                                           f"Merge #{number}: {p}deploy {env.name}, asked by @{author}")
                except MergeRefused as err:  # the forge's refusal, in its own words
                    log.warning("merge refused", extra={"pull": number, "environment": env.name, "error": str(err)})
                    return Outcome("failed", f"❌ The forge did not merge it: {' '.join(str(err).split())[:300]}")
                self._queue(index, deploy_job(repo, env.branch, sha, author, pull=number))
                return Outcome("ok", f"🚀 Merged as `{sha[:7]}`. Deploying {_names(deploys)} now; the result will "
                                     "follow in this thread.")
            case Rollback(env, target):
                return self._roll_back(index, env, target)
            case Lock(env, reason, replaces):
                self.envs.lock(self._ref(env), author, reason)
                text = (f"🔒 `{env.name}` is locked by @{author}{_because(reason)}. Deploys of it wait until "
                        f"`{p}unlock {env.name}`.")
                if replaces:
                    text += f" This replaces the lock by @{replaces.actor}{_because(replaces.reason)}."
                return Outcome("ok", text)
            case Unlock(env):
                pending = self.envs.unlock(self._ref(env))
                if pending is None:
                    return Outcome("ok", f"🔓 `{env.name}` is unlocked; nothing was waiting to deploy.")
                self._queue(index, deploy_job(repo, env.branch, pending.sha, pending.actor, pull=number,
                                              environment=env.name))
                return Outcome("ok", f"🔓 `{env.name}` is unlocked. Deploying `{pending.sha[:7]}`, which landed while "
                                     "it was locked; the result will follow in this thread.")
        raise AssertionError(action)

    def _roll_back(self, index: int, env: Environment, target: str) -> Outcome:
        repo, number, author = self.request.repo, self.request.number, self.request.author
        login = self.forge.bot_login()
        note = f"Asked for by @{author} with {self.prefix}rollback in {repo.full_name}#{number}."
        try:
            restored = roll_back(self.rt.mirrors.get(repo.forge, repo.full_name), self.url, env, target,
                                 Identity(login, f"{login}@users.noreply.invalid"), note)
        except RollbackError as err:
            return Outcome("failed", f"❌ No rollback of `{env.name}` was made: {err}.")
        if restored.commit is None:
            return Outcome("ok", f"✅ `{env.path}` on `{env.branch}` is already as it was at `{restored.target[:7]}`: "
                                 "there is nothing to commit.")
        self._queue(index, deploy_job(repo, env.branch, restored.commit, author, pull=number, environment=env.name))
        return Outcome("ok", f"⏪ Committed `{restored.commit[:7]}` on `{env.branch}`: `{env.path}` as it was at "
                             f"`{restored.target[:7]}`. Deploying it to `{env.name}` now; the result will follow in "
                             "this thread.")

    def _queue(self, index: int, job: JobSpec) -> None:
        """Through the store, as a webhook would: a retried job finds its delivery seen and queues nothing."""
        self.rt.store.queue_once(self.request.repo, f"comment-{self.request.comment_id}-{index}", job,
                                 "slash command")

    def _reply(self, body: str | None) -> None:
        if body is None or not self.journal.claim_reply():
            return
        try:
            self.forge.create_comment(self.request.repo.full_name, self.request.number,
                                      fit(Masker(self.rt.settings.secrets())(body), self.forge.comment_limit))
        except Exception:
            self.journal.unclaim_reply()  # a retry of the job replies
            raise

    def _react(self, reaction: Reaction) -> None:
        try:
            self.forge.react(self.request.repo.full_name, self.request.number, self.request.comment_id, reaction)
        except Exception:  # a reaction is a courtesy: it must never stop a command
            log.warning("reaction failed", exc_info=True, extra={"reaction": reaction})


class Journal:
    """What each command of one comment came to, so a retried job neither repeats nor re-answers it."""

    TTL = 7 * 24 * 3600

    def __init__(self, connection: redis.Redis, key: str):
        self.redis, self.key = connection, key

    def done(self, index: int) -> Outcome | None:
        raw = self.redis.hget(self.key, str(index))
        return Outcome(**json.loads(raw)) if raw else None

    def record(self, index: int, outcome: Outcome) -> None:
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key, str(index), json.dumps(asdict(outcome)))
            pipe.expire(self.key, self.TTL)
            pipe.execute()

    def claim_reply(self) -> bool:
        return bool(self.redis.hsetnx(self.key, "replied", 1))

    def unclaim_reply(self) -> None:
        self.redis.hdel(self.key, "replied")

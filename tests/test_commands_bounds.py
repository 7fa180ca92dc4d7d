"""Commands from one comment are bounded: how many run, how long a lock's reason is, how long a reply is."""

from __future__ import annotations

from bot.commands import MAX_COMMANDS, MAX_REASON, parse
from bot.report import fit
from tests.test_commands_run import forge, repo, rt, run  # noqa: F401 (fixtures)


def test_a_lock_reason_over_the_bound_is_refused_and_nothing_is_held(rt, repo, forge):
    result = run(rt, repo, "/lock staging " + "x" * (MAX_REASON + 1), comment_id=1)
    assert result["commands"] == [{"command": "/lock staging " + "x" * (MAX_REASON + 1), "result": "invalid"}]
    assert f"a lock's reason is at most {MAX_REASON} characters" in forge.comments[0]
    run(rt, repo, "/status", comment_id=2)
    assert "🔒" not in forge.comments[1]
    run(rt, repo, "/lock staging " + "y" * MAX_REASON, comment_id=3)
    assert "locked by @alice: " + "y" * MAX_REASON in forge.comments[2]


def test_a_reply_is_cut_to_the_forge_limit(rt, repo, forge):
    forge.comment_limit = 400
    run(rt, repo, "/help")
    (reply,) = forge.comments
    assert len(reply) <= 400 and reply.endswith("… (cut to fit the forge's limit on a comment)\n")


def test_fit_cuts_at_a_line_and_leaves_short_bodies_alone():
    assert fit("short\n", 100) == "short\n"
    body = "".join(f"line {n}\n" for n in range(20))
    cut = fit(body, 70)
    assert cut.startswith("line 0\nline 1\n") and "line 19" not in cut and len(cut) <= 70
    assert all(line.startswith(("line ", "…")) for line in cut.splitlines() if line)


def test_parse_reads_every_command_line():
    assert len(parse("/status\n" * 50)) == 50  # the cap is the job's, which says what it left


def test_one_comment_runs_at_most_ten_commands_and_says_so(rt, repo, forge):
    result = run(rt, repo, "/diff\n" * 300)
    assert len(result["commands"]) == MAX_COMMANDS and result["skipped"] == 300 - MAX_COMMANDS
    assert rt.store.queue("diff").count <= MAX_COMMANDS  # not 300 diff jobs
    (reply,) = forge.comments
    assert reply.rstrip().endswith(f"❓ {300 - MAX_COMMANDS} more commands not run: one comment runs at most "
                                   f"{MAX_COMMANDS}.")
    assert forge.reactions[-1] == "confused"

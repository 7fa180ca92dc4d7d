"""Per-environment state in Redis: holds, pending commits, the fenced deploy lock, history, one run per commit."""

from __future__ import annotations

import threading
import time

import pytest

from bot.environments import HISTORY_LIMIT, EnvRef, Environments, LockBusy, Record

ENV = EnvRef("github", "acme/infra", "staging")
A, B = "a" * 40, "b" * 40


@pytest.fixture
def envs(redis) -> Environments:
    return Environments(redis, "test", lock_ttl=0.5)


def record(sha: str = A, result: str = "success", **kw) -> Record:
    return Record(sha, "alice", time.time(), result, **kw)  # type: ignore[arg-type]


def test_lock_holds_until_unlock_which_hands_back_the_pending_commit(envs):
    assert envs.unlock(ENV) is None
    hold = envs.lock(ENV, "alice", "release freeze")
    assert envs.hold(ENV) == hold and (hold.actor, hold.reason) == ("alice", "release freeze")
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        assert envs.start(lease)
        assert envs.defer(lease, "bob")
    status = envs.status(ENV)
    assert status.hold == hold and status.pending.sha == A and status.pending.actor == "bob"
    assert envs.run(ENV, A).state == "pending"
    pending = envs.unlock(ENV)
    assert pending.sha == A
    assert envs.status(ENV).hold is None and envs.status(ENV).pending is None


def test_finish_records_history_and_the_deployed_commit(envs):
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        assert envs.status(ENV).deploying == A
        envs.start(lease)
        envs.finish(lease, record(A, created=3))
    with envs.deploy_lock(ENV, B, wait=1) as lease:
        envs.start(lease)
        envs.finish(lease, record(B, "failure", error="rollout timed out"))
    status = envs.status(ENV)
    assert status.deploying is None and status.deployed.sha == A and status.deployed.created == 3
    assert [(r.sha, r.result) for r in envs.history(ENV)] == [(B, "failure"), (A, "success")]
    assert envs.run(ENV, B).record.error == "rollout timed out"


def test_history_is_capped(envs):
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        for i in range(HISTORY_LIMIT + 5):
            envs.finish(lease, record(f"{i:040d}"))
    history = envs.history(ENV)
    assert len(history) == HISTORY_LIMIT and history[0].sha == f"{HISTORY_LIMIT + 4:040d}"


def test_deploy_lock_is_exclusive_and_waits(envs):
    order = []
    with envs.deploy_lock(ENV, A, wait=1):
        with pytest.raises(LockBusy):
            with envs.deploy_lock(ENV, B, wait=0.3):
                pass

        def second() -> None:
            with envs.deploy_lock(ENV, B, wait=5):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join()
    assert order == ["first done", "second"]


def test_the_lock_is_renewed_while_held(envs):
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        time.sleep(0.8)  # longer than the 0.5 s time-to-live
        assert lease.problem() is None and envs.acquire(ENV, B) is None


def test_a_dead_holder_loses_the_lock_and_its_writes_are_fenced_off(envs):
    dead = envs.acquire(ENV, A)  # never renewed, as if its worker died
    time.sleep(0.6)
    alive = envs.acquire(ENV, B)
    assert alive is not None and alive.token > dead.token
    assert not envs.finish(dead, record(A)) and not envs.start(dead)
    assert envs.history(ENV) == [] and envs.run(ENV, A) is None
    assert envs.finish(alive, record(B))
    dead.release()  # releasing an expired lease leaves the new holder's lock alone
    assert envs.status(ENV).deploying == B


def test_a_lease_notices_that_it_was_lost(envs):
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        envs.redis.delete(envs.key(ENV, "lock"))  # as if it expired during a long pause
        time.sleep(0.3)
        assert "expired" in lease.problem()


def test_join_tells_new_running_and_done_apart(envs):
    assert envs.join(ENV, A, reply_to=7) == "new"
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        assert envs.start(lease)
        assert envs.join(ENV, A) == "joined"  # running under a live lock
        assert envs.join(ENV, A, reply_to=8) == "joined"
        envs.finish(lease, record(A))
    assert envs.join(ENV, A, reply_to=9) == "done"
    assert envs.claim_replies(ENV, A) == [7, 8, 9]
    assert envs.claim_replies(ENV, A) == []  # each reply is handed out once
    envs.unclaim_reply(ENV, A, 8)
    assert envs.claim_replies(ENV, A) == [8]


def test_a_run_whose_lock_died_is_taken_over(envs):
    dead = envs.acquire(ENV, A)
    envs.start(dead)
    time.sleep(0.6)
    assert envs.join(ENV, A) == "new"
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        assert envs.start(lease)


def test_start_refuses_a_finished_commit_unless_forced(envs):
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        envs.start(lease)
        envs.finish(lease, record(A))
        assert not envs.start(lease)
        assert envs.start(lease, force=True) and envs.run(ENV, A).state == "running"


def test_the_forge_report_is_claimed_once(envs):
    with envs.deploy_lock(ENV, A, wait=1) as lease:
        envs.start(lease)
        envs.set_deployment(lease, "42")
        envs.finish(lease, record(A))
    assert envs.run(ENV, A).deployment_id == "42"
    assert envs.claim_report(ENV, A) and not envs.claim_report(ENV, A)
    envs.unclaim_report(ENV, A)
    assert envs.claim_report(ENV, A)


def test_applied_kinds_accumulate(envs):
    envs.add_applied_kinds(ENV, {"ConfigMap", "Deployment.apps"})
    envs.add_applied_kinds(ENV, {"Service"})
    envs.add_applied_kinds(ENV, set())
    assert envs.applied_kinds(ENV) == {"ConfigMap", "Deployment.apps", "Service"}


def test_environments_and_instances_are_apart(redis, envs):
    other_env, other_instance = EnvRef("gitlab", "acme/infra", "staging"), Environments(redis, "other")
    envs.lock(ENV, "alice")
    assert envs.hold(other_env) is None and other_instance.hold(ENV) is None

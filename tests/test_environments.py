"""Per-environment state in Redis: holds, pending commits, the fenced deploy lock, history, one run per commit."""

from __future__ import annotations

import threading
import time

import pytest

from bot.environments import HISTORY_LIMIT, EnvRef, Environments, LockBusy, Record

ENV = EnvRef("github", "acme/infra", "staging")
A, B = "a" * 40, "b" * 40
JOB, OTHER = "job-1", "job-2"


@pytest.fixture
def envs(redis) -> Environments:
    return Environments(redis, "test", lock_ttl=0.5)


def record(sha: str = A, result: str = "success", **kw) -> Record:
    return Record(sha, "alice", time.time(), result, **kw)  # type: ignore[arg-type]


def test_lock_holds_until_unlock_which_hands_back_the_pending_commit(envs):
    assert envs.unlock(ENV) is None
    hold = envs.lock(ENV, "alice", "release freeze")
    assert envs.hold(ENV) == hold and (hold.actor, hold.reason) == ("alice", "release freeze")
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        assert envs.start(lease)
        assert envs.defer(lease, "bob")
    status = envs.status(ENV)
    assert status.hold == hold and status.pending.sha == A and status.pending.actor == "bob"
    assert envs.run(ENV, A).state == "pending"
    pending = envs.unlock(ENV)
    assert pending.sha == A
    assert envs.status(ENV).hold is None and envs.status(ENV).pending is None


def test_finish_records_history_and_the_deployed_commit(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        assert envs.status(ENV).deploying == A
        envs.start(lease)
        envs.finish(lease, record(A, created=3))
    with envs.deploy_lock(ENV, B, wait=1, owner=JOB) as lease:
        envs.start(lease)
        envs.finish(lease, record(B, "failure", error="rollout timed out"))
    status = envs.status(ENV)
    assert status.deploying is None and status.deployed.sha == A and status.deployed.created == 3
    assert [(r.sha, r.result) for r in envs.history(ENV)] == [(B, "failure"), (A, "success")]
    assert envs.run(ENV, B).record.error == "rollout timed out"


def test_history_is_capped(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        for i in range(HISTORY_LIMIT + 5):
            envs.finish(lease, record(f"{i:040d}"))
    history = envs.history(ENV)
    assert len(history) == HISTORY_LIMIT and history[0].sha == f"{HISTORY_LIMIT + 4:040d}"


def test_deploy_lock_is_exclusive_and_waits(envs):
    order = []
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB):
        with pytest.raises(LockBusy):
            with envs.deploy_lock(ENV, B, wait=0.3, owner=OTHER):
                pass

        def second() -> None:
            with envs.deploy_lock(ENV, B, wait=5, owner=OTHER):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join()
    assert order == ["first done", "second"]


def test_the_lock_is_renewed_while_held(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        time.sleep(0.8)  # longer than the 0.5 s time-to-live
        assert lease.problem() is None and envs.acquire(ENV, B, OTHER) is None


def test_a_dead_holder_loses_the_lock_and_its_writes_are_fenced_off(envs):
    dead = envs.acquire(ENV, A, JOB)  # never renewed, as if its worker died
    time.sleep(0.6)
    alive = envs.acquire(ENV, B, OTHER)
    assert alive is not None and alive.token > dead.token
    assert not envs.finish(dead, record(A)) and not envs.start(dead)
    assert envs.history(ENV) == [] and envs.run(ENV, A) is None
    assert envs.finish(alive, record(B))
    dead.release()  # releasing an expired lease leaves the new holder's lock alone
    assert envs.status(ENV).deploying == B


def test_a_lease_notices_that_it_was_lost(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        envs.redis.delete(envs.key(ENV, "lock"))  # as if it expired during a long pause
        time.sleep(0.3)
        assert "expired" in lease.problem()


def test_join_tells_new_running_and_done_apart(envs):
    assert envs.join(ENV, A, reply_to=7) == "new"
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
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
    dead = envs.acquire(ENV, A, JOB)
    envs.start(dead)
    time.sleep(0.6)
    assert envs.join(ENV, A) == "new"
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        assert envs.start(lease)


def test_start_refuses_a_finished_commit_unless_forced(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        envs.start(lease)
        envs.finish(lease, record(A))
        assert not envs.start(lease)
        assert envs.start(lease, force=True) and envs.run(ENV, A).state == "running"


def test_the_forge_report_is_claimed_once(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
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


# -- a deploy left unfinished: its own job takes over, a retry resumes it ------------------------------

@pytest.fixture
def lasting(redis) -> Environments:
    """Locks that outlive the test, as a dead worker's 30 s lock outlives its retry's start."""
    return Environments(redis, "test", lock_ttl=30)


def test_the_lock_holders_own_retry_takes_it_over_and_fences_the_holder_off(lasting):
    envs = lasting
    dead = envs.acquire(ENV, A, JOB)  # never renewed nor released: its worker was killed
    assert envs.start(dead) == 1
    envs.set_deployment(dead, "42")
    assert envs.acquire(ENV, A, OTHER) is None  # anyone else waits for it
    assert envs.join(ENV, A, reply_to=8, owner=OTHER) == "joined"
    assert envs.join(ENV, A, owner=JOB) == "new"  # the killed job, retried

    retry = envs.acquire(ENV, A, JOB)
    assert retry is not None and retry.token > dead.token
    assert not envs.finish(dead, record(A)) and not envs.start(dead)  # whatever the holder still writes
    assert envs.start(retry) == 2
    run = envs.run(ENV, A)
    assert (run.state, run.attempt, run.deployment_id) == ("running", 2, "42")  # the same forge deployment
    assert envs.finish(retry, record(A, attempt=2))
    dead.release()
    assert envs.redis.get(envs.key(ENV, "lock")) == retry.value.encode()
    retry.release()
    assert envs.status(ENV).deploying is None and envs.claim_replies(ENV, A) == [8]


def test_a_failed_try_awaits_its_retry_which_resumes_the_run(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        assert envs.start(lease) == 1
        envs.set_deployment(lease, "42")
        envs.plan(lease, {"ConfigMap shop/a": "create", "Secret shop/b": "create"})
        assert envs.retry_later(lease, record(A, "failure", created=1, attempt=1, retried=True,
                                              error="apply Secret shop/b: ServiceUnavailable (503)"), JOB)
    run = envs.run(ENV, A)
    assert (run.state, run.final, run.retry_by, run.record.retried) == ("retrying", False, JOB, True)
    assert envs.deployed(ENV) is None and [r.result for r in envs.history(ENV)] == ["failure"]
    assert envs.join(ENV, A, reply_to=8, owner=OTHER) == "joined"  # the retry replies on it too
    assert envs.join(ENV, A, owner=JOB) == "new"

    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        assert envs.start(lease) == 2
        run = envs.run(ENV, A)
        assert (run.state, run.retry_by, run.deployment_id) == ("running", None, "42")
        envs.plan(lease, {"Secret shop/b": "change", "ConfigMap shop/c": "create"})
        assert envs.planned(ENV, A) == {"ConfigMap shop/a": "create", "Secret shop/b": "create",
                                        "ConfigMap shop/c": "create"}  # an earlier try's word stands
        envs.finish(lease, record(A, created=3, attempt=2))
    assert [(r.result, r.attempt, r.retried) for r in envs.history(ENV)] == [("success", 2, False),
                                                                             ("failure", 1, True)]
    assert envs.deployed(ENV).attempt == 2

    with envs.deploy_lock(ENV, A, wait=1, owner=OTHER) as lease:  # by hand, once it is done: afresh
        assert envs.start(lease, force=True) == 1
        assert envs.planned(ENV, A) == {} and envs.run(ENV, A).deployment_id is None


def test_a_retry_whose_job_is_gone_is_forgotten_and_the_next_deploy_tries(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        envs.start(lease)
        envs.retry_later(lease, record(A, "failure", retried=True), JOB)
    assert not envs.forget_retry(ENV, A, OTHER)
    assert envs.join(ENV, A, owner=OTHER) == "joined"
    assert envs.forget_retry(ENV, A, JOB)
    assert envs.join(ENV, A, owner=OTHER) == "new"
    with envs.deploy_lock(ENV, A, wait=1, owner=OTHER) as lease:
        assert envs.start(lease) == 2


def test_a_held_try_did_nothing_and_the_next_takes_its_number(envs):
    envs.lock(ENV, "alice")
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        assert envs.start(lease) == 1
        envs.defer(lease, "bob")
    envs.unlock(ENV)
    with envs.deploy_lock(ENV, A, wait=1, owner=OTHER) as lease:
        assert envs.start(lease) == 1


def test_a_deployment_the_forge_was_too_busy_to_make_is_owed_until_made(envs):
    with envs.deploy_lock(ENV, A, wait=1, owner=JOB) as lease:
        envs.start(lease)
        envs.owe_deployment(lease)
        envs.finish(lease, record(A))
    run = envs.run(ENV, A)
    assert run.deployment_owed and run.deployment_id is None
    envs.paid_deployment(ENV, A, "43")
    run = envs.run(ENV, A)
    assert not run.deployment_owed and run.deployment_id == "43"

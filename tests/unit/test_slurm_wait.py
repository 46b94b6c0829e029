"""The submitit launcher's wait: a SLURM job that ended without results fails (no sacct needed); a requeued
one is waited for. Fake job, fake squeue, fake clock: no cluster."""

from __future__ import annotations

import pytest

from pipeline.launch.slurm_wait import ENDED, JobEndedWithoutResult, squeue_state, wait_for


class FakeJob:
    def __init__(self, done_after: int | None) -> None:
        self.job_id, self.calls, self.done_after = "17", 0, done_after

    def done(self) -> bool:
        self.calls += 1
        return self.done_after is not None and self.calls > self.done_after


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def _wait(job, states, grace_s=30.0):
    clock, seen = Clock(), iter(states)
    wait_for(job, poll_s=5.0, grace_s=grace_s, state=lambda jid: next(seen), sleep=clock.sleep, clock=clock)
    return clock.t


def test_a_job_with_results_returns_at_once():
    assert _wait(FakeJob(done_after=0), []) == 0.0


def test_a_cancelled_job_without_results_fails_after_the_grace_period_and_names_the_fix():
    with pytest.raises(JobEndedWithoutResult, match=r"job 17 ended in state CANCELLED .*rerun the rule.*--retries"):
        _wait(FakeJob(done_after=None), ["RUNNING"] + ["CANCELLED"] * 20)


def test_results_that_arrive_within_the_grace_period_count():
    # the state says COMPLETED before the result files reach this host (shared file system latency)
    assert _wait(FakeJob(done_after=4), ["RUNNING", "COMPLETED", "COMPLETED", "COMPLETED"]) == 20.0


def test_a_requeued_job_is_waited_for_and_an_unknown_state_never_fails():
    states = ["RUNNING", "PREEMPTED", "REQUEUED", "PENDING", "PENDING", "RUNNING", None, None]
    assert _wait(FakeJob(done_after=len(states)), states) == 5.0 * len(states)


def test_squeue_state_is_none_without_squeue(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))                     # no squeue on PATH
    assert squeue_state("1") is None and "COMPLETED" in ENDED and "PENDING" not in ENDED


def test_a_failed_task_whose_peers_do_not_end_stops_the_wait_after_the_grace_period():
    clock, job = Clock(), FakeJob(done_after=None)
    finished = wait_for(job, poll_s=5.0, grace_s=30.0, state=lambda jid: "RUNNING", sleep=clock.sleep, clock=clock,
                        failed=lambda: clock.t >= 100)
    assert finished is False and clock.t == 130.0
    # peers that end within the grace period (they lost their peer) give the normal outcome
    clock, job = Clock(), FakeJob(done_after=22)
    assert wait_for(job, poll_s=5.0, grace_s=30.0, state=lambda jid: "RUNNING", sleep=clock.sleep, clock=clock,
                    failed=lambda: clock.t >= 100) is True

"""The submitit launcher's rendezvous: rank 0's kernel picks a free port and publishes it with a nonce."""

import threading
import time
from datetime import timedelta

import pytest
from torch.distributed import TCPStore

from pipeline.launch.submitit import rendezvous_store


def test_ranks_meet_on_the_port_rank_0_publishes_and_skip_a_stale_file(tmp_path):
    port_file = tmp_path / "rendezvous-7-0.port"
    # a previous attempt's file: its store is still up (a live port) but holds another nonce
    old = TCPStore("127.0.0.1", 0, 2, True, timedelta(seconds=30), wait_for_workers=False)
    old.set("longvila/rendezvous", "old")
    port_file.write_text(f"{old.port} stale\n")
    stores = {}

    def rank0():
        time.sleep(1.0)                          # the worker reads the stale file first
        stores[0] = rendezvous_store(0, 2, "127.0.0.1", port_file, timeout_s=30)

    thread = threading.Thread(target=rank0)
    thread.start()
    stores[1] = rendezvous_store(1, 2, "127.0.0.1", port_file, timeout_s=30, probe_s=1)
    thread.join()
    assert stores[1].port == stores[0].port != old.port
    stores[0].set("from-rank-0", "hello")
    assert stores[1].get("from-rank-0") == b"hello"
    assert port_file.read_text().split()[0] == str(stores[0].port)


def test_a_rank_whose_rank_0_never_starts_fails_with_the_file_to_look_at(tmp_path):
    with pytest.raises(TimeoutError, match="did not publish its rendezvous port"):
        rendezvous_store(1, 2, "127.0.0.1", tmp_path / "rendezvous-8-0.port", timeout_s=1, probe_s=1)


class _Task:
    def __init__(self, folder, t):
        self.paths = type("Paths", (), {"result_pickle": folder / f"9_{t}_result.pkl"})()


class _Job:
    job_id, num_tasks = "9", 3

    def __init__(self, folder):
        self.folder = folder

    def task(self, t):
        return _Task(self.folder, t)


def test_only_a_root_cause_of_the_current_attempt_cancels_a_job(tmp_path):
    import os
    import pickle

    from pipeline.launch.submitit import errors_written

    def result(t, outcome, trace, mtime):
        path = tmp_path / f"9_{t}_result.pkl"
        path.write_bytes(pickle.dumps((outcome, trace)))
        os.utime(path, (mtime, mtime))

    job = _Job(tmp_path)
    # a preempted attempt: rank 1 lost its peer (collateral); rank 2 failed for real, but in attempt 0
    result(1, "error", "RuntimeError: ... Connection closed by peer [127.0.0.1]:4", 1000)
    result(2, "error", "ValueError: boom", 1000)
    (tmp_path / "9_0_result.pkl.tmp").write_text("")                   # being written: not a result
    rendezvous = tmp_path / "rendezvous-9-1.port"                      # attempt 1 met at t = 2000
    rendezvous.write_text("1 x")
    os.utime(rendezvous, (2000, 2000))
    assert errors_written(job, tmp_path, root_causes_only=True) == []
    assert [t for t, _ in errors_written(job, tmp_path)] == [1, 2]     # the report still shows every error
    result(0, "error", "KeyError: 'x'", 3000)                            # attempt 1's rank 0 fails
    ((t, e),) = errors_written(job, tmp_path, root_causes_only=True)
    assert t == 0 and "KeyError" in str(e)


def test_a_result_from_before_the_requeue_is_waited_past_while_the_job_runs(tmp_path):
    """A preempted attempt's rank 1 wrote an error result (it lost its peer); the requeued attempt's rank 0 is
    done first. submitit's done() counts both files: the launcher waits until rank 1's fresh result replaces
    the stale one, or the job has ended."""
    import os
    import pickle

    from pipeline.launch.submitit import await_fresh_results, stale_results

    def result(t, outcome, mtime):
        path = tmp_path / f"9_{t}_result.pkl"
        path.write_bytes(pickle.dumps((outcome, "RuntimeError: Connection closed by peer" if outcome == "error"
                                       else None)))
        os.utime(path, (mtime, mtime))

    job = _Job(tmp_path)
    job.num_tasks = 2
    for attempt, mtime in ((0, 1000), (1, 2000)):
        port = tmp_path / f"rendezvous-9-{attempt}.port"
        port.write_text("1 x")
        os.utime(port, (mtime, mtime))
    result(1, "error", 1500)                                             # attempt 0, after its rendezvous
    result(0, "success", 2500)                                           # attempt 1
    assert stale_results(job, tmp_path) == [1]
    polls = []

    def sleep(_):                                                        # rank 1 of attempt 1 finishes
        polls.append(1)
        result(1, "success", 2600)

    await_fresh_results(job, tmp_path, 0.01, state=lambda job_id: "RUNNING", sleep=sleep)
    assert polls == [1] and stale_results(job, tmp_path) == []
    result(1, "error", 1500)                                             # the job ended: nothing more comes
    await_fresh_results(job, tmp_path, 0.01, state=lambda job_id: "COMPLETED", sleep=sleep)
    assert polls == [1] and stale_results(job, tmp_path) == [1]

"""The submitit launcher's rendezvous: rank 0's kernel picks a free port and publishes it with a nonce."""

import threading
import time
from datetime import timedelta

import pytest
from torch.distributed import TCPStore

from pipeline.launch_submitit import rendezvous_store


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

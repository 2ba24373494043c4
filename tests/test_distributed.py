"""training/distributed.py: every rank gets the same number of non-empty batches, and ranks that disagree are
stopped (two real gloo processes). The end-to-end run with torchrun is in tests/test_training.py."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch.multiprocessing as mp

from training.distributed import Distributed, check_agreement, rank_batches, steps_per_epoch


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 4, 16, 10])
def test_every_rank_gets_the_same_number_of_non_empty_batches(world_size, batch_size):
    for epoch_size in range(0, 70):
        order = np.random.default_rng(epoch_size).permutation(epoch_size)
        per_rank = [rank_batches(order, batch_size, Distributed(rank, world_size)) for rank in range(world_size)]
        expected = steps_per_epoch(epoch_size, batch_size, world_size)
        assert [len(batches) for batches in per_rank] == [expected] * world_size, (epoch_size, batch_size, world_size)
        assert all(len(batch) > 0 for batches in per_rank for batch in batches)
        dealt = np.concatenate([b for batches in per_rank for b in batches]) if expected else np.zeros(0, int)
        assert set(dealt.tolist()) == set(order.tolist())  # every sample of the epoch is trained on
        assert len(dealt) - epoch_size < world_size  # padding: fewer repeats than ranks


def test_one_process_cuts_the_order_into_plain_batches():
    order = np.arange(37)
    batches = rank_batches(order, 16, Distributed())
    assert [b.tolist() for b in batches] == [list(range(16)), list(range(16, 32)), list(range(32, 37))]
    assert steps_per_epoch(37, 16, 1) == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agreement_worker(rank: int, world_size: int, port: int, values: list[dict], results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        check_agreement(Distributed(rank, world_size), "epoch 1", values[rank])
        results.put((rank, "agreed"))
    except RuntimeError as error:
        results.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


def run_agreement(values: list[dict]) -> dict[int, str]:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=agreement_worker, args=(rank, 2, port, values, results)) for rank in range(2)]
    for process in processes:
        process.start()
    try:
        answers = dict(results.get(timeout=120) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return answers


@pytest.mark.slow
def test_ranks_that_drift_apart_are_stopped_on_every_rank():
    same = {"steps": 3, "schedule_steps": [6, 6], "parameters": 1.25}
    assert run_agreement([same, dict(same)]) == {0: "agreed", 1: "agreed"}
    answers = run_agreement([same, {**same, "schedule_steps": [5, 5]}])
    for rank in (0, 1):
        assert "disagree after epoch 1" in answers[rank] and "rank 1: {'steps': 3, 'schedule_steps': [5, 5]" in answers[rank]

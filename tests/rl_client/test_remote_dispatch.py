"""Which server a prompt group goes to (`least_in_flight`, the remote engine's data-parallel
dispatch): the fewest requests in flight wins; ties go in order from the process's rank."""

from __future__ import annotations

import pytest

from rl_client.engines.vllm_remote import least_in_flight


@pytest.mark.parametrize(
    ("in_flight", "rank", "server"),
    [
        ([3, 1, 2], 0, 1),  # the least loaded, whatever the rank
        ([3, 1, 2], 2, 1),
        ([0, 0, 0], 0, 0),  # all idle: start at the rank's own server
        ([0, 0, 0], 1, 1),
        ([0, 0, 0], 4, 1),  # rank 4 of a job with 3 servers: 4 mod 3
        ([2, 1, 1], 0, 1),  # a tie between 1 and 2: the first from rank 0's offset is 1
        ([2, 1, 1], 2, 2),  # from rank 2's offset the order is 2, 0, 1
    ],
)
def test_least_in_flight(in_flight: list[int], rank: int, server: int) -> None:
    assert least_in_flight(in_flight, rank) == server


def test_groups_of_one_rank_alternate_and_ranks_start_apart() -> None:
    # Each group's G=4 samples join the server its first sample picked (prefix cache).
    def dispatch(groups: int, rank: int, servers: int) -> list[int]:
        in_flight = [0] * servers
        chosen = []
        for _ in range(groups):
            index = least_in_flight(in_flight, rank)
            in_flight[index] += 4
            chosen.append(index)
        return chosen

    assert dispatch(4, rank=0, servers=2) == [0, 1, 0, 1]
    # Two ranks with one group each on two servers: without the offset both would use 0.
    assert [dispatch(1, rank=r, servers=2)[0] for r in (0, 1)] == [0, 1]

"""An endless, resumable stream of clean batches, identical on every rank up to each rank's share.

Each draw takes one *global* batch of indices (``per_device × world`` examples, or the whole clean set if it
is smaller) and gives rank ``r`` the strided slice ``[r::world]``; one process with a ``world``-times larger
clean batch therefore sees exactly the same examples. The order depends only on ``(seed, epoch)``; the state
is ``(epoch, batches drawn in it)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

IndexBatches = Callable[[int], Iterator[list[int]]]


def shuffled_index_batches(size: int, global_batch_size: int, seed: int) -> IndexBatches:
    """Per epoch, a seeded permutation of ``range(size)`` cut into full batches (a short remainder is dropped)."""

    def batches(epoch: int) -> Iterator[list[int]]:
        order = np.random.default_rng([seed, epoch]).permutation(size).tolist()
        for start in range(0, size - global_batch_size + 1, global_batch_size):
            yield order[start : start + global_batch_size]

    return batches


class CleanBatchStream:
    """Draws clean batches forever (reshuffling per epoch) and remembers where it is.

    Args:
        dataset: an indexable dataset (``dataset[i]`` is one example).
        collate_fn: turns a list of examples into a batch.
        index_batches: ``epoch -> iterator of global index lists``.
        rank, world_size: this process's share of each global batch.
    """

    def __init__(
        self,
        dataset: Any,
        collate_fn: Callable[[list[Any]], Any],
        index_batches: IndexBatches,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"CleanBatchStream: rank {rank} is not in [0, world_size={world_size}).")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.index_batches = index_batches
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.drawn = 0
        self._iterator: Iterator[list[int]] | None = None

    def _restart(self) -> None:
        self._iterator = self.index_batches(self.epoch)
        for _ in range(self.drawn):
            next(self._iterator)

    def next_indices(self) -> list[int]:
        """This rank's indices of the next global batch."""
        if self._iterator is None:
            self._restart()
        for _ in range(2):
            indices = next(self._iterator, None)
            if indices is not None:
                self.drawn += 1
                return self._share(indices)
            self.epoch += 1
            self.drawn = 0
            self._restart()
        raise ValueError("The clean set yields no batch: it is smaller than one clean batch per rank.")

    def _share(self, indices: Sequence[int]) -> list[int]:
        share = list(indices)[self.rank :: self.world_size]
        if not share:
            raise ValueError(
                f"A clean batch of {len(indices)} examples leaves rank {self.rank} of {self.world_size} with none; "
                "give the clean set at least one example per process."
            )
        return share

    def next_batch(self) -> Any:
        return self.collate_fn([self.dataset[i] for i in self.next_indices()])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.drawn = int(state["drawn"])
        self._iterator = None

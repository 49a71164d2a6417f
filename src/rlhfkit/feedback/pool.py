"""In-memory view of one campaign's tasks for choosing the next assignment in microseconds.

It is a hint, never the authority: every candidate it proposes is checked against the database in
the writer's transaction (not served to this annotator, fewer than k holding assignments) before an
assignment is inserted, and the unique (task, annotator) constraint still guards the insert. When the
pool runs dry or goes stale it is rebuilt from the database, which also drops expired assignments.

Order of preference is the store's rule: a gold task with probability ``gold_rate`` (or when no regular
task is left), otherwise the regular task with the most holding assignments (so tasks complete),
ties broken at random.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator


class TaskPool:
    """Holding counts of regular tasks in buckets by count, gold tasks, and what each annotator was served."""

    def __init__(self, *, redundancy: int, gold_rate: float, tasks: Iterable[tuple[int, bool]],
                 taken: dict[int, int]) -> None:
        self.redundancy = redundancy
        self.gold_rate = gold_rate
        self.gold: list[int] = []
        self.count: dict[int, int] = {}
        self._buckets: list[list[int]] = [[] for _ in range(redundancy)]
        self._pos: dict[int, int] = {}
        self.served: dict[int, set[int]] = {}
        self.built_at = time.monotonic()
        for task_id, is_gold in tasks:
            if is_gold:
                self.gold.append(task_id)
            else:
                self.count[task_id] = 0
                self._place(task_id)
        for task_id, n in taken.items():
            if task_id in self.count:
                self.set_taken(task_id, n)

    # ------------------------------------------------------------------ bucket bookkeeping

    def _place(self, task_id: int) -> None:
        n = self.count[task_id]
        if n < self.redundancy:
            bucket = self._buckets[n]
            self._pos[task_id] = len(bucket)
            bucket.append(task_id)

    def _remove(self, task_id: int) -> None:
        pos = self._pos.pop(task_id, None)
        if pos is None:
            return
        bucket = self._buckets[self.count[task_id]]
        last = bucket.pop()
        if last != task_id:
            bucket[pos] = last
            self._pos[last] = pos

    def set_taken(self, task_id: int, n: int) -> None:
        """Record that a regular task has ``n`` holding assignments (answered, or open and unexpired)."""
        if task_id not in self.count:
            return
        self._remove(task_id)
        self.count[task_id] = max(0, n)
        self._place(task_id)

    def record(self, task_id: int, annotator_id: int) -> None:
        """An assignment of ``task_id`` to ``annotator_id`` was inserted."""
        self.served.setdefault(annotator_id, set()).add(task_id)
        if task_id in self.count:
            self.set_taken(task_id, self.count[task_id] + 1)

    def unrecord(self, task_id: int, annotator_id: int) -> None:
        """Undo :meth:`record` (the assignment was not inserted after all)."""
        self.served.get(annotator_id, set()).discard(task_id)
        if task_id in self.count:
            self.set_taken(task_id, self.count[task_id] - 1)

    def release(self, task_id: int) -> None:
        """An assignment of ``task_id`` stopped holding its slot (skipped)."""
        if task_id in self.count:
            self.set_taken(task_id, self.count[task_id] - 1)

    @property
    def open_slots(self) -> int:
        """Regular tasks that still have a free slot (for tests and reports)."""
        return sum(len(b) for b in self._buckets)

    # ------------------------------------------------------------------ choosing

    def candidates(self, annotator_id: int, rng: random.Random) -> Iterator[int]:
        """Task ids to try for this annotator, best first (the caller checks each in the database)."""
        served = self.served.get(annotator_id, set())
        gold_first = bool(self.gold) and rng.random() < self.gold_rate
        if gold_first:
            yield from self._gold(served, rng)
        for n in range(self.redundancy - 1, -1, -1):
            yield from self._from_bucket(n, served, rng)
        if not gold_first:
            yield from self._gold(served, rng)

    def _gold(self, served: set[int], rng: random.Random) -> Iterator[int]:
        unseen = [t for t in self.gold if t not in served]
        rng.shuffle(unseen)
        yield from unseen

    def _from_bucket(self, n: int, served: set[int], rng: random.Random) -> Iterator[int]:
        bucket = self._buckets[n]
        for _ in range(8):  # a few random draws first: cheap while most tasks are unseen by this annotator
            if not bucket:
                return
            task_id = bucket[rng.randrange(len(bucket))]
            if task_id not in served:
                yield task_id
        rest = [t for t in bucket if t not in served]
        rng.shuffle(rest)
        for task_id in rest:
            if self._pos.get(task_id) is not None and self.count.get(task_id) == n:
                yield task_id

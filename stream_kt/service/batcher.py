"""Micro-batch planning: which events of one poll can share one model step.  Pure.

A model step applies one interaction to each row, so one student may appear at most
once per step.  ``rounds`` splits a poll's events into rounds: round k holds every
student's k-th event of the poll, so each student's events are applied in the order
they were produced (a student's events share a partition, which Kafka keeps in order)
while different students share a step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def rounds(events: Sequence[T], student: Callable[[T], Hashable]) -> list[list[T]]:
    """Split ``events`` (in consumption order) into rounds with at most one event per student.

    Round k lists students in the order their k-th events appear in ``events``.
    """
    out: list[list[T]] = []
    seen: dict[Hashable, int] = {}  # student -> how many of their events are placed
    for event in events:
        key = student(event)
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(event)
    return out

"""Simulated students, in the spirit of the DKT paper's synthetic data.

Each item tests one latent concept and has a difficulty; each student has an ability
per concept.  P(correct) = guess + (1 - guess) * sigmoid(ability[concept] - difficulty),
and practising a concept raises the ability (more after a correct answer): students
learn over time, so a good knowledge tracer beats per-item averages.  Students work in
runs on one concept before switching, as in a tutor's skill-builder sets.

The item bank (each item's concept and difficulty) comes from ``bank_seed``, the
students from ``seed``: data sets of different seeds are of the same items, so a model
trained on one scores another.  (The students' random stream still draws a bank of its
own first and discards it, so ``seed=S, bank_seed=S`` writes exactly what ``seed=S``
wrote when the seed drew both, and seed 0 is unchanged.)

Each answer also has a response time (``elapsed_ms``): log-normal around 20 s, shorter
the more likely the student was to know the answer (``time_signal`` sets how much), so
the time spent tells a little more about the student's knowledge than the 0/1 answer
alone.  It comes from its own random stream: items, answers and timestamps are the
same whatever ``time_signal`` is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_kt.data.sequences import StudentSequence


@dataclass(frozen=True)
class SyntheticConfig:
    students: int = 400
    concepts: int = 5
    items: int = 50
    min_length: int = 20
    max_length: int = 160
    learn_rate: float = 0.12  # ability gained per practice (half of it after a wrong answer)
    guess: float = 0.1
    stay_on_concept: float = 0.8  # probability the next item tests the same concept
    seed: int = 0  # the students: abilities, lengths, paths, answers, timestamps
    bank_seed: int = 0  # the items' difficulties: the same bank whatever the seed
    start_ts_ms: int = 1_700_000_000_000
    time_signal: float = 1.5  # log-seconds of response time per unit of P(correct); 0: times say nothing


def item_bank(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(concept, difficulty) of each item: item ``i`` tests concept ``i % concepts``; difficulties are drawn from ``bank_seed``."""
    return np.arange(config.items) % config.concepts, np.random.default_rng(config.bank_seed).normal(0.0, 1.0, config.items)


def generate(config: SyntheticConfig = SyntheticConfig()) -> list[StudentSequence]:
    rng = np.random.default_rng(config.seed)
    time_rng = np.random.default_rng([config.seed, 1])  # response times: a stream of their own
    item_concept, difficulty = item_bank(config)
    rng.normal(0.0, 1.0, config.items)  # discarded: the students' draws stay those of before the bank had a seed of its own
    items_of = [np.flatnonzero(item_concept == c) for c in range(config.concepts)]
    students = []
    for k in range(config.students):
        ability = rng.normal(-0.5, 1.0, config.concepts)
        length = int(rng.integers(config.min_length, config.max_length + 1))
        concept = int(rng.integers(config.concepts))
        ts = config.start_ts_ms + int(rng.integers(0, 86_400_000))
        items, correct, stamps, elapsed = [], [], [], []
        for _ in range(length):
            if rng.random() > config.stay_on_concept:
                concept = int(rng.integers(config.concepts))
            item = int(rng.choice(items_of[concept]))
            p = config.guess + (1 - config.guess) / (1 + np.exp(-(ability[concept] - difficulty[item])))
            answer = int(rng.random() < p)
            elapsed.append(int(1000 * np.exp(np.log(20.0) - config.time_signal * (p - 0.5) + time_rng.normal(0.0, 0.3))))
            ability[concept] += config.learn_rate * (1.0 if answer else 0.5)
            ts += int(rng.integers(5_000, 120_000))
            items.append(str(item))
            correct.append(answer)
            stamps.append(ts)
        students.append(StudentSequence(f"synthetic:{k}", tuple(items), tuple(correct), ts_ms=tuple(stamps), elapsed_ms=tuple(elapsed)))
    return students

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

With ``max_skills`` above 1 (``generate_sets``) the bank is of *questions* with skill
sets: question ``q`` tests 1 to ``max_skills`` of the ``concepts`` skills (drawn from
``bank_seed``: a known question -> skills map, ``question_skills``), each skill has a
difficulty and a learning rate of its own, and each question a difficulty
(``question_spread``: its standard deviation; 0, none).  The rule is compensatory:

    P(correct) = guess + (1 - guess)
                 * sigmoid(mean over its skills s of (ability[s] - difficulty[s]) - question difficulty)

and every skill of the answered question is practised (its rate, half after a wrong
answer).  Students work in runs on one skill, answering questions that test it.  An
answer's item id is its skills joined by ``_`` and its question id is ``q<index>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_kt.data.sequences import SKILL_SEPARATOR, StudentSequence


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
    # above 1: questions with 1..max_skills skills each (generate_sets); ``items`` is then the number of questions
    max_skills: int = 1
    question_spread: float = 0.0  # with max_skills > 1: standard deviation of the questions' own difficulties


def item_bank(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(concept, difficulty) of each item: item ``i`` tests concept ``i % concepts``; difficulties are
    drawn from ``bank_seed``."""
    return np.arange(config.items) % config.concepts, np.random.default_rng(config.bank_seed).normal(
        0.0, 1.0, config.items
    )


def generate(config: SyntheticConfig = SyntheticConfig()) -> list[StudentSequence]:
    """Simulated students: one concept an item (the DKT paper's setting), or questions with skill
    sets when ``max_skills`` > 1."""
    if config.max_skills > 1:
        return generate_sets(config)
    rng = np.random.default_rng(config.seed)
    time_rng = np.random.default_rng([config.seed, 1])  # response times: a stream of their own
    item_concept, difficulty = item_bank(config)
    rng.normal(
        0.0, 1.0, config.items
    )  # discarded: the students' draws stay those of before the bank had a seed of its own
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
            elapsed.append(
                int(1000 * np.exp(np.log(20.0) - config.time_signal * (p - 0.5) + time_rng.normal(0.0, 0.3)))
            )
            ability[concept] += config.learn_rate * (1.0 if answer else 0.5)
            ts += int(rng.integers(5_000, 120_000))
            items.append(str(item))
            correct.append(answer)
            stamps.append(ts)
        students.append(
            StudentSequence(
                f"synthetic:{k}", tuple(items), tuple(correct), ts_ms=tuple(stamps), elapsed_ms=tuple(elapsed)
            )
        )
    return students


@dataclass(frozen=True)
class QuestionBank:
    """The questions of ``generate_sets``: what a model is meant to recover."""

    skills: list[np.ndarray]  # per question: its skill indices, sorted
    question_difficulty: np.ndarray  # (items,)
    skill_difficulty: np.ndarray  # (concepts,)
    learn_rate: np.ndarray  # (concepts,) ability gained per practice

    def skill_set_id(self, question: int) -> str:
        return SKILL_SEPARATOR.join(str(s) for s in self.skills[question])


def question_bank(config: SyntheticConfig) -> QuestionBank:
    """The question bank of ``generate_sets``, from ``bank_seed`` alone."""
    if not 1 <= config.max_skills <= config.concepts:
        raise ValueError(
            f"max_skills must be between 1 and the number of skills ({config.concepts}), got {config.max_skills}"
        )
    rng = np.random.default_rng([config.bank_seed, 2])
    sizes = rng.integers(1, config.max_skills + 1, config.items)
    skills = [np.sort(rng.choice(config.concepts, size, replace=False)) for size in sizes]
    return QuestionBank(
        skills,
        rng.normal(0.0, config.question_spread, config.items) if config.question_spread > 0 else np.zeros(config.items),
        rng.normal(0.0, 1.0, config.concepts),
        config.learn_rate * rng.uniform(0.5, 1.5, config.concepts),
    )


def question_skills(config: SyntheticConfig) -> dict[str, list[str]]:
    """The known question -> skills map of ``generate_sets``'s questions, as raw ids."""
    bank = question_bank(config)
    return {f"q{q}": [str(s) for s in skills] for q, skills in enumerate(bank.skills)}


def generate_sets(config: SyntheticConfig) -> list[StudentSequence]:
    """Students answering questions with skill sets (the module docstring's rule)."""
    bank = question_bank(config)
    rng = np.random.default_rng([config.seed, 3])
    time_rng = np.random.default_rng([config.seed, 4])
    testing = [np.flatnonzero([skill in skills for skills in bank.skills]) for skill in range(config.concepts)]
    practised = [s for s in range(config.concepts) if len(testing[s])]
    students = []
    for k in range(config.students):
        ability = rng.normal(-0.5, 1.0, config.concepts)
        length = int(rng.integers(config.min_length, config.max_length + 1))
        focus = int(rng.choice(practised))
        ts = config.start_ts_ms + int(rng.integers(0, 86_400_000))
        items, questions, correct, stamps, elapsed = [], [], [], [], []
        for _ in range(length):
            if rng.random() > config.stay_on_concept:
                focus = int(rng.choice(practised))
            question = int(rng.choice(testing[focus]))
            skills = bank.skills[question]
            logit = float(np.mean(ability[skills] - bank.skill_difficulty[skills]) - bank.question_difficulty[question])
            p = config.guess + (1 - config.guess) / (1 + np.exp(-logit))
            answer = int(rng.random() < p)
            elapsed.append(
                int(1000 * np.exp(np.log(20.0) - config.time_signal * (p - 0.5) + time_rng.normal(0.0, 0.3)))
            )
            ability[skills] += bank.learn_rate[skills] * (1.0 if answer else 0.5)
            ts += int(rng.integers(5_000, 120_000))
            items.append(bank.skill_set_id(question))
            questions.append(f"q{question}")
            correct.append(answer)
            stamps.append(ts)
        students.append(
            StudentSequence(
                f"synthetic:{k}",
                tuple(items),
                tuple(correct),
                ts_ms=tuple(stamps),
                elapsed_ms=tuple(elapsed),
                questions=tuple(questions),
            )
        )
    return students

"""The modelled vocabulary: raw item ids <-> model indices.

Built from the training file's students and saved with the checkpoint, so the stream
maps ids exactly as training did.  An id the model has never seen has no index:
offline evaluation drops such interactions (they are neither input nor scored, and
their count is reported as ``n_unknown``); the stream sends such events to the
dead-letter topic with reason ``unknown_item``.

An answer to a question with several skills (raw id ``"10_23"``) becomes model input
one of three ways (``skills``, one of ``SKILL_MODES``):

* ``combined``: the set is a vocabulary entry of its own (what the ASSISTments reader
  always did, and Xiong et al.'s ``0910_c``): nothing transfers between a set and its parts;
* ``sets``: the vocabulary is of single skills and an answer is its set, a row of
  ``max_skills`` indices padded with V (``EncodedSequence.items`` is (n, K)); a skill
  the vocabulary lacks is left out of the set, and an answer with none is unknown;
* ``first``: the set's first skill alone (the baseline that ignores the others).

The mastery vector is one value per entry.  With ``questions`` (question ids seen in
training; index 0 is "none or unseen"), ``EncodedSequence.questions`` carries each
answer's question index for models that read it.  Wherever the training students have
question ids, ``question_skills`` maps each question to the skill set it was seen with
(most often), so an event that names only its question can be given its skills.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from stream_kt.data.sequences import StudentSequence, id_sort_key, interaction_times, skills_of
from stream_kt.errors import CheckpointError, ConfigError, DataError

SKILL_MODES = ("combined", "sets", "first")
MAX_SKILLS = 4  # the widest skill set a "sets" vocabulary keeps per answer (its first ones)


@dataclass(frozen=True)
class EncodedSequence:
    """A student's interactions as model indices (unknown items removed)."""

    student_id: str
    items: np.ndarray  # (n,) int64 indices into the vocabulary
    correct: np.ndarray  # (n,) int64 0/1
    n_unknown: int = 0
    times: np.ndarray | None = None  # (n, 2) float32 [elapsed, lag] seconds, where the source has them
    # (n,) int64 question index (0: none or unseen), where the vocabulary has questions
    questions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Vocabulary:
    item_column: str
    ids: tuple[str, ...]
    names: dict[str, str] = field(default_factory=dict, compare=False)
    skills: str = "combined"  # one of SKILL_MODES
    max_skills: int = 1  # K: the width of an answer's row of skills ("sets")
    questions: tuple[str, ...] = ()  # question ids seen in training: index q + 1
    question_skills: dict[str, str] = field(
        default_factory=dict, compare=False
    )  # question id -> its skill set's raw id

    def __post_init__(self) -> None:
        if self.skills not in SKILL_MODES:
            raise ValueError(f"skills {self.skills!r}: choose one of {', '.join(SKILL_MODES)}")
        object.__setattr__(self, "_index", {raw: i for i, raw in enumerate(self.ids)})
        object.__setattr__(self, "_question_index", {raw: i + 1 for i, raw in enumerate(self.questions)})

    @classmethod
    def build(
        cls,
        students: Iterable[StudentSequence],
        item_column: str,
        names: dict[str, str] | None = None,
        skills: str = "combined",
        questions: bool = False,
        max_skills: int = MAX_SKILLS,
    ) -> Vocabulary:
        """The vocabulary of ``students``: entries as ``skills`` says; with ``questions``, their question ids too
        (``DataError`` when they have none).  ``max_skills`` caps a set's width: a larger set keeps its first ones."""
        students = list(students)
        if skills not in SKILL_MODES:
            raise ConfigError(f"skills {skills!r}: choose one of {', '.join(SKILL_MODES)}")
        raw = {item for s in students for item in s.items}
        if skills == "combined":
            seen = raw
        else:
            seen = {skill for item in raw for skill in (skills_of(item) if skills == "sets" else skills_of(item)[:1])}
        ids = tuple(sorted(seen, key=id_sort_key))
        width = min(max((len(skills_of(item)) for item in raw), default=1), max_skills) if skills == "sets" else 1
        known_names = {k: v for k, v in (names or {}).items() if k in seen}
        if questions and not any(s.questions is not None for s in students):
            raise DataError(
                "--questions: these students have no question ids (the 3-line format has none; use ASSISTments CSV, "
                "csv with question_id, or pyKT's format)"
            )
        counts: dict[
            str, dict[str, int]
        ] = {}  # question -> skill set -> answers: the map, whether or not the model reads questions
        for s in students:
            for question, item in zip(s.questions or (), s.items):
                if question:
                    by_item = counts.setdefault(question, {})
                    by_item[item] = by_item.get(item, 0) + 1
        question_skills = {q: max(by_item, key=lambda item: (by_item[item], item)) for q, by_item in counts.items()}
        indexed = tuple(sorted(counts, key=id_sort_key)) if questions else ()
        return cls(item_column, ids, known_names, skills, width, indexed, question_skills)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def one_entry_an_answer(self) -> bool:
        """Combined skills and no question ids: what every vocabulary was before skill sets
        (saved and versioned as then)."""
        return self.skills == "combined" and not self.questions and not self.question_skills

    def index(self, raw_id: object) -> int | None:
        """Model index of a raw id (int or str), or None when the model has never seen it."""
        return self._index.get(str(raw_id).strip())  # type: ignore[attr-defined]

    def question_index(self, raw_id: str) -> int:
        """Index of a question id: 1.. for one seen in training, 0 for none or an unseen one (the model
        falls back to its skills)."""
        return self._question_index.get(raw_id.strip(), 0)  # type: ignore[attr-defined]

    def entry(self, item: str) -> int | list[int] | None:
        """The model's input for an answer's raw item id: an index ("combined", "first"), a list of up to
        ``max_skills`` skill indices ("sets"), or None when the vocabulary knows none of it."""
        if self.skills == "combined":
            return self.index(item)
        parts = skills_of(str(item).strip())
        if self.skills == "first":
            return self.index(parts[0]) if parts else None
        known = [index for part in parts if (index := self.index(part)) is not None][: self.max_skills]
        return known or None

    def name(self, index: int) -> str:
        raw = self.ids[index]
        return self.names.get(raw, raw)

    def encode(self, student: StudentSequence) -> EncodedSequence:
        entries = [self.entry(item) for item in student.items]
        known = [k for k, entry in enumerate(entries) if entry is not None]
        keep = lambda column: None if column is None else [column[k] for k in known]  # noqa: E731
        if self.skills == "sets":
            items = np.full((len(known), self.max_skills), len(self.ids), np.int64)  # padded with V
            for row, k in enumerate(known):
                entry = cast(list[int], entries[k])
                items[row, : len(entry)] = entry
        else:
            items = np.fromiter((cast(int, entries[k]) for k in known), dtype=np.int64, count=len(known))
        questions = None
        if self.questions:
            raw = student.questions or ("",) * len(student)
            questions = np.fromiter((self.question_index(raw[k]) for k in known), dtype=np.int64, count=len(known))
        return EncodedSequence(
            student.student_id,
            items,
            np.fromiter((student.correct[k] for k in known), dtype=np.int64, count=len(known)),
            n_unknown=len(student.items) - len(known),
            # lags between the kept interactions: the stream never applies an unknown item either
            times=interaction_times(keep(student.ts_ms), keep(student.elapsed_ms)),
            questions=questions,
        )

    def save(self, path: Path) -> None:
        saved: dict[str, object] = {"item_column": self.item_column, "ids": list(self.ids), "names": self.names}
        if not self.one_entry_an_answer:
            saved.update(
                skills=self.skills,
                max_skills=self.max_skills,
                questions=list(self.questions),
                question_skills=self.question_skills,
            )
        path.write_text(json.dumps(saved))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(path.read_text())
            return cls(
                data["item_column"],
                tuple(data["ids"]),
                data.get("names", {}),
                data.get("skills", "combined"),
                data.get("max_skills", 1),
                tuple(data.get("questions", ())),
                data.get("question_skills", {}),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: not a stream-kt vocabulary ({exc})") from None

"""A synthetic multi-skill stream on Apache Kafka: questions with up to 4 skills, sent as ``skill_ids`` lists
(some events naming only their ``question_id``), served by checkpoints of combined skill sets, of skill sets
(every model that takes them), and of skill sets with question ids."""

from __future__ import annotations

import asyncio
import uuid

import msgpack
import numpy as np
import pytest
import torch

from stream_kt.checkpoint import load_checkpoint, save_checkpoint
from stream_kt.data.sequences import interaction_times
from stream_kt.data.split import Split
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import MODELS, build_model, vocabulary_fields

from .conftest import TopicReader, dedupe_outputs, produce, running_processor

BANK = SyntheticConfig(
    students=6, items=25, concepts=6, max_skills=4, question_spread=1.0, min_length=20, max_length=40
)


SMALL = {
    "dkt": {"embed_dim": 8, "hidden_size": 16, "dropout": 0.0},
    "dkt_plus": {"embed_dim": 8, "hidden_size": 16, "dropout": 0.0},
}
SET_MODELS = sorted(name for name, cls in MODELS.items() if cls.takes_skill_sets)
QUESTION_MODELS = sorted(name for name, cls in MODELS.items() if cls.takes_skill_sets and cls.uses_questions)


def multi_skill_checkpoint(out_dir, skills: str = "combined", questions: bool = False, name: str = "dkt"):
    students = generate(SyntheticConfig(**{**BANK.__dict__, "students": 80}))  # enough to answer every question
    vocab = Vocabulary.build(students, "skill_id", skills=skills, questions=questions)
    assert len(vocab.question_skills) == BANK.items
    torch.manual_seed(0)
    fields = vocabulary_fields(name, len(vocab), vocab.max_skills, len(vocab.questions))
    model = build_model(name, **fields, **SMALL.get(name, {}))
    for parameter_name, parameter in model.named_parameters():
        if "question" in parameter_name:  # trained offsets are not 0: a stream that dropped the questions would differ
            with torch.no_grad():
                parameter.normal_(std=1.0)
                parameter[0] = 0.0  # question 0, none or unseen: the skills alone
    save_checkpoint(
        out_dir, model, vocab, Split(("synthetic:0",), (), (), 0, "holdout"), {"note": "random init, tests only"}
    )
    return load_checkpoint(out_dir)


STREAMED = [
    ("dkt", "combined", False),
    *((name, "sets", False) for name in SET_MODELS),
    *((name, "sets", True) for name in QUESTION_MODELS),
]


@pytest.mark.parametrize(
    ("name", "skills", "questions"), STREAMED, ids=[f"{n}-{s}{'-questions' if q else ''}" for n, s, q in STREAMED]
)
def test_skill_set_events_are_answered_once_as_the_model_steps_them_and_bad_lists_are_dead_letters(
    broker, make_settings, tmp_path, name, skills, questions
):
    checkpoint = multi_skill_checkpoint(tmp_path / "checkpoint", skills, questions, name)
    settings = make_settings(partitions=2)
    students = generate(SyntheticConfig(**{**BANK.__dict__, "seed": 5}))  # new students, the same questions
    run = uuid.uuid4().hex[:6]
    rng = np.random.default_rng(0)
    messages, sent = [], {}  # sent: student -> [(item_id, correct, ts, question)] of the valid events, in order
    for s in students:
        student = f"{run}-{s.student_id}"
        for k, (item, correct, ts, question) in enumerate(zip(s.items, s.correct, s.ts_ms, s.questions)):
            skills = item.split("_")
            event: dict = {"student_id": student, "correct": correct, "ts": ts}
            if k % 3 == 0:
                event["question_id"] = question  # the checkpoint's map names its skills
            else:
                event["skill_ids"] = [int(x) for x in rng.permutation(skills)]  # any order, integers
                event["question_id"] = question
            messages.append((student.encode(), msgpack.packb(event)))
            sent.setdefault(student, []).append((item, correct, ts, question))
    bad = [
        ({"skill_ids": []}, "bad_skills"),
        ({"skill_ids": [1, 1]}, "bad_skills"),
        ({"skill_ids": "1_2"}, "bad_skills"),
        ({"skill_ids": [0, 1], "skill_id": 0}, "bad_skills"),
        ({"question_id": "no-such-question"}, "unknown_item"),
    ]
    for fields, _ in bad:
        messages.insert(
            len(messages) // 2, (b"bad", msgpack.packb({"student_id": "bad", "correct": 1, "ts": 1, **fields}))
        )

    async def scenario():
        await produce(settings, messages)
        async with (
            TopicReader(settings.bootstrap, settings.out_topic) as out,
            TopicReader(settings.bootstrap, settings.dlq_topic) as dlq,
        ):
            async with running_processor(settings, checkpoint):
                total = sum(len(v) for v in sent.values())
                await out.read_until(lambda rs: len(dedupe_outputs(rs)) >= total, timeout_s=120)
                await dlq.read_until(lambda rs: len(rs) >= len(bad), timeout_s=60)
        return out.records, dlq.records

    records, dead = asyncio.run(scenario())
    outputs = dedupe_outputs(records)
    assert set(outputs) == {
        (s, seq) for s, events in sent.items() for seq in range(1, len(events) + 1)
    }  # each valid event once
    assert sorted(dict(r.headers)["reason"].decode() for r in dead) == sorted(reason for _, reason in bad)
    model, vocab = checkpoint.model.eval(), checkpoint.vocab
    width = model.input_width
    with torch.no_grad():
        for (
            student,
            events,
        ) in sent.items():  # streamed = the model stepped over the skill sets (and questions), offline
            state = model.initial_state(1)
            times = interaction_times([ts for _, _, ts, _ in events], None)
            for seq, (item, correct, _, question) in enumerate(events, start=1):
                entry = vocab.entry(item)
                items = (
                    torch.tensor([entry + [len(vocab)] * (width - len(entry))])
                    if isinstance(entry, list)
                    else torch.tensor([entry])
                )
                asked = torch.tensor([vocab.question_index(question)]) if model.reads_questions else None
                step = model.step(state, items, torch.tensor([correct]), torch.from_numpy(times[seq - 1 : seq]), asked)
                state = step.state
                message = outputs[(student, seq)]
                assert message["item_id"] == item
                assert abs(message["p_correct"] - float(step.p_correct[0])) < 1e-5
                np.testing.assert_allclose(message["mastery"], step.mastery[0].numpy(), atol=1e-5)

"""What came out, checked against what went in and against the uninterrupted reference run.

``Tally`` indexes the collected records as they arrive (outputs by (student_id, seq),
dead letters by source) so the driver can wait for "everything sent is answered";
``check`` compares the final Redis states and every output and dead letter with the
plan and the reference.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from stream_kt.checkpoint import Checkpoint
from stream_kt.data.sequences import StudentSequence
from stream_kt.service import keys
from stream_kt.service.events import decode_mastery
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.service.state import WINDOW, StudentState, decode_state

from .traffic import Collector, DeadLetter, Sent
from .workload import Message, Reference

TOLERANCE = 1e-5


@dataclass
class Tally:
    """Outputs by (student_id, seq) and dead letters by source; repeats counted, never kept twice."""

    outputs: dict[tuple[str, int], dict] = field(default_factory=dict)
    dead_letters: dict[str, DeadLetter] = field(default_factory=dict)  # source -> first dead letter
    output_records: int = 0
    dead_letter_records: int = 0
    duplicates: int = 0
    conflicting_duplicates: list[str] = field(default_factory=list)  # a repeat whose values differ
    dead_letter_repeats: int = 0
    truncated_dead_letters: int = 0  # distinct sources whose dead letter is a truncated prefix (too big to forward)
    undecodable_outputs: int = 0

    def update(self, collector: Collector) -> None:
        """Take in what ``collector`` received since the last call."""
        done_out, done_dlq = collector.indexed
        for _key, value, _partition, _offset in collector.outputs[done_out:]:
            self.output_records += 1
            try:
                message = decode_mastery(value)
                key = (str(message["student_id"]), int(message["seq"]))
            except Exception:
                self.undecodable_outputs += 1
                continue
            first = self.outputs.get(key)
            if first is None:
                self.outputs[key] = message
                continue
            self.duplicates += 1
            if (
                first["p_correct"] != message["p_correct"]
                or first["mastery"] != message["mastery"]
                or first["event_id"] != message["event_id"]
            ):
                self.conflicting_duplicates.append(f"{key}: {first['event_id']} vs {message['event_id']}")
        for letter in collector.dead_letters[done_dlq:]:
            self.dead_letter_records += 1
            source = letter.headers.get("source", "")
            if source in self.dead_letters:
                self.dead_letter_repeats += 1  # the DLQ is at-least-once: a crash before commit sends it again
            else:
                self.dead_letters[source] = letter
                self.truncated_dead_letters += letter.headers.get("truncated") == "true"
        collector.indexed = (len(collector.outputs), len(collector.dead_letters))

    def answered(self, sent: list[Sent]) -> int:
        """How many of ``sent`` have their output (valid) or dead letter (poison)."""
        count = 0
        for s in sent:
            m = s.message
            if m.valid:
                count += (m.student_id, m.position + 1) in self.outputs
            elif m.kind == "fuzz" and m.student_id is not None:  # a fuzzed event the decoder accepts: its own student
                count += (m.student_id, 1) in self.outputs
            else:
                count += s.source in self.dead_letters
        return count


@dataclass
class Verdict:
    valid_events: int = 0
    poison_events: int = 0
    state_mismatches: int = 0
    lost: int = 0  # valid events with no output, or not applied to the final state
    output_mismatches: int = 0  # an output whose event or values differ from the reference's at that seq
    unexpected_outputs: int = 0  # a (student, seq) beyond what was sent: something applied twice
    poison_missing: int = 0
    poison_wrong_reason: int = 0
    poison_altered: int = 0  # a dead letter whose key or bytes differ from the original
    dlq_unexpected: int = 0  # a dead letter of a valid event, or of no event we sent
    fuzz_events: int = 0
    fuzz_answered: int = 0  # fuzzed messages the decoder accepts: their one output arrived
    fuzz_dead_lettered: int = 0  # the others: a dead letter with the decoder's reason, key and bytes
    fuzz_missing: int = 0  # neither
    poison_by_reason: Counter = field(default_factory=Counter)
    fuzz_by_reason: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # the first few, for the summary

    def note(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


def read_states(
    redis_url: str, prefix: str, student_ids: list[str], checkpoint: Checkpoint
) -> dict[str, StudentState | None]:
    """The stored states, read with ``checkpoint``'s vocabulary and state shapes (the model the suite serves)."""
    client = redis_client_sync(redis_url, socket_timeout_s=30)
    try:
        raw = client.mget([keys.student_key(s, prefix) for s in student_ids])
    finally:
        client.close()
    shapes = {k: tuple(v.shape[1:]) for k, v in checkpoint.model.initial_state(1).items()}
    return {
        s: None if value is None else decode_state(value, s, checkpoint.vocab.ids, shapes)
        for s, value in zip(student_ids, raw)
    }


def letter_altered(letter: DeadLetter, message: Message) -> str | None:
    """What is wrong with the dead letter of poison ``message``: it must carry the original key and bytes, or,
    when the original was too big to forward whole, a prefix of them with the original size and SHA-256."""
    original = message.value or b""
    if not letter.headers.get("detail") or letter.key != message.key:
        return "dead letter altered (key or detail)"
    if letter.headers.get("truncated") == "true":
        intact = (
            letter.headers.get("original_size") == str(len(original))
            and letter.headers.get("sha256") == hashlib.sha256(original).hexdigest()
        )
        return (
            None
            if intact and original.startswith(letter.value or b"")
            else "truncated dead letter does not identify the original"
        )
    return None if (letter.value or b"") == original else "dead letter altered (bytes)"


def check(
    tally: Tally,
    sent: list[Sent],
    sequences: dict[str, StudentSequence],
    references: dict[str, Reference],
    states: dict[str, StudentState | None],
    model_version: str,
) -> Verdict:
    verdict = Verdict()
    events: dict[str, list] = {}  # student -> its sent valid messages, in plan order
    for s in sent:
        if s.message.valid:
            events.setdefault(s.message.student_id, []).append(s.message)
    verdict.valid_events = sum(len(v) for v in events.values())

    # 1. every valid event: one output (maybe repeated, equal values) matching the reference at its seq
    lost: dict[str, set[int]] = {}  # student -> positions with no output or not in the final state
    for student, messages in events.items():
        ref = references[student]
        for message in messages:
            seq = message.position + 1
            output = tally.outputs.get((student, seq))
            if output is None:
                lost.setdefault(student, set()).add(message.position)
                verdict.note(f"lost: no output for {student} seq {seq}")
                continue
            expected_event_id = f"{student}#{message.position}"
            if (
                output["event_id"] != expected_event_id
                or output["model_version"] != model_version
                or abs(output["p_correct"] - float(ref.p_correct[message.position])) > TOLERANCE
                or not np.allclose(output["mastery"], ref.mastery[message.position], atol=TOLERANCE, rtol=0)
            ):
                verdict.output_mismatches += 1
                verdict.note(
                    f"output {student} seq {seq}: event {output['event_id']} (expected {expected_event_id}), "
                    f"p_correct {output['p_correct']:.6f} (reference {ref.p_correct[message.position]:.6f})"
                )
    sent_counts = {student: len(messages) for student, messages in events.items()}
    sent_counts.update(
        {s.message.student_id: 1 for s in sent if s.message.kind == "fuzz" and s.message.student_id is not None}
    )
    for student, seq in tally.outputs:
        if not 1 <= seq <= sent_counts.get(student, 0):
            verdict.unexpected_outputs += 1
            verdict.note(f"unexpected output {student} seq {seq} (sent {sent_counts.get(student, 0)})")

    # 2. every student's final state equals the reference's after all its events
    for student, messages in events.items():
        ref, state, sequence, n = references[student], states.get(student), sequences[student], len(messages)
        complete = n == len(sequence)  # a run cut short by its time limit sent a prefix of each student's events
        applied = 0 if state is None else state.events_applied
        lost.setdefault(student, set()).update(
            range(min(applied, n), n)
        )  # applied events are a prefix, in offset order
        problems = []
        if state is None:
            problems.append("no state")
        else:
            if state.events_applied != n:
                problems.append(f"events_applied {state.events_applied}, sent {n}")
            if state.model_version != model_version:
                problems.append(f"model {state.model_version}")
            expected_window = list(zip(sequence.items, sequence.correct, sequence.ts_ms))[:n][-WINDOW:]
            if state.window != expected_window:
                problems.append("window differs")
            for name, rows in ref.state.items() if complete else ():  # the reference keeps only the final rows
                if name not in state.model_state or not np.allclose(
                    state.model_state[name], rows, atol=TOLERANCE, rtol=0
                ):
                    problems.append(f"{name} differs")
            if state.mastery is None or not np.allclose(state.mastery, ref.mastery[n - 1], atol=TOLERANCE, rtol=0):
                problems.append("mastery differs")
        if problems:
            verdict.state_mismatches += 1
            verdict.note(f"state {student}: {', '.join(problems)}")
    verdict.lost = sum(len(positions) for positions in lost.values())

    check_dead_letters(verdict, tally, sent)
    return verdict


def check_dead_letters(verdict: Verdict, tally: Tally, sent: list[Sent]) -> None:
    """3: poison and fuzzed messages against their dead letters (or, for fuzz the decoder accepts, its output)."""
    by_source = {s.source: s.message for s in sent}
    # every poison message: one dead letter (maybe repeated) with its reason, key and bytes;
    #    a fuzzed one: the same, or, where the decoder accepts it, one output of its own student
    for s in sent:
        m = s.message
        if m.valid:
            continue
        if m.kind == "fuzz":
            verdict.fuzz_events += 1
            if m.student_id is not None:
                output = tally.outputs.get((m.student_id, 1))
                if output is None or output["event_id"] != m.event_id:
                    verdict.fuzz_missing += 1
                    verdict.note(f"fuzz at {s.source}: no output for {m.student_id!r}")
                else:
                    verdict.fuzz_answered += 1
                continue
        else:
            verdict.poison_events += 1
        letter = tally.dead_letters.get(s.source)
        if letter is None:
            if m.kind == "fuzz":
                verdict.fuzz_missing += 1
            else:
                verdict.poison_missing += 1
            verdict.note(f"poison {m.kind} at {s.source}: no dead letter")
            continue
        verdict.fuzz_dead_lettered += m.kind == "fuzz"
        reason = letter.headers.get("reason")
        (verdict.fuzz_by_reason if m.kind == "fuzz" else verdict.poison_by_reason)[reason] += 1
        if reason != m.reason:
            verdict.poison_wrong_reason += 1
            verdict.note(f"poison {m.kind} at {s.source}: reason {reason!r}, expected {m.reason!r}")
        altered = letter_altered(letter, m)
        if altered:
            verdict.poison_altered += 1
            verdict.note(f"poison {m.kind} at {s.source}: {altered}")
    for source in tally.dead_letters:
        message = by_source.get(source)
        if message is None or message.valid or (message.kind == "fuzz" and message.reason is None):
            verdict.dlq_unexpected += 1
            verdict.note(f"dead letter of {source}: {'a valid event' if message else 'no message we sent'}")

"""``evaluate --exclude-flagged``: AUC without the answers ``stream-kt audit`` flags as multi-skill
repeats, and on them alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_kt.cli import main
from stream_kt.data.audit import RepeatRule, RepeatSignature
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.prediction_metrics import auc
from stream_kt.training.evaluate import flagged_positions, split_by_flags
from tests.data.test_audit import planted, write_3line


def encoded(n: int) -> EncodedSequence:
    return EncodedSequence("s", np.zeros(n, np.int64), np.zeros(n, np.int64))


def test_flags_select_the_scored_answers_they_mark():
    sequences = [encoded(3), encoded(1), encoded(4)]  # scored: positions 1, 2 | none | 1, 2, 3
    flags = [np.array([0, 1, 0], bool), np.array([1], bool), np.array([0, 0, 1, 1], bool)]
    labels = np.array([1, 0, 1, 0, 1], np.float32)
    probs = np.array([0.05, 0.6, 0.9, 0.1, 0.7], np.float32)
    split = split_by_flags(sequences, flags, labels, probs)
    assert (split["n_flagged"], split["n_unflagged"]) == (3, 2)
    # flagged: answers 0, 3, 4 (labels 1, 0, 1): 0.05 ranks below the negative's 0.1, 0.7 above it
    assert split["auc_flagged"] == auc(labels[[0, 3, 4]], probs[[0, 3, 4]]) == 0.5
    assert split["auc_unflagged"] == auc(labels[[1, 2]], probs[[1, 2]]) == 1.0
    with pytest.raises(ValueError):
        split_by_flags(sequences, flags, labels[:4], probs[:4])


def test_flags_follow_encoding_when_it_drops_unknown_items():
    vocab = Vocabulary("skill_id", ("1", "2", "3"))
    signature = RepeatSignature(RepeatRule(), 0, 0, 0.0, [], [], 0, frozenset({("1", "2")}))
    student = StudentSequence("a", ("3", "1", "2", "9", "1", "2"), (1, 0, 0, 1, 1, 1))
    assert signature.flags(student).tolist() == [False, False, True, False, False, True]
    [flags] = flagged_positions(vocab, [student], signature)
    assert flags.tolist() == [False, False, True, False, True]  # "9" is dropped, as vocab.encode drops it
    assert len(flags) == len(vocab.encode(student))


def test_evaluate_reports_auc_without_and_on_the_flagged_answers(tmp_path, tiny_checkpoint, capsys):
    students, seconds = planted("mixed")  # items 1..11: all in the tiny checkpoint's vocabulary
    path = write_3line(tmp_path / "mixed.txt", students)
    assert main(["evaluate", "--checkpoint", tiny_checkpoint, "--test-data", path, "--exclude-flagged", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n_flagged"] == sum(map(len, seconds)) and metrics["pairs_flagged"] == 2
    assert metrics["n_flagged"] + metrics["n_unflagged"] == metrics["n"]
    assert 0.0 <= metrics["auc_unflagged"] <= 1.0 and 0.0 <= metrics["auc_flagged"] <= 1.0
    clean, _ = planted("none")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                tiny_checkpoint,
                "--test-data",
                path,
                "--exclude-flagged",
                "--flagged-from",
                write_3line(tmp_path / "clean.txt", clean),
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n_flagged"] == 0 and metrics["pairs_flagged"] == 0  # the pairs come from the clean file: none


def test_flagged_from_needs_exclude_flagged(tmp_path, tiny_checkpoint, capsys):
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                tiny_checkpoint,
                "--test-data",
                tmp_path / "x",
                "--flagged-from",
                tmp_path / "y",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == "stream-kt evaluate: error: --flagged-from needs --exclude-flagged"

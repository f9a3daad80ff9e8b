"""Fit pyBKT (EM) on the training students of a stream-kt BKT checkpoint and score the same held-out file.

Not a stream-kt dependency: run it from a separate environment (pyBKT 1.4.3 needs numpy<2 and
scikit-learn<1.6).  Build pyBKT from its source distribution: the wheel on the package index is
pure Python and its EM takes hours for 123 skills; the sdist compiles its C++ E-step (Eigen is
bundled; needs g++ and the Python headers), which fits them in seconds::

    python -m venv /tmp/pybkt && /tmp/pybkt/bin/pip install torch==2.13.0 setuptools
    /tmp/pybkt/bin/pip install scikit-learn==1.5.2 pandas==2.2.3 numpy==1.26.4 msgpack tqdm matplotlib requests
    /tmp/pybkt/bin/pip install --no-deps --no-build-isolation --no-binary pyBKT pyBKT==1.4.3
    /tmp/pybkt/bin/pip install --no-deps -e .

Scoring matches ``stream-kt evaluate``: every held-out answer but each student's first,
interactions on skills the training students never saw dropped (they have no fitted parameters).

    /tmp/pybkt/bin/python scripts/pybkt_compare.py --checkpoint runs/bkt_s0 --num-fits 5 \
        --train ../shared/data/assist2009/skill_id_train.csv --test ../shared/data/assist2009/skill_id_test.csv \
        --out benchmarks/results/pybkt_assist2009.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyBKT.models import Model

from stream_kt.checkpoint import load_checkpoint
from stream_kt.data.sequences import StudentSequence
from stream_kt.prediction_metrics import binary_metrics
from stream_kt.training.evaluate import evaluate
from stream_kt.training.prepare import load_students


def as_frame(students, known_skills: set[str] | None = None) -> pd.DataFrame:
    rows = []
    for s in students:
        position = 0
        for skill, answer in zip(s.items, s.correct):
            if known_skills is None or skill in known_skills:
                rows.append((s.student_id, skill, int(answer), position))
                position += 1
    frame = pd.DataFrame(rows, columns=["user_id", "skill_name", "correct", "position"])
    frame["order_id"] = np.arange(len(frame))  # file order is answer order within each student
    return frame


def only_skills(student: StudentSequence, skills: set[str]) -> StudentSequence:
    keep = [k for k, item in enumerate(student.items) if item in skills]
    return StudentSequence(
        student.student_id, tuple(student.items[k] for k in keep), tuple(student.correct[k] for k in keep)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, help="a stream-kt bkt checkpoint (its split names the training students)"
    )
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--num-fits", type=int, default=5, help="EM restarts per skill (pyBKT default 5)")
    parser.add_argument(
        "--skills",
        type=int,
        help="compare on a seeded random sample of this many training skills only "
        "(BKT fits every skill on its own, so a sample is a fair comparison)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the skill sample")
    parser.add_argument("--out", help="write the result JSON here")
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.checkpoint)
    by_id = {s.student_id: s for s in load_students(args.train, "3line")}
    test_students = load_students(args.test, "3line")
    sample = None
    if args.skills:
        trained = sorted({item for i in checkpoint.split.train for item in by_id[i].items})
        sample = sorted(np.random.default_rng(args.seed).choice(trained, size=args.skills, replace=False).tolist())
        by_id = {i: only_skills(s, set(sample)) for i, s in by_id.items()}
        test_students = [only_skills(s, set(sample)) for s in test_students]
    result = {
        "skills": sample or "all",
        "stream_kt_bkt": {
            k: v
            for k, v in evaluate(checkpoint.model, [checkpoint.vocab.encode(s) for s in test_students]).items()
            if k in ("auc", "acc", "rmse", "n")
        },
    }
    # pyBKT on exactly the checkpoint's training students (serial: its per-iteration process pool costs more than it
    # saves on a few cores)
    train = as_frame([by_id[i] for i in checkpoint.split.train])
    model = Model(seed=0, num_fits=args.num_fits, parallel=False)
    started = time.perf_counter()
    model.fit(data=train)
    seconds = time.perf_counter() - started
    test = as_frame(test_students, set(train["skill_name"]))
    predicted = model.predict(data=test)
    scored = predicted["position"].to_numpy() > 0  # each student's first answer is not scored
    metrics = binary_metrics(
        predicted["correct"].to_numpy()[scored], predicted["correct_predictions"].to_numpy()[scored]
    )
    result["pybkt"] = {
        **{k: metrics[k] for k in ("auc", "acc", "rmse", "n")},
        "fit_seconds": seconds,
        "num_fits": args.num_fits,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Questions with skill sets, on synthetic students whose question -> skills map is known.

    python -m benchmarks.multiskill [--seeds 3] [--students 400] [--out benchmarks/results/multiskill_synthetic.json]

The generator (``stream-kt synth --max-skills 4``; the rule in ``stream_kt.data.synthetic``)
draws questions testing 1 to 4 of the skills, skills with their own difficulty and
learning rate; with ``--question-spread`` above 0, questions with difficulties of their
own.  Each seed draws its own training and held-out students (the same question bank)
and seeds the model.  Four ways DKT can take the same answers:

* ``combined``: each skill set a vocabulary entry of its own (nothing transfers between a set and its parts);
* ``first``: the set's first skill only;
* ``sets``: the skill set (mean of its skills' embeddings in, mean of their logits out);
* ``sets+questions``: the set plus a learnt per-question offset.

Two data sets: questions without difficulties of their own (spread 0: the skills say
everything; ``combined``, ``first`` and ``sets``), and with them (spread 1: the question
matters; all four).

Protocol: every answer of a held-out student but the first is scored, predicted from
that student's earlier answers only (one prediction per answered question, before any
of its skills' answers is seen); the held-out students are not in training or early
stopping (10% of the training students).  Writes the JSON, a PNG of the AUCs and
prints a table (streamed µs: the eager one-step update, 64 students a call, one thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from stream_kt.data.split import split_students
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.data.vocab import Vocabulary
from stream_kt.training.compare import format_table, plot_auc, step_cost_us, summarise
from stream_kt.training.evaluate import evaluate
from stream_kt.training.train import TrainConfig, train

VARIANTS = {
    "combined": ("combined", False),
    "first": ("first", False),
    "sets": ("sets", False),
    "sets+questions": ("sets", True),
}
DATASETS = {"spread 0": (0.0, ("combined", "first", "sets")), "spread 1": (1.0, tuple(VARIANTS))}


def run(seeds: int, students: int, skills: int, questions: int, epochs: int, out: Path) -> dict:
    runs = []
    for data, (spread, variants) in DATASETS.items():
        for seed in range(seeds):
            bank = SyntheticConfig(concepts=skills, items=questions, max_skills=4, question_spread=spread)
            training = generate(SyntheticConfig(**{**bank.__dict__, "students": students, "seed": 100 + seed}))
            held_out = generate(SyntheticConfig(**{**bank.__dict__, "students": students // 2, "seed": 200 + seed}))
            held_out = [
                type(s)(f"test:{s.student_id}", s.items, s.correct, s.ts_ms, s.elapsed_ms, s.questions)
                for s in held_out
            ]
            split = split_students([s.student_id for s in training], seed, 0.1, 0.0, test_source="generated")
            by_id = {s.student_id: s for s in training}
            fit, valid = [by_id[i] for i in split.train], [by_id[i] for i in split.valid]
            for name in variants:
                mode, with_questions = VARIANTS[name]
                vocab = Vocabulary.build(fit + valid, "skill_id", skills=mode, questions=with_questions)
                config = TrainConfig(model="dkt", epochs=epochs, seed=seed, threads=1)
                started = time.perf_counter()
                checkpoint = train(
                    [vocab.encode(s) for s in fit],
                    [vocab.encode(s) for s in valid],
                    vocab,
                    split,
                    config,
                    out / f"{data.replace(' ', '')}_{name}_s{seed}",
                    progress=False,
                )
                seconds = time.perf_counter() - started
                scores = evaluate(checkpoint.model, [vocab.encode(s) for s in held_out])
                runs.append(
                    {
                        "data": data,
                        "model": name,
                        "seed": seed,
                        "train_seconds": seconds,
                        "vocabulary": len(vocab),
                        "best_epoch": checkpoint.metrics["best_epoch"],
                        "step_us": step_cost_us(checkpoint.model, 64),
                        **scores,
                    }
                )
                print(
                    f"{data}, seed {seed}: {name:<15} AUC {scores['auc']:.4f} (vocabulary {len(vocab)}, "
                    f"best epoch {checkpoint.metrics['best_epoch']})",
                    file=sys.stderr,
                    flush=True,
                )
    tables = {}
    for data, (_, variants) in DATASETS.items():
        mine = [r for r in runs if r["data"] == data]
        tables[data] = summarise(
            mine,
            {name: float(np.mean([r["step_us"] for r in mine if r["model"] == name])) for name in variants},
            list(variants),
        )
    return {
        "protocol": __doc__.split("Protocol: ")[1].split(" Writes")[0].replace("\n", " "),
        "generator": {"skills": skills, "questions": questions, "max_skills": 4, "training_students": students},
        "machine": platform.platform(),
        "runs": runs,
        "tables": tables,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--students", type=int, default=400, help="training students per seed (held out: half as many)")
    parser.add_argument("--skills", type=int, default=20)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--runs", default="runs/multiskill", help="directory for the checkpoints")
    parser.add_argument("--out", default="benchmarks/results/multiskill_synthetic.json")
    options = parser.parse_args(argv)
    result = run(options.seeds, options.students, options.skills, options.questions, options.epochs, Path(options.runs))
    out = Path(options.out)
    out.write_text(json.dumps(result, indent=1))
    for data, table in result["tables"].items():
        plot_auc(
            table,
            out.with_name(f"{out.stem}_{data.replace(' ', '')}_auc.png"),
            f"DKT on synthetic questions with 1-4 skills, question difficulty {data}: held-out AUC",
        )
        print(f"questions' own difficulty: {data}")
        print(format_table(table))
    print(
        json.dumps(
            {
                data: {name: round(row["auc_mean"], 4) for name, row in table.items()}
                for data, table in result["tables"].items()
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

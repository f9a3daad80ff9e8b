"""Score trained checkpoints on one held-out file, alone and as an equal-weight ensemble.

A measurement, not a served model: it tells how far averaging the probabilities of
models stream-kt already trains moves held-out AUC.  Every checkpoint is scored
exactly as ``stream-kt evaluate`` scores it (every answer but each student's first,
from all earlier answers); the checkpoints must share a vocabulary (trained on the
same training file) so their predictions line up answer by answer.

    python scripts/ensemble_eval.py --test ../shared/data/assist2009/skill_id_test.csv \
        --out benchmarks/results/ensemble_assist2009.json runs/tune/lq_s0 runs/tune/dktp_s0 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from stream_kt.errors import StreamKTError
from stream_kt.training.checkpoint import load_checkpoint
from stream_kt.training.evaluate import predict_sequences
from stream_kt.training.metrics import binary_metrics
from stream_kt.training.prepare import load_students


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--test", required=True, help="held-out file (3-line or ASSISTments CSV)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    try:
        first = load_checkpoint(args.checkpoints[0])
        encoded = [first.vocab.encode(s) for s in load_students(args.test, "auto", first.vocab.item_column)]
        members, probs = [], []
        for path in args.checkpoints:
            checkpoint = first if path == args.checkpoints[0] else load_checkpoint(path)
            if checkpoint.vocab.ids != first.vocab.ids:
                raise StreamKTError(f"{path}: vocabulary differs from {args.checkpoints[0]}: ensemble members must share a training file")
            labels, p = predict_sequences(checkpoint.model, encoded, progress=True)  # the same answers, in order, for every member
            probs.append(p)
            members.append({"checkpoint": str(path), "model": checkpoint.model.name, **binary_metrics(labels, p)})
            print(f"{path}: {checkpoint.model.name} auc {members[-1]['auc']:.4f}", file=sys.stderr)
    except StreamKTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"test": str(args.test), "n": int(len(labels)), "members": members, "ensemble": binary_metrics(labels, np.mean(probs, axis=0))}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

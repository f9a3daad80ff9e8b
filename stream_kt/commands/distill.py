"""``stream-kt distill``: a streamable student trained on a teacher checkpoint's mastery vectors (``training.distill``)."""

from __future__ import annotations

import argparse
import json
import sys

from stream_kt.commands.offline import add_data_arguments, model_options, option_pair, positive_int, students_of
from stream_kt.errors import DataError
from stream_kt.models import MODELS
from stream_kt.checkpoint import load_checkpoint, write_metrics
from stream_kt.training.distill import DistillSettings, distill, distillable
from stream_kt.training.evaluate import evaluate
from stream_kt.training.prepare import load_students
from stream_kt.training.train import TrainConfig

DEFAULT_CACHE = "runs/teacher_cache"


def alpha_list(text: str) -> tuple[float, ...]:
    try:
        alphas = tuple(float(a) for a in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if any(not 0.0 <= a <= 1.0 for a in alphas):
        raise argparse.ArgumentTypeError(f"{text!r}: every alpha must be in [0, 1]")
    return alphas


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="train a streamable student on a teacher checkpoint's mastery vectors and the observed answers")
    p.add_argument("--teacher", required=True, help="an early-stopped checkpoint (any model; an ensemble): the student trains on its training students and is chosen on its validation students")
    p.add_argument("--model", choices=sorted(name for name, cls in MODELS.items() if distillable(cls)), default="dkt_plus", help="the student (default dkt_plus)")
    add_data_arguments(p, data_required=True)
    p.add_argument("--alpha", type=alpha_list, default=DistillSettings.alphas, help="the teacher's share of the loss; several comma-separated candidates train one student each and validation AUC picks (default 0.5)")
    p.add_argument("--temperature", type=positive_float, default=DistillSettings.temperature, help="divides both sides' logits in the soft term (default 1)")
    p.add_argument("--epochs", type=positive_int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    p.add_argument("--window", type=positive_int, default=TrainConfig.window)
    p.add_argument("--patience", type=positive_int, default=TrainConfig.patience)
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    p.add_argument("--hidden-size", type=positive_int, help="model hidden size (model default if omitted)")
    p.add_argument("--option", type=option_pair, action="append", default=[], metavar="KEY=VALUE", help="a model Config field, e.g. dropout=0.3 (repeatable)")
    p.add_argument("--seed", type=int, help="initialisation and batch order (default: the teacher's split seed)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="directory of cached teacher mastery, one file per teacher and students (default %(default)s)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    teacher = load_checkpoint(args.teacher)
    settings = DistillSettings(alphas=args.alpha, temperature=args.temperature)
    options = model_options(args.model, ([("hidden_size", args.hidden_size)] if args.hidden_size else []) + args.option)
    seed = teacher.split.seed if args.seed is None else args.seed
    config = TrainConfig(model=args.model, window=args.window, batch_size=args.batch_size, epochs=args.epochs, learning_rate=args.lr, patience=args.patience, seed=seed, model_options=options)
    item = teacher.vocab.item_column
    train, valid = (students_of(args.data, args.format, item, ids) for ids in (teacher.split.train, teacher.split.valid))
    if len(train) < len(teacher.split.train) or len(valid) < len(teacher.split.valid):
        raise DataError(f"{args.data}: holds {len(train) + len(valid)} of {args.teacher}'s {len(teacher.split.train) + len(teacher.split.valid)} training and validation students; give the file it was trained on")
    print(f"distil {teacher.model.name} {teacher.version} into {args.model}: {len(train)} training, {len(valid)} validation students; alpha {', '.join(f'{a:g}' for a in settings.alphas)}", file=sys.stderr)
    student = distill(teacher, [teacher.vocab.encode(s) for s in train], [teacher.vocab.encode(s) for s in valid], config, settings, args.out, args.cache)
    held_out = held_out_students(args.test_data, args.data, args.format, item, teacher.split.test)
    if held_out:
        student.metrics["test"] = evaluate(student.model, [student.vocab.encode(s) for s in held_out], progress=True)
        write_metrics(student)
    summary = {k: student.metrics[k] for k in ("best_epoch", "valid_auc", "seconds_per_epoch")}
    summary["alpha"] = student.metrics["distill"]["alpha"]
    summary.update({f"test_{k}": v for k, v in student.metrics.get("test", {}).items() if k in ("auc", "acc", "rmse", "n")})
    print(f"checkpoint {student.version} written to {args.out}: " + json.dumps(summary))
    return 0


def held_out_students(test_data: str | None, data: str, fmt: str, item: str, held_out_ids) -> list:
    """The held-out students: the test file's, or those the split held out of ``data`` (none without either)."""
    if test_data:
        return load_students(test_data, fmt, item)
    return students_of(data, fmt, item, held_out_ids) if held_out_ids else []

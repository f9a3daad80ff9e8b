"""Offline commands: synth, train, refit, ensemble, evaluate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from stream_kt.data.readers import ITEM_COLUMNS, write_3line, write_assistments
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.errors import CheckpointError, ConfigError, DataError
from stream_kt.models import MODELS, model_class
from stream_kt.models.ensemble import Ensemble
from stream_kt.training.blend import fit_weights
from stream_kt.checkpoint import load_checkpoint, save_ensemble, write_metrics
from stream_kt.training.distill import refit_distilled
from stream_kt.training.evaluate import evaluate, predict_sequences
from stream_kt.training.metrics import auc
from stream_kt.training.parity import parity_max_abs_diff
from stream_kt.training.prepare import FORMAT_CHOICES, load_students, prepare
from stream_kt.training.train import TrainConfig, refit, train


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def option_pair(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value); the value is read as JSON (numbers, true/false), else kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def model_options(model: str, pairs: list[tuple[str, object]]) -> dict:
    """Check ``pairs`` against the model's Config fields and types: a bad one is one clear error."""
    fields = {f.name: f for f in dataclasses.fields(model_class(model).Config) if f.name != "num_items"}
    options = {}
    for key, value in pairs:
        if key not in fields:
            raise ConfigError(f"model {model} has no option {key!r}: choose from {', '.join(sorted(fields))}")
        expected = type(fields[key].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list):  # JSON has lists only (an ensemble's members)
            value = tuple(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"option {key} of model {model} expects {expected.__name__}, got {value!r}")
        options[key] = value
    return options


def add_data_arguments(parser: argparse.ArgumentParser, data_required: bool) -> None:
    parser.add_argument("--data", required=data_required, help="training data file (3-line or ASSISTments CSV, plain or .gz)")
    parser.add_argument("--test-data", help="held-out students (never used for training or early stopping)")
    parser.add_argument("--format", choices=FORMAT_CHOICES, default="auto", help="file format (default: detect from the header)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic data set (simulated students) in the 3-line format")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--students", type=positive_int, default=SyntheticConfig.students)
    p.add_argument("--items", type=positive_int, default=SyntheticConfig.items)
    p.add_argument("--concepts", type=positive_int, default=SyntheticConfig.concepts)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("3line", "assistments"), default="3line", help="3-line (items and answers only) or ASSISTments CSV (with response times)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model and write a checkpoint directory")
    add_data_arguments(p, data_required=True)
    p.add_argument("--item", choices=ITEM_COLUMNS, default="skill_id", help="modelled vocabulary (default skill_id)")
    p.add_argument("--model", choices=sorted(MODELS), default="dkt")
    p.add_argument("--epochs", type=positive_int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    p.add_argument("--window", type=positive_int, default=TrainConfig.window)
    p.add_argument("--patience", type=positive_int, default=TrainConfig.patience)
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    p.add_argument("--hidden-size", type=positive_int, help="model hidden size (model default if omitted)")
    p.add_argument("--option", type=option_pair, action="append", default=[], metavar="KEY=VALUE", help="a model Config field, e.g. dropout=0.3 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle-labels", action="store_true", help=argparse.SUPPRESS)  # leakage check: labels become noise
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("refit", help="train a checkpoint's model again on its training plus validation students, for the epochs early stopping picked (an ensemble: every member, same weights)")
    p.add_argument("--checkpoint", required=True, help="an early-stopped checkpoint, or an ensemble of them")
    add_data_arguments(p, data_required=True)
    p.add_argument("--teacher", help="a distilled checkpoint's teacher refit on the same training and validation students: the refit student learns from it (stream-kt distill)")
    p.add_argument("--cache", default="runs/teacher_cache", help="with --teacher: directory of cached teacher mastery (default %(default)s)")
    p.add_argument("--seed", type=int, help="initialisation and batch order (default: the checkpoint's); another seed measures the recipe's run-to-run spread")
    p.add_argument("--out", required=True, help="checkpoint directory to write (an ensemble's refit members go under OUT/members)")
    p.set_defaults(func=cmd_refit)

    p = sub.add_parser("ensemble", help="combine trained checkpoints into one checkpoint serving their (weighted) mean prediction")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="member checkpoint directories (same training file and held-out students)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=weight_list, help="one weight per member, comma-separated (default: equal)")
    weights.add_argument("--fit-weights", metavar="DATA", help="fit the weights on the members' validation students, read from their training file DATA")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto", help="format of DATA (default: detect)")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("evaluate", help="score held-out students with a checkpoint")
    p.add_argument("--checkpoint", required=True)
    add_data_arguments(p, data_required=False)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--parity", action="store_true", help="also stream the students event by event and report parity_max_abs_diff")
    p.set_defaults(func=cmd_evaluate)


def cmd_synth(args: argparse.Namespace) -> int:
    students = generate(SyntheticConfig(students=args.students, items=args.items, concepts=args.concepts, seed=args.seed))
    try:
        (write_assistments if args.format == "assistments" else write_3line)(students, args.out)
    except OSError as exc:
        raise DataError(f"{args.out}: cannot write ({exc.strerror})") from None
    print(f"wrote {len(students)} students, {sum(len(s) for s in students)} answers to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    data = prepare(args.data, args.format, args.item, args.test_data, args.seed)
    if args.shuffle_labels:
        data = _shuffle_labels(data, args.seed)
    options = model_options(args.model, ([("hidden_size", args.hidden_size)] if args.hidden_size else []) + args.option)
    config = TrainConfig(model=args.model, window=args.window, batch_size=args.batch_size, epochs=args.epochs, learning_rate=args.lr, patience=args.patience, seed=args.seed, model_options=options)
    print(f"{len(data.train)} training, {len(data.valid)} validation, {len(data.test)} held-out students; {len(data.vocab)} {args.item}s", file=sys.stderr)
    checkpoint = train(data.train, data.valid, data.vocab, data.split, config, args.out)
    if data.test:
        checkpoint.metrics["test"] = evaluate(checkpoint.model, data.test, progress=True)
        write_metrics(checkpoint)
    summary = {k: checkpoint.metrics[k] for k in ("best_epoch", "valid_auc", "seconds_per_epoch")}
    summary.update({f"test_{k}": v for k, v in checkpoint.metrics.get("test", {}).items() if k in ("auc", "acc", "rmse", "n")})
    print(f"checkpoint {checkpoint.version} written to {args.out}: " + json.dumps(summary))
    return 0


def cmd_refit(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.checkpoint)
    if args.teacher:
        refitted = refit_distilled_checkpoint(checkpoint, load_checkpoint(args.teacher), args.data, args.format, args.out, args.cache, args.seed)
    elif checkpoint.model.name == Ensemble.name:
        members = []
        for i, source in enumerate(checkpoint.train_config.get("ensemble_of", [])):
            member = load_checkpoint(source["checkpoint"])
            if member.version != source["version"]:
                raise CheckpointError(f"{source['checkpoint']}: holds {member.version} now, the ensemble was built from {source['version']}")
            members.append(refit_checkpoint(member, args.data, args.format, Path(args.out) / "members" / f"{i}-{member.model.name}", args.seed))
        refitted = save_ensemble(args.out, members, tuple(checkpoint.model.weights.tolist()))
        refitted.metrics["refit_of"] = {"checkpoint": str(checkpoint.path), "version": checkpoint.version}
    else:
        refitted = refit_checkpoint(checkpoint, args.data, args.format, args.out, args.seed)
    if args.test_data:
        held_out = [refitted.vocab.encode(s) for s in load_students(args.test_data, args.format, refitted.vocab.item_column)]
        refitted.metrics["test"] = evaluate(refitted.model, held_out, progress=True)
    write_metrics(refitted)
    summary = {"refit_of": checkpoint.version, "students": len(refitted.split.train)}
    summary.update({f"test_{k}": v for k, v in refitted.metrics.get("test", {}).items() if k in ("auc", "acc", "rmse", "n")})
    print(f"checkpoint {refitted.version} written to {args.out}: " + json.dumps(summary))
    return 0


def refit_checkpoint(checkpoint, data: str, fmt: str, out, seed: int | None = None):
    """``training.train.refit`` of ``checkpoint`` on its training and validation students, read from ``data``."""
    ids = checkpoint.split.train + checkpoint.split.valid
    students = students_of(data, fmt, checkpoint.vocab.item_column, ids)
    if len(students) < len(ids):
        raise DataError(f"{data}: {len(ids) - len(students)} of {checkpoint.path}'s {len(ids)} training and validation students are not in it; give the file it was trained on")
    print(f"refit {checkpoint.path} ({checkpoint.version}): {len(students)} students, {checkpoint.metrics.get('best_epoch')} epochs", file=sys.stderr)
    return refit(checkpoint, [checkpoint.vocab.encode(s) for s in students], out, seed=seed)


def refit_distilled_checkpoint(checkpoint, teacher, data: str, fmt: str, out, cache: str, seed: int | None = None):
    """``training.distill.refit_distilled`` of ``checkpoint`` against ``teacher``, on the students read from ``data``."""
    ids = checkpoint.split.train + checkpoint.split.valid
    students = students_of(data, fmt, checkpoint.vocab.item_column, ids)
    if len(students) < len(ids):
        raise DataError(f"{data}: {len(ids) - len(students)} of {checkpoint.path}'s {len(ids)} training and validation students are not in it; give the file it was trained on")
    print(f"refit {checkpoint.path} ({checkpoint.version}) against {teacher.path} ({teacher.version}): {len(students)} students, {checkpoint.metrics.get('best_epoch')} epochs", file=sys.stderr)
    return refit_distilled(checkpoint, teacher, [checkpoint.vocab.encode(s) for s in students], out, cache, seed=seed)


def _shuffle_labels(data, seed: int):
    """Replace every response with a random permutation of all responses (train, valid and test)."""
    from stream_kt.data.vocab import EncodedSequence

    rng = np.random.default_rng(seed)

    def shuffled(seqs):
        labels = rng.permutation(np.concatenate([s.correct for s in seqs]))
        out, start = [], 0
        for s in seqs:
            out.append(EncodedSequence(s.student_id, s.items, labels[start : start + len(s)], s.n_unknown))
            start += len(s)
        return out

    data.train, data.valid, data.test = shuffled(data.train), shuffled(data.valid), shuffled(data.test)
    return data


def weight_list(text: str) -> tuple[float, ...]:
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if min(weights) < 0 or sum(weights) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: weights must be non-negative and not all zero")
    return weights


def cmd_ensemble(args: argparse.Namespace) -> int:
    members = [load_checkpoint(path) for path in args.checkpoints]
    weights, fitted = args.weights or (), None
    if args.fit_weights:
        valid = validation_students(members, args.fit_weights, args.format)
        predictions = [predict_sequences(m.model, valid, progress=True) for m in members]  # same students, same order
        labels, probs = predictions[0][0], [p for _, p in predictions]
        weights, valid_auc = fit_weights(probs, labels, progress=True)
        fitted = {"students": len(valid), "answers": len(labels), "valid_auc": valid_auc, "valid_auc_equal": auc(labels, np.mean(probs, 0))}
    checkpoint = save_ensemble(args.out, members, weights, fitted)
    shares = ", ".join(f"{m['model']} {m['version']}" + (f" x {w:.2f}" if weights else "") for m, w in zip(checkpoint.metrics["members"], checkpoint.model.weights.tolist()))
    print(f"checkpoint {checkpoint.version} written to {args.out}: the {'weighted ' if weights else ''}mean of {shares}" + (f"; validation AUC {fitted['valid_auc']:.4f} (equal weights {fitted['valid_auc_equal']:.4f})" if fitted else ""))
    return 0


def validation_students(members: list, data: str, fmt: str) -> list:
    """The validation students every member shares, encoded, from their training file ``data``."""
    first = members[0]
    for member in members:
        if not member.split.valid:
            raise CheckpointError(f"{member.path}: has no validation students (refit on them); fit the weights on the checkpoints it was refit from, then refit that ensemble")
    for member in members[1:]:
        if member.split.valid != first.split.valid:
            raise CheckpointError(f"{member.path}: validated on other students than {first.path} (train the members with the same --seed to fit weights)")
    students = students_of(data, fmt, first.vocab.item_column, first.split.valid)
    if len(students) < len(first.split.valid):
        raise DataError(f"{data}: {len(first.split.valid) - len(students)} of the members' {len(first.split.valid)} validation students are not in it; give the file they were trained on")
    return [first.vocab.encode(s) for s in students]


def students_of(data: str, fmt: str, item: str, ids) -> list:
    """The students of file ``data`` whose ids are in ``ids`` (one role of a checkpoint's split), in file order."""
    wanted = set(ids)
    return [s for s in load_students(data, fmt, item) if s.student_id in wanted]


def cmd_evaluate(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.checkpoint)
    item = checkpoint.vocab.item_column
    if args.test_data:
        students = load_students(args.test_data, args.format, item)
        source = args.test_data
    elif args.data:
        held_out = checkpoint.split.test
        if not held_out:
            raise DataError(f"{args.checkpoint} held out a separate file ({checkpoint.split.test_source}): pass it with --test-data")
        students = students_of(args.data, args.format, item, held_out)
        if not students:
            raise DataError(f"{args.data}: none of the checkpoint's {len(held_out)} held-out students are in this file")
        source = f"{args.data} (held-out students of the checkpoint's split)"
    else:
        raise DataError("evaluate needs --test-data PATH (or --data PATH to score the checkpoint's held-out students)")
    encoded = [checkpoint.vocab.encode(s) for s in students]
    metrics = evaluate(checkpoint.model, encoded, progress=not args.json)
    if args.parity:
        metrics["parity_max_abs_diff"] = parity_max_abs_diff(checkpoint.model, encoded, progress=not args.json)
    result = {"model": checkpoint.model.name, "model_version": checkpoint.version, "data": source, **metrics}
    if "members" in checkpoint.metrics:  # an ensemble: which checkpoints it averages, and their own scores
        result["members"] = checkpoint.metrics["members"]
    if not args.json:
        print(f"{result['model']} {result['model_version']} on {source}")
        for key, value in metrics.items():
            print(f"  {key:>20}: {value}")
    print(json.dumps(result))
    return 0

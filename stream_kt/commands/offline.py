"""Offline commands: synth, train, refit, ensemble, evaluate."""

from __future__ import annotations

import json
import sys

import click

from stream_kt.checkpoint import check_out_dir, load_checkpoint, write_metrics
from stream_kt.commands.common import (
    OPTION_PAIR,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    ModelChoice,
    NumberList,
    data_options,
    item_option,
    json_option,
    learning_rate_help,
    skills_options,
    training_options,
)
from stream_kt.data.audit import repeat_signature
from stream_kt.data.readers import WRITERS
from stream_kt.data.synthetic import SyntheticConfig, generate
from stream_kt.errors import ConfigError, DataError
from stream_kt.models import config_options, trainable_models, vocabulary_fields
from stream_kt.training.blend import build_ensemble
from stream_kt.training.evaluate import evaluate, flagged_positions, held_out_students
from stream_kt.training.parity import parity_max_abs_diff
from stream_kt.training.prepare import load_students, prepare
from stream_kt.training.refit import refit_any
from stream_kt.training.train import TrainConfig, train

REPORTED = ("auc", "acc", "rmse", "n")


@click.command(
    help="Write a synthetic data set (simulated students).\n\n"
    "--seed draws the students; the item bank (each item's concept and difficulty) comes from --bank-seed, "
    "fixed by default, "
    "so sets written with different seeds are of the same items: a model trained on one can be scored on another.",
    short_help="write a synthetic data set (simulated students)",
)
@click.option("--out", required=True, help="output file")
@click.option(
    "--students",
    type=POSITIVE_INT,
    default=SyntheticConfig.students,
    show_default=True,
    help="simulated students (20 to 160 answers each)",
)
@click.option(
    "--items",
    type=POSITIVE_INT,
    default=SyntheticConfig.items,
    show_default=True,
    help="items in the bank: the vocabulary a model learns",
)
@click.option(
    "--concepts",
    type=POSITIVE_INT,
    default=SyntheticConfig.concepts,
    show_default=True,
    help="latent concepts the items test; a student has an ability per concept",
)
@click.option(
    "--seed",
    type=int,
    default=SyntheticConfig.seed,
    show_default=True,
    help="the students' random draw: the same seed writes the same students",
)
@click.option(
    "--bank-seed",
    type=int,
    default=SyntheticConfig.bank_seed,
    show_default=True,
    help="the item bank's random draw (difficulties): keep it to score one set's model on another's students",
)
@click.option(
    "--max-skills",
    type=click.IntRange(1, 8),
    default=SyntheticConfig.max_skills,
    show_default=True,
    help="above 1: --items questions with 1..N of the --concepts skills each (a known question -> skills map)",
)
@click.option(
    "--question-spread",
    type=click.FloatRange(0.0),
    default=SyntheticConfig.question_spread,
    show_default=True,
    help="with --max-skills above 1: standard deviation of the questions' own difficulties",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(tuple(WRITERS)),
    default="3line",
    show_default=True,
    help="3-line (items and answers only), ASSISTments CSV (with response times), csv "
    "(with question ids) or pyKT's sequence file",
)
def synth(
    out: str,
    students: int,
    items: int,
    concepts: int,
    seed: int,
    bank_seed: int,
    max_skills: int,
    question_spread: float,
    fmt: str,
) -> int:
    if max_skills > concepts:
        raise ConfigError(f"--max-skills {max_skills} is more than the {concepts} skills (--concepts)")
    config = SyntheticConfig(
        students=students,
        items=items,
        concepts=concepts,
        seed=seed,
        bank_seed=bank_seed,
        max_skills=max_skills,
        question_spread=question_spread,
    )
    generated = generate(config)
    try:
        WRITERS[fmt](generated, out)
    except OSError as exc:
        raise DataError(f"{out}: cannot write ({exc.strerror})") from None
    print(f"wrote {len(generated)} students, {sum(len(s) for s in generated)} answers to {out}")
    return 0


@click.command("train", help="train a model and write a checkpoint directory")
@data_options(data_required=True)
@item_option
@skills_options
@click.option(
    "--model",
    type=ModelChoice(trainable_models()),
    default="dkt",
    show_default=True,
    help="the model (stream-kt ensemble combines trained checkpoints)",
)
@training_options()
@click.option("--lr", type=POSITIVE_FLOAT, help=learning_rate_help(trainable_models()))
@click.option("--hidden-size", type=POSITIVE_INT, help="model hidden size (model default if omitted)")
@click.option(
    "--option", "pairs", type=OPTION_PAIR, multiple=True, help="a model Config field, e.g. dropout=0.3 (repeatable)"
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="validation students, initialisation and batch order"
)
@click.option("--out", required=True, help="checkpoint directory to write: new, empty, or a checkpoint to replace")
def train_command(
    data: str,
    test_data: str | None,
    fmt: str,
    item: str,
    skills: str,
    questions: bool,
    model: str,
    epochs: int,
    batch_size: int,
    window: int,
    patience: int,
    lr: float | None,
    hidden_size: int | None,
    pairs: tuple,
    seed: int,
    out: str,
) -> int:
    check_out_dir(out)
    options = config_options(model, ([("hidden_size", hidden_size)] if hidden_size else []) + list(pairs))
    vocabulary_fields(
        model, 1, 2 if skills == "sets" else 1, int(questions)
    )  # the model can take them: fail before reading data
    prepared = prepare(data, fmt, item, test_data, seed, skills=skills, questions=questions)
    config = TrainConfig(
        model=model,
        window=window,
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=lr or 0.0,
        patience=patience,
        seed=seed,
        model_options=options,
    )  # 0: the model's own
    print(
        f"{len(prepared.train)} training, {len(prepared.valid)} validation, {len(prepared.test)} held-out students; "
        f"{len(prepared.vocab)} {item}s",
        file=sys.stderr,
    )
    checkpoint = train(prepared.train, prepared.valid, prepared.vocab, prepared.split, config, out)
    if prepared.test:
        checkpoint.metrics["test"] = evaluate(checkpoint.model, prepared.test, progress=True)
        write_metrics(checkpoint)
    summary = {k: checkpoint.metrics[k] for k in ("best_epoch", "valid_auc", "seconds_per_epoch")}
    summary.update({f"test_{k}": v for k, v in checkpoint.metrics.get("test", {}).items() if k in REPORTED})
    print(f"checkpoint {checkpoint.version} written to {out}: " + json.dumps(summary))
    return 0


@click.command(
    help="train a checkpoint's model again on its training plus validation students, "
    "for the epochs early stopping picked (an ensemble: every member, same weights)"
)
@click.option(
    "--checkpoint",
    required=True,
    metavar="DIR",
    help="checkpoint directory to refit: an early-stopped checkpoint, or an ensemble of them",
)
@data_options(data_required=True)
@click.option(
    "--teacher",
    help="a distilled checkpoint's teacher refit on the same training and validation students: "
    "the refit student learns from it (stream-kt distill)",
)
@click.option(
    "--cache",
    default="runs/teacher_cache",
    show_default=True,
    help="with --teacher: directory of cached teacher mastery",
)
@click.option(
    "--seed",
    type=int,
    help="initialisation and batch order (default: the checkpoint's); another seed measures the "
    "recipe's run-to-run spread",
)
@click.option(
    "--out", required=True, help="checkpoint directory to write (an ensemble's refit members go under OUT/members)"
)
def refit(
    checkpoint: str,
    data: str,
    test_data: str | None,
    fmt: str,
    teacher: str | None,
    cache: str,
    seed: int | None,
    out: str,
) -> int:
    check_out_dir(out)
    source = load_checkpoint(checkpoint)
    refitted = refit_any(source, data, fmt, out, seed, load_checkpoint(teacher) if teacher else None, cache)
    if test_data:
        held_out = [refitted.vocab.encode(s) for s in load_students(test_data, fmt, refitted.vocab.item_column)]
        refitted.metrics["test"] = evaluate(refitted.model, held_out, progress=True)
    write_metrics(refitted)
    summary = {"refit_of": source.version, "students": len(refitted.split.train)}
    summary.update({f"test_{k}": v for k, v in refitted.metrics.get("test", {}).items() if k in REPORTED})
    print(f"checkpoint {refitted.version} written to {out}: " + json.dumps(summary))
    return 0


@click.command(help="combine trained checkpoints into one checkpoint serving their (weighted) mean prediction")
@click.argument("checkpoints", nargs=-1, required=True, metavar="CHECKPOINT...")
@click.option("--out", required=True, help="checkpoint directory to write")
@click.option(
    "--weights",
    type=NumberList(low=0.0, what="weights must be non-negative and not all zero", positive_sum=True),
    help="one weight per member, comma-separated (default: equal)",
)
@click.option(
    "--fit-weights",
    metavar="DATA",
    help="fit the weights on the members' validation students, read from their training file DATA",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("auto", "3line", "assistments")),
    default="auto",
    show_default=True,
    help="format of DATA",
)
def ensemble(
    checkpoints: tuple[str, ...], out: str, weights: tuple[float, ...] | None, fit_weights: str | None, fmt: str
) -> int:
    if weights and fit_weights:
        raise click.UsageError("--weights and --fit-weights exclude each other")
    check_out_dir(out)
    members = [load_checkpoint(path) for path in checkpoints]
    checkpoint = build_ensemble(members, out, weights or (), fit_weights, fmt)
    weighted = bool(weights or fit_weights)
    shares = ", ".join(
        f"{m['model']} {m['version']}" + (f" x {m['weight']:.2f}" if weighted else "")
        for m in checkpoint.metrics["members"]
    )
    fitted = checkpoint.metrics.get("weights_fitted_on_validation")
    print(
        f"checkpoint {checkpoint.version} written to {out}: the {'weighted ' if weighted else ''}mean of {shares}"
        + (
            f"; validation AUC {fitted['valid_auc']:.4f} (equal weights {fitted['valid_auc_equal']:.4f})"
            if fitted
            else ""
        )
    )
    return 0


@click.command("evaluate", help="score held-out students with a checkpoint")
@click.option("--checkpoint", required=True, metavar="DIR", help="checkpoint directory to score")
@data_options(data_required=False)
@json_option
@click.option("--parity", is_flag=True, help="also stream the students event by event and report parity_max_abs_diff")
@click.option(
    "--exclude-flagged",
    is_flag=True,
    help="also score without the answers stream-kt audit flags as multi-skill repeats in these students "
    "(auc_unflagged), and on them alone (auc_flagged)",
)
@click.option(
    "--flagged-from",
    metavar="PATH",
    help="with --exclude-flagged: find the repeating item pairs in this file (e.g. the training file: "
    "more answers, the same pairs)",
)
def evaluate_command(
    checkpoint: str,
    data: str | None,
    test_data: str | None,
    fmt: str,
    as_json: bool,
    parity: bool,
    exclude_flagged: bool,
    flagged_from: str | None,
) -> int:
    if flagged_from and not exclude_flagged:
        raise click.UsageError("--flagged-from needs --exclude-flagged")
    loaded = load_checkpoint(checkpoint)
    students, source = held_out_students(loaded, test_data, data, fmt)
    encoded = [loaded.vocab.encode(s) for s in students]
    signature = (
        repeat_signature(load_students(flagged_from, fmt, loaded.vocab.item_column) if flagged_from else students)
        if exclude_flagged
        else None
    )
    flagged = flagged_positions(loaded.vocab, students, signature) if signature else None
    metrics = evaluate(loaded.model, encoded, progress=not as_json, flagged=flagged)
    if signature:
        metrics["pairs_flagged"] = len(signature.pairs)
    if parity:
        metrics["parity_max_abs_diff"] = parity_max_abs_diff(loaded.model, encoded, progress=not as_json)
    result = {"model": loaded.model.name, "model_version": loaded.version, "data": source, **metrics}
    if "members" in loaded.metrics:  # an ensemble: which checkpoints it averages, and their own scores
        result["members"] = loaded.metrics["members"]
    if not as_json:
        print(f"{result['model']} {result['model_version']} on {source}")
        for key, value in metrics.items():
            print(f"  {key:>20}: {value}")
    print(json.dumps(result))
    return 0


COMMANDS = (synth, train_command, refit, ensemble, evaluate_command)

"""Knowledge distillation: one streamable student trained on a teacher's mastery vectors and on the answers.

The teacher is any checkpoint (the most accurate, a weighted ensemble with boosted trees,
costs milliseconds an event to stream); the student is any model offering
``loss_with_mastery`` (DKT, DKT+, Last-Query).  The student trains on exactly the
teacher's training students and is an ordinary checkpoint of its own model, which
records its teacher.

1. Teacher mastery (``teacher_mastery``), computed once per training student and cached
   on disk (``cached_teacher_mastery``): the teacher steps through the student's answers
   as the stream would, and after each interaction t keeps its mastery vector, P(correct)
   of every item at t+1.  A teacher's predictions on its own training students are
   overfit (ASSISTments 2009: the ensemble's AUC on them is 0.88, on validation students
   0.83), so with ``folds`` K >= 2 they are cross-fitted (``cross_fitted_mastery``): the
   teacher's recipe (each member, its epochs or trees, the weights) is trained again K
   times, each time without one fold of the students, and each fold's targets come
   from the teacher that never saw it.
2. The loss of a batch is ``(1 - alpha) * own + alpha * soft``:

   * ``own``: the student model's own loss (next-answer cross-entropy; DKT+ adds its
     regularisers), so a model's loss stays the model's;
   * ``soft`` (``soft_loss``): KL(teacher || student) of the mastery vector after every
     interaction, its V items independent Bernoullis (so the KL is summed over items),
     averaged over interactions.  Summed, so that for the answered item alpha weighs
     the teacher's probability against the observed answer exactly as Hinton et al.
     (2015) mix soft and hard targets (at 0.5 the item's target is their mean); the
     other V - 1 items learn from the teacher alone.
   * temperature T divides both sides' logits and multiplies the term by T^2 (Hinton et
     al. 2015).  The default is 1: a Bernoulli per item is not a softmax whose small
     classes need raising, and the teacher's probabilities are calibrated (they are
     what it serves), so the student matches them as they are.  Large T tends to
     matching logits by squared error, which would weigh the teacher's confident
     extremes most.

3. Validation students choose: each ``alpha`` candidate trains one student, early-stopped
   on validation AUC, and the candidate with the best validation AUC is kept.  Teacher
   mastery is computed for the training students only: no validation or held-out
   student is ever a target.
4. Refit (``refit_distilled``): once validation has chosen, a fresh student trains on
   the training plus validation students against the teacher refit on them, for the
   chosen epochs and alpha; the held-out students stay held out.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stream_kt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, save_ensemble, write_metrics
from stream_kt.data.batches import Window, batch_indices, cut_windows, make_batch, row_of
from stream_kt.data.split import Split
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import CheckpointError, ConfigError, DataError
from stream_kt.models import KTModel, model_class
from stream_kt.models.ensemble import Ensemble
from stream_kt.progress import progress_bar
from stream_kt.training.evaluate import evaluate
from stream_kt.training.plots import plot_learning_curves
from stream_kt.training.prepare import load_students, students_of
from stream_kt.training.train import TrainConfig, early_stopped, fresh_model, gradient_epoch, refit, train_config_of

# A student learns from soft targets more slowly than from answers alone: on ASSISTments
# 2009 DKT+ distilled with alpha 0.3 was still improving at 30 epochs (validation AUC
# 0.8169) and early stopping ended it at 74 to 110; with alpha 0.1 at 47 to 52, when
# DKT+ alone stops at 11-14
DISTILL_EPOCHS = 150
TARGET_DTYPE = np.float16  # cached teacher probabilities: three significant digits are plenty for a target
# students stepped together for teacher mastery: boosted trees cost 2.5x less per event at 64 rows than at 256 (cache)
TEACHER_CHUNK = 64


@dataclass(frozen=True)
class DistillSettings:
    # candidate teacher shares of the loss; validation AUC picks one.  The default is what
    # validation chose on ASSISTments 2009 (DKT+ from the ensemble, early-stopped: 0.1
    # over 0.03 and 0.3; at 30 epochs 0.3 over 0.6 and 0.9).  Small, because the soft
    # term is summed over every item and the answer's term is one item's
    alphas: tuple[float, ...] = (0.1,)
    temperature: float = 1.0
    folds: int = 1  # 1: the teacher's own predictions; K >= 2: cross-fitted by K retrained teachers

    def __post_init__(self) -> None:
        if not self.alphas or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ConfigError(f"alpha {list(self.alphas)}: give one or more values in [0, 1]")
        if not self.temperature > 0:
            raise ConfigError(f"temperature {self.temperature}: must be positive")
        if self.folds < 1:
            raise ConfigError(f"folds {self.folds}: give 1 (the teacher itself) or K >= 2 (cross-fitted)")


def distillable(model: KTModel | type[KTModel]) -> bool:
    """Whether ``model`` exposes per-step mastery logits (``loss_with_mastery``) to match a teacher with."""
    return model.distillable


# ---- 1. teacher mastery ---------------------------------------------------------
@torch.no_grad()
def teacher_mastery(teacher: KTModel, sequences: Sequence[EncodedSequence], progress: bool = False) -> list[np.ndarray]:
    """Per student, the teacher's mastery after each interaction, (n, V): what its ``step`` streams.

    Students are stepped ``TEACHER_CHUNK`` at a time, longest first, so the rows still
    answering at step t are always the first ones and no padding row is computed.
    """
    teacher.eval()
    num_items = teacher.config.num_items
    out = [np.zeros((len(s), num_items), TARGET_DTYPE) for s in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    bar = progress_bar(total=sum(len(s) for s in sequences), desc="teacher mastery", unit="event", disable=not progress)
    for start in range(0, len(order), TEACHER_CHUNK):
        rows = order[start : start + TEACHER_CHUNK]
        lengths = np.array([len(sequences[i]) for i in rows])
        state = {k: v.clone() for k, v in teacher.initial_state(len(rows)).items()}  # written in place below
        for t in range(int(lengths.max(initial=0))):
            active = int((lengths > t).sum())
            students = [sequences[i] for i in rows[:active]]
            items = torch.tensor(np.array([s.items[t] for s in students]))
            correct = torch.tensor(np.array([s.correct[t] for s in students]))
            times = torch.tensor(
                np.array([np.zeros(2, np.float32) if s.times is None else s.times[t] for s in students])
            )
            questions = (
                None if students[0].questions is None else torch.tensor(np.array([s.questions[t] for s in students]))  # type: ignore[index]
            )
            step = teacher.step({k: v[:active] for k, v in state.items()}, items, correct, times, questions)
            for k, v in step.state.items():
                state[k][:active] = v
            mastery = step.mastery.numpy()  # (active, V)
            for row, i in enumerate(rows[:active]):
                out[i][t] = mastery[row]
            bar.update(active)
    bar.close()
    return out


def _students_key(sequences: Sequence[EncodedSequence]) -> str:
    """A hash of the students' ids and answers: a cache file never serves other data."""
    digest = hashlib.sha256()
    for s in sorted(sequences, key=lambda s: s.student_id):
        digest.update(s.student_id.encode())
        digest.update(np.ascontiguousarray(s.items, np.int64).tobytes())
        digest.update(np.ascontiguousarray(s.correct, np.int64).tobytes())
    return digest.hexdigest()[:12]


def _read_cache(path: Path, sequences: Sequence[EncodedSequence]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    ids = [s.student_id for s in sequences]
    with np.load(path) as cached:
        lengths = cached["lengths"]
        if list(cached["student_ids"]) != ids or not np.array_equal(lengths, [len(s) for s in sequences]):
            return None
        return dict(zip(ids, np.split(cached["mastery"], np.cumsum(lengths)[:-1])))


def _write_cache(
    path: Path, teacher_version: str, sequences: Sequence[EncodedSequence], mastery: dict[str, np.ndarray]
) -> None:
    """Whole or not at all (a temporary file renamed), so an interrupted run leaves nothing
    half-written to be read later."""
    ordered = [mastery[s.student_id] for s in sequences]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.savez(
                f,
                mastery=np.concatenate(ordered),
                lengths=np.array([len(m) for m in ordered]),
                student_ids=np.array([s.student_id for s in sequences]),
                teacher_version=np.array(teacher_version),
            )
        os.replace(partial, path)
    except OSError as exc:
        raise DataError(f"{path}: cannot write the teacher cache ({exc.strerror})") from None


def cached_teacher_mastery(
    teacher: Checkpoint, sequences: Sequence[EncodedSequence], cache_dir: str | Path, progress: bool = False
) -> tuple[dict[str, np.ndarray], Path]:
    """``teacher_mastery`` by student id, read from ``cache_dir`` or computed once and written there.

    The file is named by the teacher's version and a hash of the students' answers.
    """
    path = Path(cache_dir) / f"{teacher.version}-{_students_key(sequences)}.npz"
    return _cached(
        path,
        teacher.version,
        sequences,
        lambda: dict(zip((s.student_id for s in sequences), teacher_mastery(teacher.model, sequences, progress))),
    ), path


def _cached(
    path: Path, teacher_version: str, sequences: Sequence[EncodedSequence], compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The targets cached at ``path`` for exactly these students, else ``compute()``'s, written there."""
    mastery = _read_cache(path, sequences)
    if mastery is None:
        mastery = compute()
        _write_cache(path, teacher_version, sequences, mastery)
    return mastery


def folds_of(sequences: Sequence[EncodedSequence], folds: int, seed: int) -> dict[str, int]:
    """Each student's fold, 0 .. folds-1: a seeded shuffle of the sorted ids, dealt round."""
    ids = sorted(s.student_id for s in sequences)
    random.Random(seed).shuffle(ids)
    return {sid: i % folds for i, sid in enumerate(ids)}


def cross_fitted_mastery(
    teacher: Checkpoint, sequences: Sequence[EncodedSequence], folds: int, cache_dir: str | Path, progress: bool = False
) -> tuple[dict[str, np.ndarray], Path]:
    """Teacher mastery of each student from the teacher's recipe retrained without that student's fold.

    Each fold's teacher (``retrained``) is a checkpoint under ``cache_dir`` (reused if
    present) and caches the targets it gives its fold in its own directory; all of them
    together are cached like ``cached_teacher_mastery``'s.
    """
    key = f"{teacher.version}-{_students_key(sequences)}-cv{folds}"
    path = Path(cache_dir) / f"{key}.npz"
    return _cached(
        path,
        teacher.version,
        sequences,
        lambda: _fold_targets(teacher, sequences, folds, Path(cache_dir), key, progress),
    ), path


def _fold_targets(
    teacher: Checkpoint, sequences: Sequence[EncodedSequence], folds: int, cache_dir: Path, key: str, progress: bool
) -> dict[str, np.ndarray]:
    """Each student's targets from the fold teacher that never saw them; fold k's teacher and its targets in
    ``cache_dir/{key}-fold{k}``."""
    fold = folds_of(sequences, folds, teacher.split.seed)
    mastery: dict[str, np.ndarray] = {}
    for k in range(folds):
        inside = [s for s in sequences if fold[s.student_id] != k]
        outside = [s for s in sequences if fold[s.student_id] == k]
        fold_dir = cache_dir / f"{key}-fold{k}"
        try:
            fold_teacher = load_checkpoint(fold_dir)
        except CheckpointError:  # not there yet (or cut short): train it
            fold_teacher = retrained(teacher, inside, fold_dir, progress)
        if set(fold_teacher.split.train) & {s.student_id for s in outside}:
            raise CheckpointError(f"{fold_dir}: trained on students of the fold it must predict; delete it")
        fold_targets, _ = cached_teacher_mastery(
            fold_teacher, outside, fold_dir, progress
        )  # a run cut short resumes at its fold
        mastery.update(fold_targets)
    return mastery


def retrained(
    teacher: Checkpoint, students: Sequence[EncodedSequence], out_dir: str | Path, progress: bool = False
) -> Checkpoint:
    """``teacher``'s recipe trained again on ``students`` only: each member (an ensemble) for the epochs (trees)
    validation picked, the same weights."""
    if not isinstance(teacher.model, Ensemble):
        return _retrained_model(teacher, students, Path(out_dir), progress)
    members = []
    for i, source in enumerate(teacher.train_config.get("ensemble_of", [])):
        member = load_checkpoint(source["checkpoint"])
        if member.version != source["version"]:
            raise CheckpointError(
                f"{source['checkpoint']}: holds {member.version} now, the ensemble was built from {source['version']}"
            )
        members.append(
            _retrained_model(member, students, Path(out_dir) / "members" / f"{i}-{member.model.name}", progress)
        )
    return save_ensemble(out_dir, members, tuple(teacher.model.weights.tolist()))


def _retrained_model(
    checkpoint: Checkpoint, students: Sequence[EncodedSequence], out_dir: Path, progress: bool
) -> Checkpoint:
    # a refit checkpoint's epoch count was chosen for the early-stopped one it was refit from: retrain that recipe
    if checkpoint.split.valid:
        early = checkpoint
    elif "refit_of" in checkpoint.metrics:
        early = load_checkpoint(checkpoint.metrics["refit_of"]["checkpoint"])
    else:
        raise CheckpointError(
            f"{checkpoint.path}: neither early-stopped nor a refit: no epoch count chosen on "
            "validation to retrain it with"
        )
    split = replace(checkpoint.split, train=tuple(s.student_id for s in students), valid=())
    return refit(
        early, students, out_dir, progress, seed=int(checkpoint.train_config.get("seed", early.split.seed)), split=split
    )


def teacher_targets(
    teacher: Checkpoint, sequences: Sequence[EncodedSequence], folds: int, cache_dir: str | Path, progress: bool
) -> tuple[dict[str, np.ndarray], Path]:
    if folds >= 2:
        return cross_fitted_mastery(teacher, sequences, folds, cache_dir, progress)
    return cached_teacher_mastery(teacher, sequences, cache_dir, progress)


# ---- 2. the loss ----------------------------------------------------------------
def soft_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) of the mastery vectors, summed over items, averaged over real interactions, times T^2.

    ``student_logits`` and ``teacher_probs`` (B, T, V), ``mask`` (B, T).  Each item's
    mastery is a Bernoulli: KL = cross-entropy - the teacher's entropy, so the term is 0
    exactly when the student matches the teacher.
    """
    logits = student_logits[mask] / temperature  # (N, V)
    target = teacher_probs[mask].float().clamp(1e-6, 1 - 1e-6)
    if temperature != 1.0:
        target = torch.sigmoid(torch.logit(target) / temperature)
    cross = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    entropy = -(target * target.log() + (1 - target) * (1 - target).log())
    return (cross - entropy).sum(-1).mean() * temperature**2


def padded_targets(targets: Sequence[np.ndarray], width: int) -> torch.Tensor:
    """Post-padded (B, width, V) float32 of per-window teacher mastery (n_b, V), as ``make_batch`` pads."""
    out = np.zeros((len(targets), width, targets[0].shape[1]), np.float32)
    for row, target in enumerate(targets):
        out[row, : len(target)] = target
    return torch.from_numpy(out)


def _distill_epoch(
    model: KTModel,
    optimizer: torch.optim.Optimizer,
    windows: list[Window],
    targets: list[np.ndarray],
    config: TrainConfig,
    alpha: float,
    temperature: float,
    epoch: int,
    progress: bool,
) -> dict:
    """One pass over the shuffled windows (the same order ``train`` would use) on the mixed loss."""
    own_losses, soft_losses = [], []

    def loss_of(index: np.ndarray) -> torch.Tensor:
        batch = make_batch([row_of(windows[i]) for i in index])
        teacher = padded_targets([targets[i] for i in index], batch.items.shape[1])  # (B, T, V)
        own, mastery_logits = model.loss_with_mastery(batch)
        soft = soft_loss(mastery_logits, teacher, batch.mask, temperature)
        own_losses.append(own.item())
        soft_losses.append(soft.item())
        return (1 - alpha) * own + alpha * soft

    n_batches = (len(windows) + config.batch_size - 1) // config.batch_size
    indices = batch_indices(len(windows), config.batch_size, shuffle=True, seed=config.seed + epoch)
    stats = gradient_epoch(model, optimizer, indices, n_batches, loss_of, config.grad_clip, f"epoch {epoch}", progress)
    return {**stats, "own_loss": float(np.mean(own_losses)), "soft_loss": float(np.mean(soft_losses))}


def _windows_and_targets(
    sequences: Sequence[EncodedSequence], mastery: dict[str, np.ndarray], window: int
) -> tuple[list[Window], list[np.ndarray]]:
    windows = cut_windows(sequences, window)
    return windows, [mastery[w.student_id][w.start : w.start + len(w.items)] for w in windows]


# ---- 3. validation chooses ------------------------------------------------------
def _check_students(sequences: Sequence[EncodedSequence], ids: Sequence[str], what: str) -> None:
    if sorted(s.student_id for s in sequences) != sorted(ids):
        raise DataError(
            f"the students given are not the {what} ({len(sequences)} given, {len(ids)} expected): "
            "read them from the file it was trained on"
        )


def teacher_record(teacher: Checkpoint) -> dict:
    return {"checkpoint": str(teacher.path), "version": teacher.version, "model": teacher.model.name}


def distill(
    teacher: Checkpoint,
    train_sequences: Sequence[EncodedSequence],
    valid_sequences: Sequence[EncodedSequence],
    config: TrainConfig,
    settings: DistillSettings,
    out_dir: str | Path,
    cache_dir: str | Path,
    progress: bool = True,
) -> Checkpoint:
    """A ``config.model`` student of ``teacher``: trained on its training students, chosen on its validation students.

    One student per ``settings.alphas`` candidate, each early-stopped on validation AUC
    (same seed, so the candidates differ only in alpha); the best is saved to
    ``out_dir`` with the teacher's vocabulary and split, and every candidate's
    validation AUC in its metrics.
    """
    if not teacher.split.valid:
        raise CheckpointError(
            f"{teacher.path}: has no validation students to choose epochs and alpha (a refit?); "
            f"distill from the early-stopped teacher, then refit the student with --teacher {teacher.path}"
        )
    _check_students(train_sequences, teacher.split.train, f"training students of {teacher.path}")
    _check_students(valid_sequences, teacher.split.valid, f"validation students of {teacher.path}")
    if not distillable(model_class(config.model)):
        raise ConfigError(f"model {config.model} exposes no per-step mastery logits (loss_with_mastery) to distil into")
    started = time.perf_counter()
    mastery, cache = teacher_targets(teacher, train_sequences, settings.folds, cache_dir, progress)
    teacher_seconds = time.perf_counter() - started
    windows, targets = _windows_and_targets(train_sequences, mastery, config.window)
    candidates, best = [], None
    for alpha in settings.alphas:
        model = fresh_model(config, teacher.vocab)
        optimizer = torch.optim.Adam(model.parameter_groups(config.learning_rate))
        metrics = early_stopped(
            model,
            lambda epoch: _distill_epoch(
                model, optimizer, windows, targets, config, alpha, settings.temperature, epoch, progress
            ),
            valid_sequences,
            config,
            progress,
            desc=f"distil {config.model} alpha {alpha:g}",
        )
        candidates.append({"alpha": alpha, "best_epoch": metrics["best_epoch"], "valid_auc": metrics["valid_auc"]})
        if best is None or metrics["valid_auc"] > best[2]["valid_auc"]:
            best = (alpha, model, metrics)
    assert best is not None
    alpha, model, metrics = best
    recipe = {
        "teacher": teacher_record(teacher),
        "alpha": alpha,
        "temperature": settings.temperature,
        "folds": settings.folds,
    }
    metrics.update(
        train_windows=len(windows),
        teacher_seconds=teacher_seconds,
        teacher_cache=str(cache),
        distill={**recipe, "candidates": candidates},
    )
    return _save(
        out_dir,
        model,
        teacher.vocab,
        teacher.split,
        config,
        recipe,
        metrics,
        f"{config.model} distilled from {teacher.version}: {len(train_sequences)} training students",
    )


# ---- 4. refit -------------------------------------------------------------------
def refit_distilled(
    distilled: Checkpoint,
    teacher: Checkpoint,
    students: Sequence[EncodedSequence],
    out_dir: str | Path,
    cache_dir: str | Path,
    progress: bool = True,
    seed: int | None = None,
) -> Checkpoint:
    """A fresh student of ``distilled``'s model trained on its training plus validation ``students``.

    ``teacher`` is the distilled checkpoint's teacher refit on exactly those students
    (``stream-kt refit``); the student trains against its mastery, with the alpha,
    temperature and epoch count validation chose for ``distilled``, and its seed
    unless ``seed`` is given.
    """
    recipe = distilled.train_config.get("distill")
    epochs = int(distilled.metrics.get("best_epoch") or 0)
    if not recipe:
        raise CheckpointError(f"{distilled.path}: was not distilled; refit it without --teacher")
    if epochs < 1 or not distilled.split.valid:
        raise CheckpointError(
            f"{distilled.path}: not an early-stopped student (no validation students or epoch count to refit with)"
        )
    ids = distilled.split.train + distilled.split.valid
    _check_students(students, ids, f"training and validation students of {distilled.path}")
    if teacher.split.valid or sorted(teacher.split.train) != sorted(ids):
        raise CheckpointError(
            f"{teacher.path}: was not trained on exactly the student's {len(ids)} training and validation students; "
            f"give the teacher refit on them (stream-kt refit --checkpoint {recipe['teacher']['checkpoint']})"
        )
    if teacher.vocab.ids != distilled.vocab.ids or (teacher.split.test, teacher.split.test_source) != (
        distilled.split.test,
        distilled.split.test_source,
    ):
        raise CheckpointError(f"{teacher.path}: another vocabulary or other held-out students than {distilled.path}")
    config = train_config_of(distilled, seed)
    alpha, temperature, folds = float(recipe["alpha"]), float(recipe["temperature"]), int(recipe.get("folds", 1))
    started = time.perf_counter()
    mastery, cache = teacher_targets(teacher, students, folds, cache_dir, progress)
    teacher_seconds = time.perf_counter() - started
    windows, targets = _windows_and_targets(students, mastery, config.window)
    model = fresh_model(config, distilled.vocab)
    optimizer = torch.optim.Adam(model.parameter_groups(config.learning_rate))
    started = time.perf_counter()
    history = [
        {
            "epoch": epoch,
            **_distill_epoch(model, optimizer, windows, targets, config, alpha, temperature, epoch, progress),
        }
        for epoch in progress_bar(
            range(1, epochs + 1), desc=f"refit distilled {config.model}", unit="epoch", disable=not progress
        )
    ]
    model.eval()
    refit_recipe = {
        "teacher": teacher_record(teacher),
        "alpha": alpha,
        "temperature": temperature,
        "folds": folds,
        "chosen_with_teacher": recipe["teacher"],
    }
    metrics = {
        "best_epoch": epochs,
        "train_windows": len(windows),
        "history": history,
        "seconds_per_epoch": (time.perf_counter() - started) / epochs,
        "teacher_seconds": teacher_seconds,
        "teacher_cache": str(cache),
        "refit_of": {
            "checkpoint": str(distilled.path),
            "version": distilled.version,
            "valid_auc": distilled.metrics.get("valid_auc"),
        },
        "distill": refit_recipe,
    }
    split = replace(distilled.split, train=ids, valid=())
    return _save(
        out_dir,
        model,
        distilled.vocab,
        split,
        config,
        refit_recipe,
        metrics,
        f"{config.model} refit, distilled from {teacher.version}: {len(students)} students",
    )


def _save(
    out_dir: str | Path,
    model: KTModel,
    vocab: Vocabulary,
    split: Split,
    config: TrainConfig,
    recipe: dict,
    metrics: dict,
    title: str,
) -> Checkpoint:
    """An ordinary checkpoint of the student; the recipe (teacher, alpha, temperature) sits in its training settings."""
    checkpoint = save_checkpoint(out_dir, model, vocab, split, {**asdict(config), "distill": recipe}, metrics)
    plot_learning_curves(metrics["history"], Path(out_dir) / "learning_curves.png", title)
    return checkpoint


def distill_from_file(
    teacher: Checkpoint,
    data: str,
    fmt: str,
    test_data: str | None,
    config: TrainConfig,
    settings: DistillSettings,
    out_dir: str | Path,
    cache_dir: str | Path,
) -> Checkpoint:
    """``distill`` on the teacher's own training and validation students, read from its training file ``data``;
    the held-out students (``test_data``, else those the teacher's split held out of ``data``) are scored, never
    trained on."""
    item = teacher.vocab.item_column
    train, valid = (students_of(data, fmt, item, ids) for ids in (teacher.split.train, teacher.split.valid))
    if len(train) < len(teacher.split.train) or len(valid) < len(teacher.split.valid):
        raise DataError(
            f"{data}: holds {len(train) + len(valid)} of {teacher.path}'s "
            f"{len(teacher.split.train) + len(teacher.split.valid)} training and validation students; "
            "give the file it was trained on"
        )
    print(
        f"distil {teacher.model.name} {teacher.version} into {config.model}: {len(train)} training, "
        f"{len(valid)} validation students; alpha {', '.join(f'{a:g}' for a in settings.alphas)}",
        file=sys.stderr,
    )
    student = distill(
        teacher,
        [teacher.vocab.encode(s) for s in train],
        [teacher.vocab.encode(s) for s in valid],
        config,
        settings,
        out_dir,
        cache_dir,
    )
    held_out = (
        load_students(test_data, fmt, item)
        if test_data
        else students_of(data, fmt, item, teacher.split.test)
        if teacher.split.test
        else []
    )
    if held_out:
        student.metrics["test"] = evaluate(student.model, [student.vocab.encode(s) for s in held_out], progress=True)
        write_metrics(student)
    return student

"""Read one student's state from Redis and explain it: window, mastery per skill, a heatmap.

Skill names come from the served model's vocabulary key (written by ``serve``) or, when
that is missing, from a checkpoint.  The heatmap recomputes mastery step by step over
the stored window, starting from the model's initial state: the state keeps only the
last ``WINDOW`` interactions, so for a longer history it shows the window as if it were
the student's whole history.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stream_kt.data.sequences import skills_of
from stream_kt.data.vocab import Vocabulary
from stream_kt.errors import extra
from stream_kt.service import keys
from stream_kt.service.events import index_for
from stream_kt.service.exceptions import StreamError
from stream_kt.service.quality import Scores
from stream_kt.service.redis_store import StudentStore
from stream_kt.service.state import WINDOW, StudentState, window_steps
from stream_kt.settings import StreamSettings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_MAX_SKILLS = 20
PLOT_MAX_X_LABELS = 50  # a full window's 100 labels do not fit a screen-wide figure


class StudentNotFound(StreamError):
    """No state is stored for the student."""


async def load_student(settings: StreamSettings, student_id: str) -> tuple[StudentState, Vocabulary | None, str | None]:
    """The student's state, and the served model's vocabulary and checkpoint path where ``serve`` recorded them."""
    store = await StudentStore.connect(
        settings.redis_url, settings.key_prefix, attempts=1, cluster=settings.redis_cluster
    )
    try:
        sources = [f"{settings.in_topic}/{p}" for p in range(max(settings.partitions, 256))]  # names its offsets
        state = (await store.read([student_id], sources))[student_id]
        if state is None:
            raise StudentNotFound(
                f"no state for student {student_id!r} under key prefix {settings.key_prefix!r} "
                "(wrong --key-prefix or --redis?)"
            )
        payload = await store.read_model_vocab(state.model_version)
    finally:
        await store.close()
    if payload is None:
        return state, None, None
    try:
        sets = (
            {"skills": payload["skills"], "max_skills": payload["max_skills"], "questions": tuple(payload["questions"])}
            if "skills" in payload
            else {}
        )
        vocab = Vocabulary(payload["item_column"], tuple(payload["ids"]), payload.get("names") or {}, **sets)
    except (KeyError, TypeError, ValueError):
        raise StreamError(
            f"the vocabulary stored for model {state.model_version}: not a stream-kt vocabulary"
        ) from None
    return state, vocab, payload.get("checkpoint")


def name_window(state: StudentState, vocab: Vocabulary) -> None:
    """Name a schema-2 window read without its vocabulary ("#<index>") with ``vocab``, a
    checkpoint of the state's model."""
    ids = vocab.ids
    state.window = [
        (
            ids[int(item[1:])] if item[:1] == "#" and item[1:].isdigit() and int(item[1:]) < len(ids) else item,
            correct,
            ts,
        )
        for item, correct, ts in state.window
    ]


def delete_keys_with_prefix(redis_url: str, prefix: str, cluster: bool = False) -> int:
    """Delete every key under ``prefix:`` (a demo's or a benchmark's own keys); return how many."""

    async def delete() -> int:
        store = await StudentStore.connect(redis_url, prefix, attempts=1, cluster=cluster)
        try:
            return await store.delete_prefix()
        finally:
            await store.close()

    return asyncio.run(delete())


def count_keys_with_prefix(redis_url: str, prefix: str) -> int:
    """How many keys there are under ``prefix:`` (what a demo leaves behind)."""

    async def count() -> int:
        store = await StudentStore.connect(redis_url, prefix, attempts=1)
        try:
            return len([key async for key in store.client.scan_iter(match=keys.prefix_pattern(prefix), count=1000)])
        finally:
            await store.close()

    return asyncio.run(count())


@dataclass(frozen=True)
class SkillMastery:
    item_id: str
    name: str
    p_correct: float
    practised: int  # answers on this item in the window


def mastery_ranking(state: StudentState, vocab: Vocabulary | None) -> list[SkillMastery]:
    """P(correct) per item after the last event, strongest first (ties: vocabulary order)."""
    if state.mastery is None:
        return []
    if vocab is not None and len(vocab) != len(state.mastery):
        raise StreamError(f"the state has mastery over {len(state.mastery)} items but the vocabulary has {len(vocab)}")
    practised: dict[str, int] = {}
    for item_id, _, _ in state.window:
        for skill in entries_of(item_id, vocab):
            practised[skill] = practised.get(skill, 0) + 1
    rows = []
    for index, p in enumerate(state.mastery.tolist()):
        item_id = vocab.ids[index] if vocab is not None else f"#{index}"
        name = vocab.name(index) if vocab is not None else item_id
        rows.append(SkillMastery(item_id, name, round(float(p), 4), practised.get(item_id, 0)))
    order = sorted(range(len(rows)), key=lambda i: (-rows[i].p_correct, i))
    return [rows[i] for i in order]


def state_report(state: StudentState, vocab: Vocabulary | None) -> dict:
    """The ``inspect --json`` object."""
    return {
        "student_id": state.student_id,
        "model_version": state.model_version,
        "events_applied": state.events_applied,
        "updated_ms": state.updated_ms,
        "window_size": len(state.window),
        "window": [{"item_id": item, "correct": correct, "ts_ms": ts} for item, correct, ts in state.window],
        "mastery": [asdict(row) for row in mastery_ranking(state, vocab)],
        "names_known": vocab is not None,
    }


def format_report(report: dict, top: int = 10, window_shown: int = 20) -> str:
    """Human-readable ``inspect`` output; long mastery lists show the strongest and weakest ``top``."""
    updated = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report["updated_ms"] / 1000))
        if report["updated_ms"]
        else "never"
    )
    lines = [
        f"student {report['student_id']}",
        f"  model {report['model_version']}, {report['events_applied']} events applied, updated {updated}",
    ]
    window = report["window"]
    shown = window[-window_shown:]
    lines.append(
        f"  last {len(shown)} of {report['events_applied']} interactions (oldest first; "
        f"the state keeps the last {WINDOW}):"
    )
    lines.append("    " + " ".join(f"{w['item_id']}{'✓' if w['correct'] else '✗'}" for w in shown))
    mastery = report["mastery"]
    if not mastery:
        lines.append("  no mastery yet")
        return "\n".join(lines)
    lines.append("  mastery, P(correct) on each skill next, strongest first:")
    rows = mastery if len(mastery) <= 2 * top else mastery[:top] + [None] + mastery[-top:]
    width = max(len(r["item_id"]) for r in mastery)
    for row in rows:
        if row is None:
            lines.append(f"    ... {len(mastery) - 2 * top} more ...")
            continue
        name = f"  {row['name']}" if row["name"] != row["item_id"] else ""
        practised = f"  (practised {row['practised']}x)" if row["practised"] else ""
        lines.append(f"    {row['p_correct']:.2f}  {row['item_id']:<{width}}{name}{practised}".rstrip())
    if not report["names_known"]:
        lines.append(
            "  (no vocabulary stored for this model: items shown by index; pass --checkpoint DIR for ids and names)"
        )
    return "\n".join(lines)


def entries_of(item_id: str, vocab: Vocabulary | None) -> list[str]:
    """The vocabulary ids a window entry's raw item id stands for: itself; with ``--skills sets`` each of its skills;
    with ``--skills first`` its first skill."""
    if vocab is None or vocab.skills == "combined":
        return [item_id]
    skills = skills_of(item_id)
    return skills if vocab.skills == "sets" else skills[:1]


def mastery_over_window(
    model, vocab: Vocabulary, window: list[tuple[str, int, int]], questions: list[str] | None = None
) -> tuple[np.ndarray, list[int]]:
    """Mastery after each known interaction of ``window``, from the initial state: (T, V), and their window positions.

    The window is fed exactly as ``serve`` rebuilds a state from it (``window_steps``): skill sets padded
    to K, and ``questions`` (the window's question ids) where the model reads them.
    """
    import torch

    state = model.initial_state(1)
    history, positions = [], []
    question_index = vocab.question_index if model.reads_questions else None
    with torch.no_grad():
        for step in window_steps(window, index_for(vocab).get, questions or (), question_index):
            asked = torch.tensor([step.question]) if question_index is not None else None
            out = model.step(
                state, torch.tensor([step.item_index]), torch.tensor([step.correct]), torch.tensor([step.times]), asked
            )
            state = out.state
            history.append(out.mastery[0].numpy())  # (V,)
            positions.append(step.position)
    return (np.stack(history) if history else np.zeros((0, len(vocab)), np.float32)), positions


def plot_mastery_heatmap(
    path: str | Path,
    state: StudentState,
    vocab: Vocabulary,
    history: np.ndarray,
    positions: list[int],
    checkpoint_version: str,
) -> Path:
    """Skills x interactions heatmap of P(correct), as in the DKT paper's figure, written to ``path``."""
    extra("matplotlib", "inspect --plot")
    import matplotlib.pyplot as plt

    fig = mastery_heatmap(state, vocab, history, positions, checkpoint_version)
    path = Path(path)
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise StreamError(f"{path}: cannot write ({exc.strerror})") from None
    finally:
        plt.close(fig)
    return path


def mastery_heatmap(
    state: StudentState, vocab: Vocabulary, history: np.ndarray, positions: list[int], checkpoint_version: str
) -> Figure:
    """The heatmap's figure: readable from one interaction (nothing clipped) to a full window (at most
    ``PLOT_MAX_X_LABELS`` labelled)."""
    extra("matplotlib", "inspect --plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not positions:
        raise StreamError(f"student {state.student_id}: no interaction in the window is in the model's vocabulary")
    steps = [state.window[p] for p in positions]
    practised: dict[str, int] = {}
    for item_id, _, _ in steps:
        for skill in entries_of(item_id, vocab):
            practised[skill] = practised.get(skill, 0) + 1
    skills = [s for s in practised if vocab.index(s) is not None]  # first practice order
    if len(skills) > PLOT_MAX_SKILLS:
        top = set(sorted(skills, key=lambda s: -practised[s])[:PLOT_MAX_SKILLS])
        skills = [s for s in skills if s in top]
    rows = np.stack([history[:, vocab.index(s)] for s in skills])  # (skills, T)
    # wide enough for the title at one interaction, no wider than a screen at a full window
    fig_width = min(16.0, max(8.0, 3.5 + 0.13 * len(steps)))
    shown = (
        f"top {len(skills)} of {len(practised)} practised skills"
        if len(skills) < len(practised)
        else "skills practised"
    )
    title = (
        f"student {state.student_id}: mastery over the last {len(steps)} of "
        f"{state.events_applied} interactions ({shown})"
    )
    note = (
        f"the state keeps only the last {WINDOW} interactions; mastery recomputed from the "
        "model's initial state over them"
    )
    if checkpoint_version != state.model_version:
        note += f"; checkpoint {checkpoint_version} differs from the state's model {state.model_version}"
    heading = "\n".join(
        textwrap.wrap(title, int(fig_width * 12)) + textwrap.wrap(note, int(fig_width * 12))
    )  # at 9 pt, about 14 characters an inch
    fig, ax = plt.subplots(
        figsize=(fig_width, 2.4 + 0.16 * heading.count("\n") + 0.3 * len(skills)), layout="constrained"
    )
    image = ax.imshow(rows, aspect="auto", cmap="RdYlGn", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(len(skills)), [_label(vocab, s) for s in skills], fontsize=8)
    ax.set_ylabel(f"{vocab.item_column} (first practised on top)", fontsize=8)
    every = -(-len(steps) // PLOT_MAX_X_LABELS)  # a full window: one in two labelled, counted back from the newest
    labelled = list(range(len(steps) - 1, -1, -every))[::-1]
    ax.set_xticks(
        labelled,
        [f"{steps[t][0]} {'✓' if steps[t][1] else '✗'}" for t in labelled],
        rotation=90 if len(labelled) > 8 else 0,
        fontsize=7,
    )
    ax.set_xlabel(
        "interaction (item answered, ✓ correct / ✗ wrong), oldest first"
        + (f"; one in {every} labelled" if every > 1 else ""),
        fontsize=8,
    )
    fig.colorbar(image, ax=ax, label="P(correct)", fraction=0.03 if len(steps) > 20 else 0.05, pad=0.01)
    fig.suptitle(heading, fontsize=9)  # centred on the figure, not the axes: the skill names push the axes right
    return fig


def _label(vocab: Vocabulary, item_id: str) -> str:
    index = vocab.index(item_id)
    name = vocab.name(index) if index is not None else item_id
    return item_id if name == item_id else f"{item_id} {name[:30]}"


async def online_quality(settings: StreamSettings) -> dict[str, Scores]:
    """Every served model version's online quality counts (``service.quality``), as all
    processors added them in Redis."""
    store = await StudentStore.from_settings(settings, attempts=2)
    try:
        return await store.read_quality()
    finally:
        await store.close()

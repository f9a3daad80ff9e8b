"""inspect against the real Redis, on states the test writes itself (no processor needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_kt.checkpoint import save_checkpoint
from stream_kt.cli import main
from stream_kt.data.split import Split
from stream_kt.data.vocab import Vocabulary
from stream_kt.models import build_model
from stream_kt.service import keys
from stream_kt.service.redis_store import redis_client_sync
from stream_kt.service.state import StudentState
from stream_kt.tools.brokers import free_port
from tests.conftest import run_with_stdout_closed

VOCAB = Vocabulary("skill_id", ("3", "7", "10", "12"), {"3": "Fractions", "10": "Angles"})


def store(
    redis_url: str, prefix: str, state: StudentState, vocab: Vocabulary | None = VOCAB, checkpoint: Path | None = None
) -> None:
    client = redis_client_sync(redis_url)
    client.set(keys.student_key(state.student_id, prefix), state.to_bytes())
    if vocab is not None:
        record = {
            "item_column": vocab.item_column,
            "ids": list(vocab.ids),
            "names": vocab.names,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "model": "dkt",
        }
        client.set(keys.model_vocab_key(state.model_version, prefix), json.dumps(record))
    client.close()


def make_state(student_id: str = "train:5", model_version: str = "dkt-0123456789ab") -> StudentState:
    state = StudentState(student_id, model_version)
    for offset, (item, correct) in enumerate([("3", 1), ("7", 0), ("3", 1), ("12", 1)]):
        state.record(item, correct, 1_700_000_000_000 + offset * 1000, "answers/0", offset)
    state.mastery = np.array([0.81, 0.12, 0.55, 0.93], dtype=np.float32)
    state.updated_ms = 1_700_000_003_000
    return state


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_inspect_json_reports_the_stored_state_with_mastery_strongest_first(redis_url, key_prefix, capsys) -> None:
    store(redis_url, key_prefix, make_state())
    assert main(["inspect", "train:5", "--redis", redis_url, "--key-prefix", key_prefix, "--json"]) == 0
    report = json.loads(one_line(capsys.readouterr().out))
    assert report["events_applied"] == 4
    assert report["model_version"] == "dkt-0123456789ab"
    assert report["updated_ms"] == 1_700_000_003_000
    assert report["window"] == [
        {"item_id": "3", "correct": 1, "ts_ms": 1_700_000_000_000},
        {"item_id": "7", "correct": 0, "ts_ms": 1_700_000_001_000},
        {"item_id": "3", "correct": 1, "ts_ms": 1_700_000_002_000},
        {"item_id": "12", "correct": 1, "ts_ms": 1_700_000_003_000},
    ]
    assert [(m["item_id"], m["name"], m["practised"]) for m in report["mastery"]] == [
        ("12", "12", 1),
        ("3", "Fractions", 2),
        ("10", "Angles", 0),
        ("7", "7", 1),
    ]
    assert [m["p_correct"] for m in report["mastery"]] == pytest.approx([0.93, 0.81, 0.55, 0.12], abs=1e-4)


def test_inspect_text_names_skills_and_lists_them_strongest_first(redis_url, key_prefix, capsys) -> None:
    store(redis_url, key_prefix, make_state())
    assert main(["inspect", "train:5", "--redis", redis_url, "--key-prefix", key_prefix]) == 0
    out = capsys.readouterr().out
    assert "4 events applied" in out and "3✓ 7✗ 3✓ 12✓" in out
    mastery_lines = [line.split() for line in out.splitlines() if line.startswith("    0.")]
    assert [line[:2] for line in mastery_lines] == [["0.93", "12"], ["0.81", "3"], ["0.55", "10"], ["0.12", "7"]]
    assert "Fractions" in out and "Angles" in out


def test_inspect_unknown_student_is_one_line_error_with_status_2(redis_url, key_prefix, capsys) -> None:
    assert main(["inspect", "nobody", "--redis", redis_url, "--key-prefix", key_prefix]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no state for student 'nobody'" in one_line(captured.err)


def test_inspect_with_redis_unreachable_is_one_line_error(capsys) -> None:
    assert main(["inspect", "train:5", "--redis", f"redis://127.0.0.1:{free_port()}/0"]) == 2
    assert "cannot reach Redis" in one_line(capsys.readouterr().err)


def test_inspect_plot_writes_a_png_heatmap_with_the_model_recorded_in_redis(
    redis_url, key_prefix, tmp_path, capsys
) -> None:
    torch.manual_seed(0)
    model = build_model("dkt", num_items=len(VOCAB), embed_dim=8, hidden_size=8, dropout=0.0)
    checkpoint = save_checkpoint(
        tmp_path / "checkpoint", model, VOCAB, Split(("train:0",), (), (), 0, "holdout"), {"note": "random init"}
    )
    state = make_state(model_version=checkpoint.version)
    store(redis_url, key_prefix, state, checkpoint=(tmp_path / "checkpoint").resolve())
    plot = tmp_path / "mastery.png"
    assert (
        main(["inspect", "train:5", "--redis", redis_url, "--key-prefix", key_prefix, "--plot", str(plot), "--json"])
        == 0
    )
    assert json.loads(one_line(capsys.readouterr().out))["plot"] == str(plot)
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_inspect_json_into_a_pipe_closed_early_exits_quietly(redis_url, key_prefix) -> None:
    """``stream-kt inspect STUDENT --json | head -1``: no BrokenPipeError traceback."""
    store(redis_url, key_prefix, make_state())
    result = run_with_stdout_closed("inspect", "train:5", "--redis", redis_url, "--key-prefix", key_prefix, "--json")
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.parametrize("events", [1, 2, 4, 100])
def test_the_heatmap_keeps_every_label_inside_the_figure_and_names_its_axes(events) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from stream_kt.tools.inspect_state import PLOT_MAX_X_LABELS, mastery_heatmap, mastery_over_window

    torch.manual_seed(0)
    model = build_model("dkt", num_items=len(VOCAB), embed_dim=8, hidden_size=8, dropout=0.0).eval()
    state = StudentState("train:5", "dkt-0123456789ab")
    for offset in range(events):
        state.record(
            VOCAB.ids[offset * 7 % len(VOCAB)],
            int(offset % 3 != 0),
            1_700_000_000_000 + offset * 1000,
            "answers/0",
            offset,
        )
    history, positions = mastery_over_window(model, VOCAB, state.window)
    figure = mastery_heatmap(state, VOCAB, history, positions, "dkt-0123456789ab")
    try:
        figure.canvas.draw()
        renderer, frame = figure.canvas.get_renderer(), figure.bbox
        texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text()]
        clipped = [
            t.get_text()
            for t in texts
            if not frame.padded(1).contains(*t.get_window_extent(renderer).p0)
            or not frame.padded(1).contains(*t.get_window_extent(renderer).p1)
        ]
        assert clipped == []
        axes = figure.axes[0]
        assert (
            axes.get_ylabel()
            and axes.get_xlabel()
            and figure.get_suptitle().startswith(f"student train:5: mastery over the last {events} of {events}")
        )
        labels = [label.get_text() for label in axes.get_xticklabels()]
        assert (
            len(labels) <= PLOT_MAX_X_LABELS
            and labels[-1] == f"{state.window[-1][0]} {'✓' if state.window[-1][1] else '✗'}"
        )  # the newest always labelled
        assert figure.get_size_inches()[0] <= 16
    finally:
        plt.close(figure)


def test_inspect_plot_without_a_known_checkpoint_is_one_line_error(redis_url, key_prefix, tmp_path, capsys) -> None:
    store(redis_url, key_prefix, make_state(), vocab=None)
    assert (
        main(
            ["inspect", "train:5", "--redis", redis_url, "--key-prefix", key_prefix, "--plot", str(tmp_path / "m.png")]
        )
        == 2
    )
    assert "pass --checkpoint DIR" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "m.png").exists()


def test_recomputed_mastery_over_the_window_ends_where_the_whole_sequence_forward_pass_ends() -> None:
    from stream_kt.tools.inspect_state import mastery_over_window

    torch.manual_seed(1)
    model = build_model("dkt", num_items=len(VOCAB), embed_dim=8, hidden_size=8, dropout=0.0).eval()
    window = [("3", 1, 0), ("unknown", 1, 0), ("7", 0, 0), ("12", 1, 0)]
    history, positions = mastery_over_window(model, VOCAB, window)
    assert positions == [0, 2, 3]  # the item the model never saw is skipped, as the processor does
    assert history.shape == (3, len(VOCAB))
    items = torch.tensor([[0, 1, 3]])
    _, final = model.hidden_states(items, torch.tensor([[1, 0, 1]]), torch.ones_like(items, dtype=torch.bool))
    with torch.no_grad():
        assert np.allclose(history[-1], model.mastery(final)[0].numpy(), atol=1e-5)


def test_inspect_recomputes_a_time_aware_models_mastery_as_serve_rebuilds_it(tmp_path) -> None:
    """``inspect --plot`` and ``serve``'s rebuild feed a stored window to the model the same way, times included."""
    import asyncio

    from stream_kt.backends import make_backend
    from stream_kt.service.processor import Processor, RebalanceGate
    from stream_kt.settings import StreamSettings
    from stream_kt.tools.inspect_state import mastery_over_window

    torch.manual_seed(2)
    model = build_model("saint_plus", num_items=len(VOCAB), dim=16, heads=2, encoder_layers=1, decoder_layers=1).eval()
    with torch.no_grad():  # make the lags matter for sure
        model.time_projection.weight.mul_(20)
    checkpoint = save_checkpoint(
        tmp_path / "saint_plus", model, VOCAB, Split(("train:0",), (), (), 0, "holdout"), {"note": "random init"}
    )
    gaps_ms = [0, 5_000, 600_000, 2_000, 90_000, 30_000]
    window = [
        (item, correct, 1_700_000_000_000 + sum(gaps_ms[: k + 1]))
        for k, (item, correct) in enumerate([("3", 1), ("7", 0), ("unknown", 1), ("10", 1), ("3", 0), ("12", 1)])
    ]

    stale = StudentState("s", "an-older-model", events_applied=len(window), window=list(window))
    settings = StreamSettings(batch_size=4)
    processor = Processor(
        settings,
        checkpoint,
        {4: make_backend("eager", checkpoint.model, 4)},
        None,
        None,
        None,
        RebalanceGate(asyncio.Event()),
    )  # type: ignore[arg-type]
    rows, _ = asyncio.run(
        processor.load_rows(["s"], [stale.to_bytes()])
    )  # what serve does with a state of another model version
    rebuilt = rows["mastery"][0]

    history, positions = mastery_over_window(checkpoint.model, checkpoint.vocab, window)
    assert positions == [0, 1, 3, 4, 5]
    np.testing.assert_allclose(history[-1], rebuilt, atol=1e-5)
    untimed = [(item, correct, 1_700_000_000_000) for item, correct, _ in window]  # the same answers without the gaps
    assert np.abs(mastery_over_window(checkpoint.model, checkpoint.vocab, untimed)[0][-1] - rebuilt).max() > 1e-3


def test_inspect_recomputes_a_skill_set_and_question_window_as_serve_rebuilds_it(tmp_path) -> None:
    """A ``--skills sets --questions`` model's window (skill sets, question ids) is fed to ``inspect --plot``'s
    recomputation as ``serve`` rebuilds a state of another version from it: the same mastery; and a window
    entry counts for each of its skills."""
    from stream_kt.backends import make_backend
    from stream_kt.service.batcher import push_window
    from stream_kt.service.processor import Model
    from stream_kt.service.state import StateLayout, decode_state
    from stream_kt.settings import StreamSettings
    from stream_kt.tools.inspect_state import entries_of, mastery_over_window

    vocab = Vocabulary("skill_id", ("1", "2", "3", "4"), skills="sets", max_skills=2, questions=("qa", "qb"))
    torch.manual_seed(3)
    model = build_model("dkt", num_items=4, embed_dim=8, hidden_size=8, dropout=0.0, max_skills=2, num_questions=2)
    with torch.no_grad():
        model.question_offset.weight.copy_(torch.tensor([[0.0], [2.0], [-2.0]]))  # the questions matter for sure
    checkpoint = save_checkpoint(tmp_path / "sets", model.eval(), vocab, Split(("train:0",), (), (), 0, "holdout"), {})
    # a state the older version wrote: its vocabulary lists the skills in another order, its questions too
    old_ids, old_questions = ["4", "3", "2", "1"], ["qb", "qa"]
    old = StateLayout("an-older-model", {"h": (1, 2)}, num_items=4, skills=2, questions=True)
    rows = old.new(1, {"h": np.zeros((1, 1, 2), np.float32)})
    # old indexes; 4 = V pads; question 0: none
    answers = [((3, 1), 2, 1), ((2, 4), 0, 0), ((2, 0), 1, 1), ((3, 1), 0, 0)]
    for t, (skills, question, correct) in enumerate(answers):
        push_window(
            rows, np.array([0]), np.array([skills]), np.array([correct]), np.array([1000 * t]), np.array([question])
        )
    rows["events"] = len(answers)
    blob = old.to_blobs(rows)[0]
    served = Model(checkpoint, {4: make_backend("eager", checkpoint.model, 4)}, StreamSettings(batch_size=4))
    loaded = served.migration.rows(
        ["s"], [blob], {"an-older-model": old_ids}, served.stepper, {"an-older-model": old_questions}
    )
    assert loaded.rebuilt == 1
    stored = decode_state(blob, "s", old_ids, question_ids=old_questions)  # what inspect reads
    assert stored.window == [("1_3", 1, 0), ("2", 0, 1000), ("2_4", 1, 2000), ("1_3", 0, 3000)]
    assert stored.questions == ["qa", "", "qb", ""]
    history, positions = mastery_over_window(checkpoint.model, vocab, stored.window, stored.questions)
    assert positions == [0, 1, 2, 3]
    np.testing.assert_allclose(history[-1], loaded.rows["mastery"][0], atol=1e-6)
    without_questions, _ = mastery_over_window(checkpoint.model, vocab, stored.window)
    assert not np.allclose(without_questions[-1], history[-1], atol=1e-4)
    assert entries_of("1_3", vocab) == ["1", "3"] and entries_of("1_3", None) == ["1_3"]

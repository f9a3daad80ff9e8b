"""Questions with skill sets and question ids: DKT and DKT+ take both; BKT, SAKT, Last-Query, SAINT, SAINT+,
gbdt and an ensemble of them take skill sets; the others refuse what they cannot take in one line."""

import copy
import functools

import numpy as np
import pytest
import torch

from stream_kt.data.batches import make_batch
from stream_kt.data.sequences import StudentSequence
from stream_kt.data.vocab import EncodedSequence, Vocabulary
from stream_kt.errors import ConfigError
from stream_kt.models import MODELS, build_model, vocabulary_fields
from stream_kt.models.sakt import SAKT
from stream_kt.training.fitters import fitter_of
from stream_kt.training.parity import parity_max_abs_diff

V, K, Q = 6, 3, 5

SET_MODELS = ["dkt", "dkt_plus", "bkt", "sakt", "lastquery", "saint", "saint_plus", "gbdt", "ensemble"]
QUESTION_MODELS = ["dkt", "dkt_plus"]
# small versions; the attention models' window of 8 is crossed by the longer students below
OPTIONS = {
    "dkt": {"hidden_size": 16, "embed_dim": 8},
    "dkt_plus": {"hidden_size": 16, "embed_dim": 8},
    "bkt": {},
    "sakt": {"dim": 16, "heads": 2, "window": 8},
    "lastquery": {"dim": 16, "heads": 2, "hidden_size": 16, "window": 8},
    "saint": {"dim": 16, "heads": 2, "window": 8},
    "saint_plus": {"dim": 16, "heads": 2, "window": 8},
    # boosted for a fixed number of trees (an unfitted gbdt predicts 0.5 everywhere and would prove nothing)
    "gbdt": {"num_leaves": 7, "min_data_in_leaf": 5, "folds": 2, "context": 2, "transfer_steps": 20},
    # a recurrent, an attention and a per-skill member (a member's K is the ensemble's)
    "ensemble": {
        "members": (
            {"model": "dkt", "hidden_size": 16, "embed_dim": 8},
            {"model": "saint", "dim": 16, "heads": 2, "window": 8},
            {"model": "bkt"},
        )
    },
}
GBDT_TREES = 20


def skill_sets(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, K) skill sets of 1..K distinct skills, padded with V."""
    rows = np.full((n, K), V, np.int64)
    for row in rows:
        size = int(rng.integers(1, K + 1))
        row[:size] = np.sort(rng.choice(V, size, replace=False))
    return rows


def learnable_students(n: int, length: int, seed: int, skills: int = K) -> list[EncodedSequence]:
    """Students answering skill sets (one skill: the set's first), right more often on easy skills
    and after a right answer."""
    rng = np.random.default_rng(seed)
    difficulty = np.linspace(-1.5, 1.5, V + 1)  # the last: padding, never read
    students = []
    for s in range(n):
        ability, previous = rng.normal(), 0
        items = skill_sets(rng, length)
        correct = np.zeros(length, np.int64)
        for t, row in enumerate(items):
            logit = ability - difficulty[row[row < V]].mean() + 0.8 * (2 * previous - 1)
            correct[t] = previous = int(rng.random() < 1 / (1 + np.exp(-logit)))
        students.append(EncodedSequence(f"s{seed}:{s}", items if skills > 1 else items[:, 0], correct))
    return students


def fitted(model, students: list[EncodedSequence]):
    """``model`` fitted on ``students`` where it is fitted its own way (gbdt: ``GBDT_TREES`` trees), else as it is."""
    if model.fitted_by_gradient:
        return model
    return fitter_of(model)(model, students, [], progress=False, rounds=GBDT_TREES)[0]


@functools.cache
def _fitted_gbdt(skills: int):
    return fitted(
        build_model("gbdt", **vocabulary_fields("gbdt", V, skills), **OPTIONS["gbdt"]),
        learnable_students(60, 30, 0, skills),
    )


def model_of(name: str, questions: int = Q, skills: int = K) -> torch.nn.Module:
    torch.manual_seed(0)
    questions = questions if name in QUESTION_MODELS else 0
    if name == "gbdt":
        return copy.deepcopy(_fitted_gbdt(skills)).eval()
    model = build_model(name, **vocabulary_fields(name, V, skills, questions), **OPTIONS[name])
    if name == "bkt":
        with torch.no_grad():  # skills apart from their common starting values, so the test sees which is which
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
    if questions:
        with torch.no_grad():  # offsets away from their zero start, so the test sees them
            model.question_offset.weight[1:].normal_(0.0, 1.0)
    return model.eval()


def predictions(model, items: np.ndarray, correct: np.ndarray, questions: np.ndarray | None) -> np.ndarray:
    batch = make_batch([(items, correct, None, questions)])
    with torch.no_grad():
        return torch.sigmoid(model(batch))[0][batch.next_mask[0]].numpy()


@pytest.mark.parametrize("name", SET_MODELS)
def test_flipping_a_two_skill_answer_leaves_its_own_prediction_and_changes_the_next(name):
    rng = np.random.default_rng(1)
    items = skill_sets(rng, 12)
    items[5] = [1, 4, V]  # a question with two skills at t = 5
    items[6] = [1, V, V]  # and one of its skills next
    correct = rng.integers(0, 2, 12)
    questions = rng.integers(1, Q + 1, 12)
    questions = questions if name in QUESTION_MODELS else None
    model = model_of(name)
    base = predictions(model, items, correct, questions)  # base[t - 1] predicts answer t
    flipped = correct.copy()
    flipped[5] = 1 - flipped[5]
    changed = predictions(model, items, flipped, questions)
    np.testing.assert_array_equal(
        changed[:5], base[:5]
    )  # answer 5's own prediction (index 4) and all before: bit-identical
    assert abs(changed[5] - base[5]) > 1e-4  # the next question, on one of its skills, moves


def test_a_prediction_combines_its_skills_and_its_question():
    model = model_of("dkt")
    state = model.initial_state(1)
    with torch.no_grad():
        logits = model.out(state["h"][:, -1])[0]
        one = model.step(state, torch.tensor([[1, 4, V]]), torch.tensor([1]), questions=torch.tensor([0])).p_correct
        asked = model.step(state, torch.tensor([[1, 4, V]]), torch.tensor([1]), questions=torch.tensor([3])).p_correct
        offset = model.question_offset.weight[3, 0]
    assert torch.allclose(one, torch.sigmoid((logits[1] + logits[4]) / 2))  # an unseen question (0): its skills alone
    assert torch.allclose(asked, torch.sigmoid((logits[1] + logits[4]) / 2 + offset))


@pytest.mark.parametrize("name", SET_MODELS)
def test_a_set_of_one_skill_is_the_single_skill_model(name):
    """A "sets" vocabulary whose every answer has one skill computes what the single-skill model
    computes, offline and streamed."""
    rng = np.random.default_rng(2)
    single = rng.integers(0, V, 15)
    correct = rng.integers(0, 2, 15)
    as_sets = np.full((15, K), V, np.int64)
    as_sets[:, 0] = single
    plain = model_of(name, 0, skills=1)
    sets = build_model(
        name, **{**plain.config_dict(), "max_skills": K}
    ).eval()  # the same shapes (gbdt: trees and tables)
    sets.load_state_dict(plain.state_dict())
    np.testing.assert_allclose(
        predictions(sets, as_sets, correct, None), predictions(plain, single, correct, None), atol=1e-6
    )
    plain_state, sets_state = plain.initial_state(1), sets.initial_state(1)
    with torch.no_grad():
        for t in range(15):
            expected = plain.step(plain_state, torch.tensor(single[t : t + 1]), torch.tensor(correct[t : t + 1]))
            out = sets.step(sets_state, torch.from_numpy(as_sets[t : t + 1]), torch.tensor(correct[t : t + 1]))
            torch.testing.assert_close(out.p_correct, expected.p_correct, atol=1e-6, rtol=0)
            torch.testing.assert_close(out.mastery, expected.mastery, atol=1e-6, rtol=0)
            plain_state, sets_state = expected.state, out.state


@pytest.mark.parametrize("name", SET_MODELS)
def test_a_sets_order_and_the_batch_padding_change_nothing(name):
    """The same students alone, pre- and post-padded in one batch with garbage sets in the padding, and with each set's
    skills and padding slots reordered."""
    rng = np.random.default_rng(6)
    rows = [(skill_sets(rng, n), rng.integers(0, 2, n)) for n in (4, 17, 2, 11)]
    model = model_of(name, 0)
    alone = [predictions(model, items, correct, None) for items, correct in rows]
    reordered = [
        (np.stack([rng.permutation(row) for row in items]), correct) for items, correct in rows
    ]  # padding slots too
    for side in ("pre", "post"):
        for students in (rows, reordered):
            batch = make_batch(students, pad=side, length=20)
            batch.items[~batch.mask] = torch.from_numpy(skill_sets(rng, int((~batch.mask).sum())))
            with torch.no_grad():
                probs = torch.sigmoid(model(batch))
            for row, expected in enumerate(alone):
                np.testing.assert_allclose(probs[row][batch.next_mask[row]].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name", SET_MODELS)
def test_streamed_equals_offline_with_skill_sets_and_questions(name):
    students = []
    rng = np.random.default_rng(3)
    skills = [str(s) for s in range(V)]
    for k in range(9):
        n = int(rng.integers(2, 30))
        items = tuple("_".join(skills[s] for s in row if s < V) for row in skill_sets(rng, n))
        questions = tuple(f"q{int(q)}" for q in rng.integers(0, Q + 2, n))  # some never seen in training
        students.append(
            StudentSequence(f"s{k}", items, tuple(int(c) for c in rng.integers(0, 2, n)), questions=questions)
        )
    vocab = Vocabulary.build(students[:6], "skill_id", skills="sets", questions=name in QUESTION_MODELS)
    encoded = [vocab.encode(s) for s in students]
    model = fitted(
        build_model(
            name, **vocabulary_fields(name, len(vocab), vocab.max_skills, len(vocab.questions)), **OPTIONS[name]
        ),
        encoded[:6],
    ).eval()
    assert parity_max_abs_diff(model, encoded, batch_size=4) < 1e-5


def test_a_model_that_takes_one_skill_says_so_in_one_line(monkeypatch):
    """No built-in model refuses skill sets any more: one registered here for the test, SAKT that
    takes one skill, is refused."""

    class OneSkill(SAKT):
        name = "one_skill"
        takes_skill_sets = False

    monkeypatch.setitem(MODELS, OneSkill.name, OneSkill)
    with pytest.raises(
        ConfigError,
        match="^one_skill takes one skill per answer, not skill sets: use --skills combined or --skills first with it$",
    ):
        vocabulary_fields(OneSkill.name, V, K)


@pytest.mark.parametrize("name", ["saint", "saint_plus", "gbdt", "ensemble"])
def test_a_single_skill_model_keeps_the_checkpoint_version_it_had_before_skill_sets(name):
    """max_skills came after these models' checkpoints: at 1 it is left out of the config, and of the version's
    hash, so they still load."""
    model = build_model(name, num_items=V)
    assert model.config.max_skills == 1 and "max_skills" not in model.config_dict()
    assert build_model(name, **vocabulary_fields(name, V, K)).config_dict()["max_skills"] == K


@pytest.mark.parametrize("name", ["sakt", "saint", "lastquery", "bkt", "gbdt"])
def test_a_model_without_question_ids_says_so_in_one_line(name):
    with pytest.raises(ConfigError, match=f"^{name} cannot use question ids: leave out --questions with it$"):
        vocabulary_fields(name, V, 1, Q)


BACKEND_CASES = [
    ("dkt", 0),
    ("dkt", Q),
    ("bkt", 0),
    ("sakt", 0),
    ("lastquery", 0),
    ("saint", 0),
    ("saint_plus", 0),
    ("gbdt", 0),
    ("ensemble", 0),
]


@pytest.mark.parametrize("backend", ["eager", "cpu", "staged"])  # staged: the CUDA backend's code path, on the CPU
@pytest.mark.parametrize(("name", "questions"), BACKEND_CASES)
def test_the_folded_step_and_the_backends_match_the_model_on_skill_sets(backend, name, questions):
    from stream_kt.backends import make_backend
    from stream_kt.backends.staged import StagedBackend

    model = model_of(name, questions)
    rng = np.random.default_rng(4)
    fixed = StagedBackend(model, 8, "cpu") if backend == "staged" else make_backend(backend, model, 8)
    state, reference = fixed.initial_state(11), model.initial_state(11)  # 11 rows: a full call of 8 and a padded one
    for _ in range(12):
        items = torch.from_numpy(skill_sets(rng, 11))
        correct = torch.from_numpy(rng.integers(0, 2, 11))
        asked = torch.from_numpy(rng.integers(0, Q + 1, 11)) if questions else None
        out = fixed.step(state, items, correct, questions=asked)
        with torch.no_grad():
            expected = model.step(reference, items, correct, questions=asked)
        torch.testing.assert_close(out.p_correct, expected.p_correct, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.mastery, expected.mastery, atol=1e-5, rtol=0)
        state, reference = out.state, expected.state


@pytest.mark.parametrize(("name", "questions"), BACKEND_CASES)
def test_a_step_on_skill_sets_leaves_no_cpu_tensor_on_a_device(name, questions):
    """The CUDA backend's code path on the ``meta`` device, skill sets in: one copy each way,
    nothing on the wrong side."""
    from stream_kt.backends.device_check import DeviceAudit
    from stream_kt.backends.staged import StagedBackend

    model = model_of(name, questions)
    backend = StagedBackend(model, 8, "meta")
    audit = DeviceAudit("meta")
    backend.module = audit.wrap(backend.module)
    rng = np.random.default_rng(7)
    state = model.initial_state(11)
    for _ in range(2):
        asked = torch.from_numpy(rng.integers(0, Q + 1, 11)) if questions else None
        with audit:
            out = backend.step(
                state, torch.from_numpy(skill_sets(rng, 11)), torch.from_numpy(rng.integers(0, 2, 11)), questions=asked
            )
        assert out.mastery.shape == (11, V) and all(
            v.device.type == "cpu" for v in (out.p_correct, out.mastery, *out.state.values())
        )
        state = out.state
    assert (
        audit.device_steps == audit.host_to_device == audit.device_to_host == 4
    )  # 2 steps of 2 calls (8 rows, then 3 padded)


@pytest.mark.parametrize("name", SET_MODELS)
def test_a_model_on_skill_sets_steps_a_single_item_as_a_set_of_one(name):
    model = model_of(name, 0)
    rng = np.random.default_rng(5)
    single_state, set_state = model.initial_state(4), model.initial_state(4)
    with torch.no_grad():
        for _ in range(6):
            single = torch.from_numpy(rng.integers(0, V, 4))
            correct = torch.from_numpy(rng.integers(0, 2, 4))
            as_sets = torch.nn.functional.pad(single.unsqueeze(-1), (0, K - 1), value=V)
            one, expected = model.step(single_state, single, correct), model.step(set_state, as_sets, correct)
            torch.testing.assert_close(one.p_correct, expected.p_correct, atol=1e-6, rtol=0)
            torch.testing.assert_close(one.mastery, expected.mastery, atol=1e-6, rtol=0)
            single_state, set_state = one.state, expected.state

"""Evaluation math on hand-made logits, saving and loading, and the plain forward over image files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kennel.evaluation import EvaluationResult, predict_logits, summarize


def one_hot_logits(predicted: list[int], num_classes: int, confidence: list[float] | None = None) -> torch.Tensor:
    logits = torch.zeros(len(predicted), num_classes)
    for row, cls in enumerate(predicted):
        logits[row, cls] = confidence[row] if confidence else 5.0
    return logits


@pytest.fixture
def three_classes() -> EvaluationResult:
    # true:      0  0  1  1  2  2
    # predicted: 0  1  1  1  2  0
    logits = one_hot_logits([0, 1, 1, 1, 2, 0], 3, confidence=[5, 2, 5, 5, 5, 7])
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    return summarize(logits, targets, ["a", "b", "c"], files=[f"f{i}.jpg" for i in range(6)])


def test_top1_loss_and_confusion(three_classes: EvaluationResult) -> None:
    result = three_classes
    assert result.count == 6
    assert result.top1 == pytest.approx(4 / 6)
    assert result.top5 == 1.0 and result.topk == 3  # fewer than 5 classes: top-k over all of them
    np.testing.assert_array_equal(result.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    logits = one_hot_logits([0, 1, 1, 1, 2, 0], 3, confidence=[5, 2, 5, 5, 5, 7])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 1, 1, 2, 2])).item()
    assert result.loss == pytest.approx(expected)


def test_precision_recall_f1(three_classes: EvaluationResult) -> None:
    rows = {r["name"]: r for r in three_classes.per_class}
    assert rows["a"]["precision"] == pytest.approx(1 / 2) and rows["a"]["recall"] == pytest.approx(1 / 2)
    assert rows["b"]["precision"] == pytest.approx(2 / 3) and rows["b"]["recall"] == pytest.approx(1.0)
    assert rows["c"]["precision"] == pytest.approx(1.0) and rows["c"]["recall"] == pytest.approx(1 / 2)
    assert rows["b"]["f1"] == pytest.approx(0.8)
    assert rows["c"]["f1"] == pytest.approx(2 / 3)
    assert [r["support"] for r in three_classes.per_class] == [2, 2, 2]


def test_confused_pairs_and_mistakes(three_classes: EvaluationResult) -> None:
    assert {(p["true"], p["predicted"], p["count"]) for p in three_classes.confused_pairs} == {
        ("a", "b", 1),
        ("c", "a", 1),
    }
    mistakes = three_classes.mistakes
    # The mistake with logit 7 is more confident than the one with logit 2.
    assert [(m["file"], m["true"], m["predicted"]) for m in mistakes] == [("f5.jpg", "c", "a"), ("f1.jpg", "a", "b")]
    assert mistakes[0]["probability"] == pytest.approx(math.exp(7) / (math.exp(7) + 2))
    assert mistakes[0]["probability"] > mistakes[1]["probability"]
    assert mistakes[0]["true_probability"] == pytest.approx(1 / (math.exp(7) + 2))


def test_top5_counts_the_target_within_the_five_best() -> None:
    # Seven classes; the target ranks 1st, 5th and 6th in the three rows.
    scores = torch.tensor([6.0, 5, 4, 3, 2, 1, 0])
    logits = scores.repeat(3, 1)
    targets = torch.tensor([0, 4, 5])
    result = summarize(logits, targets, [str(i) for i in range(7)], mistakes=1)
    assert result.top1 == pytest.approx(1 / 3)
    assert result.top5 == pytest.approx(2 / 3)
    assert len(result.mistakes) == 1 and result.mistakes[0]["file"] is None


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    result = summarize(one_hot_logits([0, 0], 2), torch.tensor([0, 1]), ["x", "y"])
    y = result.per_class[1]
    assert (y["precision"], y["recall"], y["f1"], y["support"]) == (0.0, 0.0, 0.0, 1)


def test_mismatched_inputs_are_errors() -> None:
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="class names"):
        summarize(logits, torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="targets"):
        summarize(logits, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="files"):
        summarize(logits, torch.tensor([0, 1]), ["a", "b", "c"], files=["one"])


def test_save_and_load_round_trip(three_classes: EvaluationResult, tmp_path) -> None:
    folder = three_classes.save(tmp_path / "evaluation")
    assert {p.name for p in folder.iterdir()} == {"metrics.json", "confusion.npy", "mistakes.json"}
    loaded = EvaluationResult.load(folder)
    np.testing.assert_array_equal(loaded.confusion, three_classes.confusion)
    assert loaded.metrics() == three_classes.metrics()
    assert loaded.mistakes == three_classes.mistakes
    with pytest.raises(FileNotFoundError, match=r"metrics\.json"):
        EvaluationResult.load(tmp_path / "nothing")


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda c: st.tuples(
            st.just(c),
            st.lists(st.tuples(st.integers(0, c - 1), st.lists(st.floats(-5, 5), min_size=c, max_size=c)), min_size=1),
        )
    )
)
def test_invariants_hold_for_any_logits(case) -> None:
    num_classes, rows = case
    targets = torch.tensor([t for t, _ in rows])
    logits = torch.tensor([scores for _, scores in rows])
    result = summarize(logits, targets, [f"c{i}" for i in range(num_classes)])
    assert 0.0 <= result.top1 <= result.top5 <= 1.0
    assert result.confusion.sum() == len(rows)
    assert sum(r["support"] for r in result.per_class) == len(rows)
    assert result.top1 == pytest.approx(np.trace(result.confusion) / len(rows))
    assert all(0.0 <= r[k] <= 1.0 for r in result.per_class for k in ("precision", "recall", "f1"))
    assert len(result.mistakes) == min(32, len(rows) - int(np.trace(result.confusion)))


def test_predict_logits_is_the_model_on_the_eval_transform(tmp_path) -> None:
    from kennel.models import create_model, get_backbone

    torch.manual_seed(0)
    model = create_model("tiny", 4, pretrained=False)
    preprocessing = get_backbone("tiny").preprocessing
    files = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40 + 5 * i, 48), (40 * i, 200 - 30 * i, 90)).save(path)
        files.append(path)
    model.train()
    logits = predict_logits(model, files, preprocessing, "cpu", batch_size=2, workers=0)
    assert logits.shape == (5, 4)
    assert model.training  # restored: the caller may be in the middle of training
    transform = preprocessing.eval_transform()
    model.eval()
    with torch.no_grad():
        expected = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in files]))
    torch.testing.assert_close(logits, expected)

import numpy as np
import pytest

from plmkit.core import metrics


def test_classification_metrics_match_hand_computed_values():
    pred = [1, 0, 1, 1, 0, 0]
    ref = [1, 0, 0, 1, 1, 0]
    assert metrics.accuracy(pred, ref)["accuracy"] == pytest.approx(4 / 6)
    # positive class: tp=2, fp=1, fn=1 -> P=R=2/3 -> F1=2/3
    assert metrics.f1(pred, ref)["f1"] == pytest.approx(2 / 3)
    # both classes have F1 2/3 here
    assert metrics.macro_f1(pred, ref)["macro_f1"] == pytest.approx(2 / 3)
    # MCC = (tp*tn - fp*fn)/sqrt(...) = (2*2-1*1)/sqrt(3*3*3*3) = 3/9
    assert metrics.matthews(pred, ref)["matthews_correlation"] == pytest.approx(1 / 3)


def test_correlations():
    out = metrics.pearson_spearman([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0])
    assert out["spearman"] == pytest.approx(1.0)
    assert 0.98 < out["pearson"] < 1.0


def test_bleu_perfect_and_partial():
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(100.0)
    one_ref = metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])["bleu"]
    two_refs = metrics.bleu(["the cat sat on a mat"], [["the cat sat on the mat", "a cat is on a mat"]])["bleu"]
    assert 0 < one_ref < two_refs < 100


def test_recall_at_k():
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.2, 0.3], [0.1, 0.2, 0.7]])
    out = metrics.recall_at_k(scores, [0, 1, 2], ks=(1, 2, 3))
    assert out == {"recall@1": pytest.approx(2 / 3), "recall@2": pytest.approx(2 / 3), "recall@3": 1.0}


def test_compute_combines_and_rejects_unknown():
    out = metrics.compute(["accuracy", "f1"], [1, 0], [1, 1])
    assert out == {"accuracy": 0.5, "f1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compute(["rouge"], [1], [1])


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_f1_equal_scikit_learns(seed):
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    classes = 2 + seed  # 2..6 classes; some labels never predicted or never present
    ref = rng.integers(0, classes, 40)
    pred = np.where(rng.random(40) < 0.5, ref, rng.integers(0, classes + 1, 40))
    assert metrics.accuracy(pred, ref)["accuracy"] == pytest.approx(skm.accuracy_score(ref, pred), abs=1e-12)
    assert metrics.macro_f1(pred, ref)["macro_f1"] == pytest.approx(
        skm.f1_score(ref, pred, average="macro", zero_division=0), abs=1e-12)
    binary_ref, binary_pred = ref % 2, pred % 2
    assert metrics.f1(binary_pred, binary_ref)["f1"] == pytest.approx(
        skm.f1_score(binary_ref, binary_pred, average="binary", zero_division=0), abs=1e-12)
    assert metrics.f1([0, 0], [0, 0])["f1"] == skm.f1_score([0, 0], [0, 0], zero_division=0) == 0.0


def test_binary_f1_rejects_more_than_two_labels():
    with pytest.raises(ValueError, match="binary F1 needs labels 0 and 1"):
        metrics.f1([0, 2], [1, 2])

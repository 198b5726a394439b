import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from plmkit.child_tuning import fisher_mask, fisher_scores, keep_threshold
from plmkit.core.testing import tiny_model


@pytest.mark.parametrize("n, p", [(10, 0.3), (1001, 0.3), (4448, 0.3), (20000, 0.1), (777, 0.25), (5, 1.0), (99, 0.01)])
def test_threshold_keeps_what_np_percentile_keeps(n, p):
    gen = torch.Generator().manual_seed(n)
    scores = [torch.rand(n // 3 + 1, generator=gen), torch.rand(n, generator=gen) ** 4]
    flat = torch.cat(scores).numpy()
    reference = flat >= np.percentile(flat, (1 - p) * 100)
    ours = flat >= keep_threshold(scores, p).item()
    assert np.array_equal(ours, reference)


def test_threshold_keeps_ties():
    scores = [torch.zeros(10), torch.ones(10)]
    assert keep_threshold(scores, 0.3).item() == 1.0  # all ten tied top entries survive


def test_threshold_uses_torch_kthvalue_and_linear_memory(monkeypatch):
    calls = []
    kthvalue = torch.kthvalue
    monkeypatch.setattr(torch, "kthvalue", lambda *a, **k: calls.append(a[1]) or kthvalue(*a, **k))
    monkeypatch.setattr(torch, "sort", lambda *a, **k: pytest.fail("keep_threshold must not sort"))
    per_element = []
    for n in (250_000, 1_000_000):
        scores = [torch.rand(n // 4) for _ in range(4)]
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            keep_threshold(scores, 0.3)
        allocated = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
        per_element.append(allocated / n)
    assert len(calls) == 2
    # one float32 copy of the scores plus kthvalue's working copy: a constant number of bytes per entry
    assert per_element[0] == pytest.approx(per_element[1], rel=0.05) and per_element[1] <= 20


def _batches(tok, texts, labels, size):
    enc = tok(texts, padding="max_length", max_length=10, return_tensors="pt")
    enc["labels"] = torch.tensor(labels)
    return [{k: v[i : i + size] for k, v in enc.items()} for i in range(0, len(texts), size)]


TEXTS = ["good movie", "bad film", "great fun story", "terrible", "the best", "worst film ever", "love it", "dull"]
LABELS = [0, 1, 0, 1, 0, 1, 0, 1]


def test_per_example_fisher_is_the_mean_of_squared_single_example_gradients():
    model, tok = tiny_model("bert")
    per_example = fisher_scores(model, _batches(tok, TEXTS, LABELS, 4), per_example=True, grad_clip=0)
    singles = fisher_scores(model, _batches(tok, TEXTS, LABELS, 1), per_example=False, grad_clip=0)
    assert per_example.keys() == singles.keys()
    for name in singles:
        torch.testing.assert_close(per_example[name], singles[name], rtol=1e-4, atol=1e-12)


def test_fisher_pass_scores_layer_tensors_and_leaves_model_and_rng_as_they_were():
    model, tok = tiny_model("bert", dropout=True)
    model.eval()
    rng = torch.random.get_rng_state()
    scores = fisher_scores(model, _batches(tok, TEXTS, LABELS, 4))
    assert set(scores) == {n for n, _ in model.named_parameters() if "layer" in n}
    assert "bert.embeddings.LayerNorm.weight" not in scores  # case-sensitive, as in the reference
    assert torch.equal(rng, torch.random.get_rng_state())
    assert not model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_fisher_mask_keeps_about_reserve_p_and_rejects_empty_pattern():
    model, tok = tiny_model("bert")
    mask = fisher_mask(model, _batches(tok, TEXTS, LABELS, 4), reserve_p=0.2)
    kept = sum(m.sum().item() for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert 0.2 <= kept < 0.201
    with pytest.raises(ValueError, match="no trainable parameter name matches"):
        fisher_scores(model, [], pattern="nothing-like-this")

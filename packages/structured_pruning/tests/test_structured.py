"""structured_pruning: every algorithm on tiny BERT/RoBERTa/XLM-R, ranking scopes, compaction, config errors."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.core.sparsity import keep_masks, load_compacted, units_to_keep
from plmkit.core.training import MethodError, build_method
from plmkit.structured_pruning import StructuredPruningConfig, StructuredPruningMethod, first_order_events


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlmr"])
@pytest.mark.parametrize("algorithm", ["first_order", "movement", "l0"])
def test_algorithm_prunes_to_target_and_compacts_exactly(kind, algorithm, tmp_path, train_tiny, inputs_for):
    method = StructuredPruningMethod(algorithm=algorithm, sparsity=0.5)
    _, model, _ = train_tiny(method, kind, tmp_path=tmp_path)
    gates = method.unit_gates
    assert not gates.learning
    assert gates.head_mask.sum(-1).tolist() == [[2.0, 2.0]]  # 4 heads per layer, half kept (layer ranking)
    assert gates.neuron_mask.sum(-1).tolist() == [[32.0, 32.0]]
    inputs = inputs_for(model)
    gated = _logits(model, inputs)
    compacted = method.export(model)
    assert not hasattr(compacted, "unit_gates")
    assert compacted.config.plmkit_compaction["intermediate_sizes"] == [32, 32]
    torch.testing.assert_close(_logits(compacted, inputs), gated, atol=1e-5, rtol=0)
    compacted.save_pretrained(tmp_path / "exported")
    reloaded = load_compacted(AutoModelForSequenceClassification, tmp_path / "exported")
    torch.testing.assert_close(_logits(reloaded, inputs), gated, atol=1e-5, rtol=0)


def test_iterative_first_order_schedule_and_global_scope(tmp_path, train_tiny):
    assert first_order_events(0.6, 1, 100, 0.2, 0.3) == [(20, 0.6)]
    events = first_order_events(0.6, 3, 100, 0.2, 0.3)
    assert [s for _, s in events] == pytest.approx([0.2, 0.4, 0.6])
    assert [at for at, _ in events] == [20, 45, 70]
    method = StructuredPruningMethod(sparsity=0.75, iterations=3, ranking="global", min_heads_per_layer=1)
    train_tiny(method, "bert", tmp_path=tmp_path, epochs=3)
    heads, neurons = method.unit_gates.head_mask[0], method.unit_gates.neuron_mask[0]
    assert heads.sum() == 2 and (heads.sum(-1) >= 1).all()  # 6 of 8 heads pruned globally, one kept per layer
    assert neurons.sum() == 32  # global: layers may differ


def test_scopes_rank_per_layer_or_globally():
    scores = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]])
    assert keep_masks(scores, 0.5, "layer").tolist() == [[[0, 0, 1, 1], [0, 0, 1, 1]]]
    assert keep_masks(scores, 0.5, "global").tolist() == [[[0, 0, 0, 0], [1, 1, 1, 1]]]
    assert keep_masks(scores, 0.5, "global", 1).tolist() == [[[0, 0, 0, 1], [0, 1, 1, 1]]]
    assert torch.equal(keep_masks(scores, 0.5, "layer")[0], units_to_keep(scores[0], 0.5, "layer"))


def test_movement_scores_get_straight_through_gradients(inputs_for):
    from plmkit.core.testing import tiny_model

    model, _ = tiny_model("bert")
    method = StructuredPruningMethod(algorithm="movement", sparsity=0.5)
    method.prepare_model(model)
    gates = method.unit_gates
    gates.learning, gates.sparsity = True, 0.5
    out = model(**inputs_for(model), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    assert gates.head_scores.grad is not None and gates.head_scores.grad.abs().sum() > 0
    # Pruned units receive gradients too (the STE), so they can come back.
    assert gates.neuron_scores.grad.ne(0).float().mean() > 0.9


def test_l0_lagrangian_pushes_toward_target():
    from plmkit.core.testing import tiny_model

    model, _ = tiny_model("bert")
    method = StructuredPruningMethod(algorithm="l0", sparsity=0.5)
    method.prepare_model(model)
    gates = method.unit_gates
    gates.learning, gates.sparsity = True, 0.5
    loss = method.loss_terms(model.train(), {}, None, None)["l0"]
    loss.backward()
    # Expected sparsity ~0 is below the target 0.5: dloss/dlambda1 = gap < 0, so descent would lower lambda1 ...
    assert gates.lagrange.grad[0] < 0
    method.before_optimizer_step(model, None)
    assert gates.lagrange.grad[0] > 0  # ... and the multipliers ascend
    gates.learning = False
    assert method.loss_terms(model, {}, None, None) == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.0}, "sparsity must be in"),
        ({"algorithm": "magnitude"}, "algorithm must be one of"),
        ({"ranking": "model"}, "ranking must be one of"),
        ({"iterations": 3, "algorithm": "l0"}, "iterations > 1 applies to algorithm first_order only"),
        ({"initial_warmup": 0.6, "final_warmup": 0.5}, r"initial_warmup \+ final_warmup"),
        ({"setting": "per_language"}, "at least two distinct"),
        ({"setting": "per_language", "languages": ["en", "de"], "export_language": "fr"}, "not in languages"),
        ({"languages": ["en", "de"]}, "per_language only"),
        ({"importance_batches": 0}, "importance_batches must be >= 1"),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    with pytest.raises(MethodError, match=message):
        StructuredPruningConfig(**options)


def test_registered_and_unknown_option():
    assert isinstance(build_method("structured_pruning", {"sparsity": 0.3}), StructuredPruningMethod)
    with pytest.raises(MethodError, match="has no option"):
        build_method("structured_pruning", {"sparsty": 0.3})

"""per_language masks on tiny XLM-R with multilingual toy data: one mask per language over shared weights."""

import pytest
import torch

from plmkit.core.testing import tiny_model
from plmkit.core.training import MethodError
from plmkit.structured_pruning import TOY_LANGUAGES, StructuredPruningMethod, multilingual_toy_dataset


def _forward(model, inputs, language):
    model.unit_gates.use_rows(language)
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("algorithm", ["first_order", "movement"])
def test_languages_get_different_masks_over_the_same_weights(algorithm, train_tiny, inputs_for, tmp_path):
    method = StructuredPruningMethod(algorithm=algorithm, sparsity=0.5, setting="per_language",
                                     languages=list(TOY_LANGUAGES), importance_batches=4)
    _, model, _ = train_tiny(method, "xlmr", dataset=multilingual_toy_dataset(), tmp_path=tmp_path)
    heads, neurons = method.unit_gates.head_mask, method.unit_gates.neuron_mask
    assert heads.shape == (3, 2, 4) and (heads.sum(-1) == 2).all() and (neurons.sum(-1) == 32).all()
    assert any(not (torch.equal(heads[0], heads[g]) and torch.equal(neurons[0], neurons[g])) for g in (1, 2))
    # One weight set: a mixed batch equals each example run alone with its language's mask.
    inputs = inputs_for(model, batch=3)
    language = torch.tensor([0, 1, 2])
    mixed = _forward(model, inputs, language)
    alone = [_forward(model, {k: v[i : i + 1] for k, v in inputs.items()}, language[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(mixed, torch.cat(alone), atol=1e-5, rtol=0)
    assert not torch.allclose(alone[0], _forward(model, {k: v[:1] for k, v in inputs.items()}, torch.tensor([1])))
    method.config.export_language = "de"
    compacted = method.export(model)
    with torch.no_grad():
        torch.testing.assert_close(compacted(**{k: v[1:2] for k, v in inputs.items()}).logits, alone[1],
                                   atol=1e-5, rtol=0)


def test_missing_or_wrong_rows_raise(inputs_for):
    model, _ = tiny_model("xlmr")
    StructuredPruningMethod(setting="per_language", languages=["en", "de"]).prepare_model(model)
    inputs = inputs_for(model)
    with pytest.raises(MethodError, match="need each example's row"):
        model(**inputs)
    with pytest.raises(MethodError, match=r"must be in \[0, 2\)"):
        model.unit_gates.use_rows([0, 1, 2])
    model.unit_gates.use_rows([0, 1])
    with pytest.raises(MethodError, match="2 mask rows given for a batch of 3"):
        model(**inputs)

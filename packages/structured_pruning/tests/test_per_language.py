"""per_language masks on tiny XLM-R with multilingual toy data: one mask per language over shared weights."""

import pytest
import torch

from plmkit.core.training import MethodError
from plmkit.structured_pruning import TOY_LANGUAGES, StructuredPruningMethod, multilingual_toy_dataset


@pytest.mark.parametrize("algorithm", ["first_order", "movement"])
def test_languages_get_different_masks_over_the_same_weights(algorithm, train_tiny, inputs_for, tmp_path):
    method = StructuredPruningMethod(algorithm=algorithm, sparsity=0.5, setting="per_language",
                                     languages=list(TOY_LANGUAGES), importance_batches=4)
    _, model, _ = train_tiny(method, "xlmr", dataset=multilingual_toy_dataset(), tmp_path=tmp_path,
                             remove_unused_columns=False)
    heads, neurons = method.unit_gates.head_mask, method.unit_gates.neuron_mask
    assert heads.shape == (3, 2, 4) and (heads.sum(-1) == 2).all() and (neurons.sum(-1) == 32).all()
    assert any(not (torch.equal(heads[0], heads[g]) and torch.equal(neurons[0], neurons[g])) for g in (1, 2))
    # One weight set: a mixed batch equals each example run alone with its language's mask.
    inputs = inputs_for(model, batch=3)
    language = torch.tensor([0, 1, 2])
    with torch.no_grad():
        mixed = model(**inputs, language=language).logits
        alone = [model(**{k: v[i : i + 1] for k, v in inputs.items()}, language=language[i : i + 1]).logits
                 for i in range(3)]
    torch.testing.assert_close(mixed, torch.cat(alone), atol=1e-5, rtol=0)
    assert not torch.allclose(alone[0], model(**{k: v[:1] for k, v in inputs.items()},
                                              language=torch.tensor([1])).logits)
    method.config.export_language = "de"
    compacted = method.export(model)
    with torch.no_grad():
        torch.testing.assert_close(compacted(**{k: v[1:2] for k, v in inputs.items()}).logits, alone[1],
                                   atol=1e-5, rtol=0)


def test_missing_language_ids_raise(inputs_for):
    from plmkit.core.testing import tiny_model

    model, _ = tiny_model("xlmr")
    StructuredPruningMethod(setting="per_language", languages=["en", "de"]).prepare_model(model)
    with pytest.raises(MethodError, match="need a `language` id"):
        model(**inputs_for(model))

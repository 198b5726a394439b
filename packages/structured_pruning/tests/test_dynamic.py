"""Dynamic Sparsification: nested masks, sandwich sampling, compaction at any sparsity, config errors."""

import pytest
import torch

from plmkit.core.sparsity import compact_model, mask_linears
from plmkit.core.testing import tiny_model
from plmkit.core.training import MethodError
from plmkit.structured_pruning import (
    DynamicSparsificationConfig,
    DynamicSparsificationMethod,
    sample_sparsities,
)


def test_sandwich_always_includes_smallest_and_largest():
    grid = DynamicSparsificationConfig().grid()
    assert grid == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        sample = sample_sparsities(grid, 4, gen)
        assert sample[:2] == [0.0, 0.9] and len(set(sample)) == 4
        seen.update(sample[2:])
    assert seen == set(grid[1:-1])
    assert sample_sparsities(grid, 2, gen) == [0.0, 0.9]


@pytest.mark.parametrize("ranking", ["layer", "global"])
def test_masks_are_nested(ranking):
    model, _ = tiny_model("xlmr")
    method = DynamicSparsificationMethod(ranking=ranking)
    method.prepare_model(model)
    gen = torch.Generator().manual_seed(0)
    method.set_ordering(torch.rand(2, 4, generator=gen), torch.rand(2, 64, generator=gen))
    previous = None
    for sparsity in [0.0, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9]:
        heads, neurons = (m[0] for m in method.unit_gates.masks(sparsity))
        if previous is not None:  # kept now => kept at every smaller sparsity
            assert bool((heads <= previous[0]).all()) and bool((neurons <= previous[1]).all())
        previous = heads, neurons
    assert previous[1].sum() == (128 - int(0.9 * 128) if ranking == "global" else 2 * (64 - int(0.9 * 64)))


def test_training_runs_several_sparsities_and_compacts_at_any(train_tiny, inputs_for, tmp_path):
    method = DynamicSparsificationMethod(sparsity=0.5, num_sampled=3, ordering_warmup=0.25)
    _, model, _ = train_tiny(method, "roberta", tmp_path=tmp_path)
    assert method.ordered and method.unit_gates.head_importance.abs().sum() > 0
    assert method.unit_gates.head_mask.sum() == 4  # left at config.sparsity after training
    inputs = inputs_for(model)
    for sparsity in [0.0, 0.3, 0.6, 0.9]:
        method.set_sparsity(sparsity)
        with torch.no_grad():
            gated = model(**inputs).logits
        heads, neurons = (m[0] for m in method.unit_gates.masks(sparsity))
        compacted, _ = tiny_model("roberta")
        compacted.load_state_dict({k: v for k, v in model.state_dict().items() if "unit_gates" not in k})
        compact_model(compacted.eval(), heads, neurons)
        with torch.no_grad():
            torch.testing.assert_close(compacted(**inputs).logits, gated, atol=1e-5, rtol=0)


def test_loss_terms_sum_the_other_sampled_sparsities(inputs_for):
    model, _ = tiny_model("bert")
    method = DynamicSparsificationMethod(num_sampled=3, distill=False)
    method.prepare_model(model)
    method.start(0)
    method.set_ordering(torch.rand(2, 4), torch.rand(2, 64))
    forwards = []
    model.register_forward_pre_hook(lambda m, a, k: forwards.append(m.unit_gates.head_mask.sum().item()),
                                    with_kwargs=True)
    inputs = {**inputs_for(model), "labels": torch.tensor([0, 1, 0])}
    model.train()
    outputs = model(**inputs)
    terms = method.loss_terms(model, {**inputs, "example_id": torch.arange(3)}, outputs, None)
    assert list(terms) == ["subnetworks"] and terms["subnetworks"].requires_grad
    assert len(forwards) == 3  # the Trainer's forward + two more sub-networks
    assert forwards[1] == 2  # the largest sparsity (0.9 of 4 heads, each layer keeps its top head)
    assert method.unit_gates.head_mask.sum() == 8  # back at the smallest sparsity
    method.ordered = False
    assert method.loss_terms(model, inputs, outputs, None) == {}  # dense fine-tuning until the ordering exists


@pytest.mark.parametrize("distill", [True, False])
def test_sliced_subnetworks_give_the_gated_losses_and_gradients(inputs_for, distill):
    """slice_subnetworks (default) runs the sampled sub-networks on their kept units' weights only: same loss
    terms and gradients as the gated full-width forwards."""
    results = []
    for slice_subnetworks in (True, False):
        model, _ = tiny_model("bert")
        method = DynamicSparsificationMethod(num_sampled=3, distill=distill, slice_subnetworks=slice_subnetworks)
        method.prepare_model(model)
        assert method.slice is slice_subnetworks
        method.start(0)
        method.set_ordering(torch.rand(2, 4, generator=torch.Generator().manual_seed(1)),
                            torch.rand(2, 64, generator=torch.Generator().manual_seed(2)))
        inputs = {**inputs_for(model), "labels": torch.tensor([0, 1, 0])}
        outputs = model.train()(**inputs)
        term = method.loss_terms(model, inputs, outputs, None)["distill" if distill else "subnetworks"]
        (outputs.loss + term).backward()
        results.append((term.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (sliced, sliced_grads), (gated, gated_grads) = results
    torch.testing.assert_close(sliced, gated, atol=1e-5, rtol=0)
    assert sliced_grads.keys() == gated_grads.keys()
    for name, grad in gated_grads.items():
        torch.testing.assert_close(sliced_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_models_that_cannot_be_sliced_fall_back_to_gates(inputs_for, caplog):
    model, _ = tiny_model("bert")
    mask_linears(model)  # MaskedLinear projections: not sliced
    method = DynamicSparsificationMethod(num_sampled=3)
    with caplog.at_level("WARNING"):
        method.prepare_model(model)
    assert not method.slice and "cannot be sliced (MaskedLinear" in caplog.text
    method.start(0)
    method.set_ordering(torch.rand(2, 4), torch.rand(2, 64))
    inputs = {**inputs_for(model), "labels": torch.tensor([0, 1, 0])}
    assert method.loss_terms(model, inputs, model.train()(**inputs), None)["distill"].requires_grad


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_sampled": 1}, "num_sampled must be >= 2"),
        ({"min_sparsity": 0.5, "max_sparsity": 0.4}, "must be below max_sparsity"),
        ({"sparsity_step": 0.0}, "sparsity_step must be in"),
        ({"max_sparsity": 1.0}, "max_sparsity must be in"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"ranking": "row"}, "ranking must be one of"),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    with pytest.raises(MethodError, match=message):
        DynamicSparsificationConfig(**options)


def test_gradient_checkpointing_is_refused(train_tiny, tmp_path):
    with pytest.raises(MethodError, match="drop --gradient_checkpointing"):
        train_tiny(DynamicSparsificationMethod(), "bert", tmp_path=tmp_path, gradient_checkpointing=True)


def test_ds_cost_benchmark_runs_on_a_tiny_model(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ds_cost.py"
    out = tmp_path / "ds_cost.json"
    subprocess.run([sys.executable, str(script), "--model", "tiny-bert", "--repeats", "1", "--json", str(out)],
                   check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert set(result["step_cpu_s"]) == {"finetune", "ds_gated", "ds_sliced"}
    assert all(v > 0 for v in result["step_cpu_s"].values())
    assert result["sliced_vs_gated"] == result["step_cpu_s"]["ds_sliced"] / result["step_cpu_s"]["ds_gated"]
    assert len(result["middle_sparsities_drawn"]) == 8

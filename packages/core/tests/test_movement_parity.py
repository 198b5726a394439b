"""Movement pruning (MvP) against the HF movement-pruning reference (examples/research_projects/movement-pruning:
emmental ``MaskedLinear`` with ``TopKBinarizer``, ``masked_run_glue.py``'s optimizer groups, linear LR schedule with
warm-up and ``schedule_threshold``, transformers 4's AdamW).

Golden values (data/movement_golden.safetensors, float64) were computed by running the reference modules on the tiny
BERT below: 8 optimizer steps on 8 fixed batches of 8, weights lr 1e-3, scores lr 1e-2 (weight decay 0, the
reference's default), eps 1e-8, 2 warm-up steps, keep fraction 1.0 -> 0.5 with initial_warmup 1 and final_warmup 2
(in multiples of the warm-up steps: our t_i = 0.25, t_f = 0.5), gradients clipped to norm 1.
Here the same steps run through plmkit's own path: the `pruning` method's layers, its optimizer groups in the core
Trainer, and the cubic-schedule callback.
"""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors import safe_open
from torch.utils.data import SequentialSampler
from transformers import TrainingArguments, default_data_collator

from plmkit.core.pruning import PruningConfig, PruningMethod
from plmkit.core.sparsity import masked_layers
from plmkit.core.testing import LegacyEpsAdamW, tiny_model
from plmkit.core.training import Trainer

GOLDEN = Path(__file__).parent / "data" / "movement_golden.safetensors"


class _InOrder(PruningMethod):
    """The reference's batches in their stored order (the Trainer would shuffle them)."""

    def train_sampler(self, dataset, args):  # noqa: ANN001, ANN201
        return SequentialSampler(dataset)


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return meta, tensors


def _part(tensors, prefix):
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


@pytest.fixture(scope="module")
def trained(golden, tmp_path_factory):
    meta, tensors = golden
    model, _ = tiny_model("bert")
    model = model.double()
    model.load_state_dict(_part(tensors, "init"), strict=True)
    steps, warmup = int(meta["steps"]), int(meta["warmup_steps"])
    config = PruningConfig(
        scorer="movement",
        scores_init="zeros",
        sparsity=1.0 - float(meta["final_threshold"]),
        initial_warmup=int(meta["initial_warmup"]) * warmup / steps,
        final_warmup=int(meta["final_warmup"]) * warmup / steps,
        scores_learning_rate=float(meta["scores_lr"]),
        min_steps=0,
    )
    data = Dataset.from_dict({k: tensors[k].tolist() for k in ("input_ids", "attention_mask", "labels")})
    args = TrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("mvp")), max_steps=steps, per_device_train_batch_size=int(meta["batch"]),
        learning_rate=float(meta["lr"]), warmup_steps=warmup, weight_decay=float(meta["weight_decay"]),
        adam_epsilon=float(meta["eps"]), max_grad_norm=1.0, lr_scheduler_type="linear", report_to="none",
        save_strategy="no", logging_strategy="no", use_cpu=True, dataloader_pin_memory=False, seed=0,
    )
    trainer = Trainer(model, args, method=_InOrder(config), train_dataset=data, data_collator=default_data_collator)
    plain = trainer.get_optimizer_cls_and_kwargs
    # Same optimizer code path, with the reference AdamW's eps placement (see LegacyEpsAdamW).
    trainer.get_optimizer_cls_and_kwargs = lambda a, m=None: (LegacyEpsAdamW, plain(a, m)[1])
    losses = []
    original = trainer.compute_loss

    def recording(*a, **k):  # noqa: ANN002, ANN003, ANN202
        loss = original(*a, **k)
        losses.append((loss[0] if isinstance(loss, tuple) else loss).item())
        return loss

    trainer.compute_loss = recording
    trainer.train()
    return trainer.model, losses


def test_losses_match_the_reference_at_every_step(golden, trained):
    _, tensors = golden
    _, losses = trained
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), tensors["losses"], rtol=0, atol=1e-10)


def test_scores_masks_and_weights_match_the_reference_after_eight_steps(golden, trained):
    _, tensors = golden
    model, _ = trained
    final = _part(tensors, "final")
    state = model.state_dict()
    assert set(final) <= set(state)
    scores = [k for k in final if k.endswith(".scores")]
    assert len(scores) == 12
    for name, expected in final.items():
        assert torch.allclose(state[name], expected, rtol=0, atol=1e-10), name
    masks = _part(tensors, "mask")
    layers = dict(masked_layers(model))
    assert set(masks) == set(layers)
    for name, layer in layers.items():
        assert torch.equal(layer.mask().detach(), masks[name]), name
        assert int((masks[name] == 0).sum()) == layer.weight.numel() // 2

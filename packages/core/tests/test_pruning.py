import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.core.cli import main
from plmkit.core.pruning import PruningConfig, PruningMethod
from plmkit.core.run import load_run
from plmkit.core.sparsity import MaskedLinear, masked_layers
from plmkit.core.testing import tiny_model
from plmkit.core.training import MethodError, build_method
from tests.helpers import TINY, write_toy_csvs


@pytest.mark.parametrize("scorer", ["movement", "magnitude"])
def test_cli_run_reaches_the_target_sparsity_reloads_and_exports(tmp_path, scorer):
    flags = write_toy_csvs(tmp_path / "d")
    out = tmp_path / "run"
    argv = ["train", *TINY, *flags, "--output_dir", str(out), "--max_steps", "10", "--learning_rate", "1e-3",
            "--method", "pruning", "--method.scorer", scorer, "--method.sparsity", "0.6", "--method.min_steps", "0"]
    assert main(argv) == 0
    model, tok, method, _ = load_run(out)
    layers = masked_layers(model)
    assert len(layers) == 2 * 6  # q, k, v, attention output, FFN in, FFN out per layer
    for _, layer in layers:
        assert layer.num_pruned == int(0.6 * layer.weight.numel())
        assert (layer.mask() == 0).sum() == layer.num_pruned
    batch = tok(["a good film", "the worst"], padding=True, return_tensors="pt")

    assert main(["export", str(out), "--output_dir", str(tmp_path / "exported")]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, model(**batch).logits, atol=1e-6)
    w = plain.bert.encoder.layer[0].intermediate.dense.weight
    assert (w == 0).sum() == int(0.6 * w.numel())
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] >= 0.0


def test_movement_scores_train_with_their_own_learning_rate(tmp_path):
    model, _ = tiny_model("bert")
    method = PruningMethod(PruningConfig(sparsity=0.5, scores_learning_rate=0.05, min_steps=0))
    model = method.prepare_model(model)
    groups = method.parameter_groups(model)
    assert groups[1]["lr"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert len(groups[1]["params"]) == 12 and all(isinstance(m, MaskedLinear) for _, m in masked_layers(model))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\), got -0.1"),
        ({"scorer": "random"}, "scorer must be"),
        ({"initial_sparsity": 0.5, "sparsity": 0.3}, "exceeds the final sparsity"),
        ({"initial_warmup": 0.6, "final_warmup": 0.5}, "sum below 1"),
        ({"min_steps": -1}, "min_steps must be >= 0"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(MethodError, match=message):
        build_method("pruning", options)


def test_cli_rejects_sparsity_outside_range_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", "rt-polarity", "--output_dir", str(out),
                 "--method", "pruning", "--method.sparsity", "1.2"]) == 2
    assert "sparsity must be in [0, 1), got 1.2" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_too_short_to_recover_from_pruning_stops_with_the_options_to_set(tmp_path, capsys):
    flags = write_toy_csvs(tmp_path / "d")
    out = tmp_path / "run"
    assert main(["train", *TINY, *flags, "--output_dir", str(out), "--max_steps", "499", "--method", "pruning"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("plmkit: error: pruning: 499 optimizer steps are too few to "
                                                     "prune to 90% sparsity")
    assert all(flag in errors[0] for flag in ("--num_train_epochs", "--max_steps", "--method.min_steps 0"))
    assert not (out / "model.safetensors").exists()


def test_export_can_change_a_method_option(tmp_path, capsys):
    flags = write_toy_csvs(tmp_path / "d")
    out = tmp_path / "run"
    assert main(["train", *TINY, *flags, "--output_dir", str(out), "--max_steps", "4",
                 "--method", "pruning", "--method.scorer", "magnitude", "--method.sparsity", "0.5",
                 "--method.min_steps", "0"]) == 0
    assert main(["export", str(out), "--output_dir", str(tmp_path / "e"), "--method.ranking", "global"]) == 0
    model, _, method, _ = load_run(out, {"ranking": "global"})
    assert method.config.ranking == "global" and method.config.sparsity == 0.5
    assert main(["export", str(out), "--output_dir", str(tmp_path / "e2"), "--method.nope", "1"]) == 2
    assert "no option(s) ['nope']" in capsys.readouterr().err


class _SignalColumns(torch.nn.Module):
    """x [B, 32] -> one pruned linear layer -> 2 logits; only inputs 0-3 carry the label (x0 + x1 - x2 - x3 > 0).

    The weights on the signal inputs start small (0.05, already with the helpful sign) and every other weight large
    (+-0.3): the case movement pruning was made for, where magnitude keeps the wrong weights."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList([torch.nn.Linear(32, 2)])
        with torch.no_grad():
            w = self.encoder.layer[0].weight
            w.copy_(0.3 * torch.sign(torch.randn_like(w)))
            w[1, :4] = 0.05 * torch.tensor([1.0, 1.0, -1.0, -1.0])
            w[0, :4] = -w[1, :4]

    def forward(self, x, labels=None):  # noqa: ANN001, ANN201
        logits = self.encoder.layer[0](x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def _signal_data(n: int, seed: int):  # noqa: ANN202
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    labels = (x[:, 0] + x[:, 1] - x[:, 2] - x[:, 3] > 0).long()
    return Dataset.from_dict({"x": x.tolist(), "labels": labels.tolist()})


@pytest.mark.parametrize("scorer, init, expected", [
    ("movement", "zeros", (1.0, 1.0)), ("movement", "magnitude", (1.0, 1.0)), ("magnitude", "zeros", (0.0, 0.25)),
])
def test_movement_scores_find_the_weights_that_carry_the_signal(tmp_path, scorer, init, expected):
    """Regression test of the whole movement path (scores, their STE gradient, their optimizer group, the
    schedule): the 8 weights on the signal inputs (2 rows x 4) must be exactly the 8 kept at 87.5% sparsity,
    although they are the smallest at the start; magnitude pruning keeps the large noise weights instead."""
    from transformers import TrainingArguments, default_data_collator

    from plmkit.core.training import Trainer

    torch.manual_seed(0)
    model = _SignalColumns()
    method = PruningMethod(PruningConfig(scorer=scorer, sparsity=0.875, scores_learning_rate=1e-2, scores_init=init,
                                         min_steps=0))
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=200, per_device_train_batch_size=32, learning_rate=1e-3,
        report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True, dataloader_pin_memory=False,
        seed=0, disable_tqdm=True,
    )
    Trainer(model, args, method=method, train_dataset=_signal_data(4096, 0),
            data_collator=default_data_collator).train()
    kept = model.encoder.layer[0].mask().detach()
    assert int(kept.sum()) == 8
    share_on_signal = float(kept[:, :4].sum() / kept.sum())
    assert expected[0] <= share_on_signal <= expected[1]


def test_reference_scores_rank_the_same_whatever_their_learning_rate(tmp_path):
    """Scores that start tied at 0 and learn with Adam (no weight decay) are lr x a function of the gradients, so
    their learning rate cannot change the masks: the reference's 1e-2 and 1e-4 give identical masks. (Why the
    reference setting's masks do not depend on the weights' size, see the core README.)"""
    from transformers import TrainingArguments, default_data_collator

    from plmkit.core.training import Trainer

    masks = []
    for scores_lr in (1e-2, 1e-4):
        torch.manual_seed(0)
        model = _SignalColumns()
        method = PruningMethod(PruningConfig(sparsity=0.5, scores_init="zeros", scores_learning_rate=scores_lr, min_steps=0,
                                             initial_warmup=0.2, final_warmup=0.2))
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=32,
                                 learning_rate=1e-3, report_to="none", save_strategy="no", logging_strategy="no",
                                 use_cpu=True, dataloader_pin_memory=False, seed=0, disable_tqdm=True)
        Trainer(model, args, method=method, train_dataset=_signal_data(2048, 1),
                data_collator=default_data_collator).train()
        masks.append(model.encoder.layer[0].mask().detach())
    assert torch.equal(masks[0], masks[1])

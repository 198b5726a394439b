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
            "--method", "pruning", "--method.scorer", scorer, "--method.sparsity", "0.6"]
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
    method = PruningMethod(PruningConfig(sparsity=0.5, scores_learning_rate=0.05))
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


def test_export_can_change_a_method_option(tmp_path, capsys):
    flags = write_toy_csvs(tmp_path / "d")
    out = tmp_path / "run"
    assert main(["train", *TINY, *flags, "--output_dir", str(out), "--max_steps", "4",
                 "--method", "pruning", "--method.scorer", "magnitude", "--method.sparsity", "0.5"]) == 0
    assert main(["export", str(out), "--output_dir", str(tmp_path / "e"), "--method.ranking", "global"]) == 0
    model, _, method, _ = load_run(out, {"ranking": "global"})
    assert method.config.ranking == "global" and method.config.sparsity == 0.5
    assert main(["export", str(out), "--output_dir", str(tmp_path / "e2"), "--method.nope", "1"]) == 2
    assert "no option(s) ['nope']" in capsys.readouterr().err

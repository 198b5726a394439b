"""CAP-m, CAP-soft and CAP-f end to end through ``plmkit train``, reloading with ``load_run``, and export."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.cap import CAPMethod
from plmkit.core.cli import main
from plmkit.core.run import evaluate_run, load_run
from plmkit.core.sparsity import MaskedLinear, load_compacted, masked_layers
from plmkit.core.training import MethodError, build_method

COMMON = ["--model_name_or_path", "tiny-bert", "--num_train_epochs", "4", "--per_device_train_batch_size", "16",
          "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
          "--num_threads", "1", "--warmup_steps", "1"]


def _train(files, out, *flags):
    argv = ["train", "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
            "--test_file", str(files["test"]), "--output_dir", str(out), *COMMON, *flags]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _ids():
    return torch.randint(5, 100, (3, 9), generator=torch.Generator().manual_seed(1))


def _check_reload(run, metrics):
    again = evaluate_run(run, "test")
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-6)


def test_cap_m_trains_reloads_and_exports_dense(files, teacher, tmp_path):
    run = tmp_path / "cap-m"
    metrics = _train(files, run, "--method", "cap", "--method.engine", "cap-m", "--method.sparsity", "0.5",
                     "--method.teacher", str(teacher), "--method.supervised_banks", "finetuned,snapshots",
                     "--method.min_steps", "0")
    banks = metrics["cap_banks"]  # PrC, FiC, and one snapshot at the start of each later epoch
    assert banks["snapshots"]["representations"] == 3 and banks["pretrained"]["ratio_vs_fp32"] == 0.5
    assert metrics["masked_sparsity"] == pytest.approx(0.5, abs=1e-3)
    model, _, method, _ = load_run(run)
    assert method.config.supervised_banks == ["finetuned", "snapshots"]
    assert all(layer.sparsity == pytest.approx(0.5, abs=1e-3) for _, layer in masked_layers(model))
    _check_reload(run, metrics)
    assert main(["export", str(run), "--output_dir", str(tmp_path / "dense")]) == 0
    dense = AutoModelForSequenceClassification.from_pretrained(tmp_path / "dense").eval()
    weight = dense.bert.encoder.layer[0].attention.self.query.weight
    assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(dense(input_ids=_ids()).logits, model(input_ids=_ids()).logits, atol=1e-5, rtol=0)


def test_cap_soft_reaches_its_target_sparsity_over_all_matrices(files, teacher, tmp_path):
    run = tmp_path / "cap-soft-target"
    metrics = _train(files, run, "--method", "cap", "--method.engine", "cap-soft", "--method.sparsity", "0.6",
                     "--method.teacher", str(teacher), "--method.min_steps", "0")
    assert metrics["masked_sparsity"] == pytest.approx(0.6, abs=1e-4)
    model, _, _, _ = load_run(run)
    layers = [layer for _, layer in masked_layers(model)]
    zeros = sum(int((m.mask() == 0).sum()) for m in layers)
    assert zeros == int(0.6 * sum(m.weight.numel() for m in layers))
    assert len({round(m.sparsity, 3) for m in layers}) > 1  # one global ranking: matrices end unequally sparse
    _check_reload(run, metrics)


def test_cap_soft_as_the_reference_with_teacher_trained_first(files, tmp_path):
    run = tmp_path / "cap-soft"
    metrics = _train(files, run, "--method", "cap", "--method.engine", "cap-soft", "--method.teacher_epochs", "1",
                     "--method.final_lambda", "50", "--method.soft_sparsity", "lambda", "--method.min_steps", "0")
    assert 0.0 <= metrics["masked_sparsity"] < 1.0
    assert (run / "teacher" / "config.json").exists()
    model, _, method, _ = load_run(run)
    layers = [layer for _, layer in masked_layers(model)]
    assert all(isinstance(m, MaskedLinear) and m.mode == "threshold" and m.threshold == pytest.approx(0.1)
               for m in layers)
    _check_reload(run, metrics)
    assert main(["export", str(run), "--output_dir", str(tmp_path / "dense")]) == 0
    dense = AutoModelForSequenceClassification.from_pretrained(tmp_path / "dense").eval()
    with torch.no_grad():
        torch.testing.assert_close(dense(input_ids=_ids()).logits, model(input_ids=_ids()).logits, atol=1e-5, rtol=0)


def test_cap_f_prunes_iteratively_and_compacts(files, teacher, tmp_path, monkeypatch):
    run = tmp_path / "cap-f"
    passes = []  # (banks holding representations, contrastive terms used) per importance batch
    full_loss = CAPMethod.full_loss

    def spy(self, model, batch, with_banks=True):  # noqa: ANN001, ANN202
        passes.append((sum(len(b) > 0 for b in self.banks.values()), with_banks))
        return full_loss(self, model, batch, with_banks)

    monkeypatch.setattr(CAPMethod, "full_loss", spy)
    metrics = _train(files, run, "--method", "cap", "--method.engine", "cap-f", "--method.sparsity", "0.5",
                     "--method.teacher", str(teacher), "--method.bank_storage", "disk",
                     "--method.bank_dir", str(tmp_path / "banks"))
    banks = metrics["cap_banks"]
    assert banks["snapshots"]["representations"] == 4 and "disk" in banks["snapshots"]["storage"]
    assert [event["sparsity"] for event in metrics["cap_f_pruning"]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert metrics["head_sparsity"] == 0.5 and metrics["neuron_sparsity"] == 0.5
    # As the reference: the first importance pass sees no bank (the teacher's is attached after it), later ones all.
    first = passes[: len(passes) // 5]
    assert first and all(n == 1 and not used for n, used in first)
    assert all(used for _, used in passes[len(first):])
    model, _, method, _ = load_run(run)
    masks = method.engine.gates
    assert masks.head_mask.shape == (1, 2, 4) and masks.head_mask.sum() == 4 and masks.neuron_mask.sum() == 64
    assert (masks.head_mask.sum(dim=-1) >= 1).all()
    _check_reload(run, metrics)
    with torch.no_grad():
        gated = model(input_ids=_ids()).logits
    assert main(["export", str(run), "--output_dir", str(tmp_path / "compact")]) == 0
    compact = load_compacted(AutoModelForSequenceClassification, tmp_path / "compact")
    assert sum(compact.config.plmkit_compaction["intermediate_sizes"]) == 64
    with torch.no_grad():
        torch.testing.assert_close(compact(input_ids=_ids()).logits, gated, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"engine": "cap-x"}, "engine must be one of"),
        ({"sparsity": 1.0}, "sparsity must be in"),
        ({"supervised_banks": ["pretrained", "teacher"]}, "unknown bank"),
        ({"supervised_banks": ["none", "pretrained"]}, "'none' cannot be combined"),
        ({"unsupervised_banks": "pretrained"}, "must be a list of bank names"),
        ({"representation": "max"}, "representation must be"),
        ({"bank_dtype": "int8"}, "bank_dtype must be"),
        ({"final_threshold": 0.05, "initial_threshold": 0.1}, "thresholds must satisfy"),
        ({"contrastive_temperature": 0.0}, "contrastive_temperature must be > 0"),
        ({"sparsity_target": 0.5}, "has no option"),
    ],
)
def test_bad_options_raise_clear_method_errors(options, message):
    with pytest.raises(MethodError, match=message):
        build_method("cap", options)


def _fails(files, out, capsys, *flags):
    argv = ["train", "--train_file", str(files["train"]), "--output_dir", str(out), *COMMON, *flags]
    assert main(argv) == 2
    return capsys.readouterr().err


def test_missing_teacher_folder_is_a_clear_error(files, tmp_path, capsys):
    err = _fails(files, tmp_path / "bad", capsys, "--method", "cap", "--method.teacher", str(tmp_path / "nowhere"),
                 "--method.min_steps", "0")
    assert "not a folder holding a fine-tuned model" in err


def test_warmups_longer_than_training_are_refused(files, tmp_path, capsys):
    err = _fails(files, tmp_path / "bad", capsys, "--method", "cap", "--method.teacher_epochs", "1",
                 "--method.initial_warmup", "0.6", "--method.final_warmup", "0.5")
    assert "sum below 1" in err


def test_a_run_too_short_to_recover_from_pruning_is_a_clear_error(files, tmp_path, capsys):
    err = _fails(files, tmp_path / "short", capsys, "--method", "cap", "--method.teacher_epochs", "1")
    assert "optimizer steps are too few to prune to 90% sparsity" in err and "--method.min_steps 0" in err
    assert not (tmp_path / "short" / "teacher").exists()  # it stops before fine-tuning the teacher

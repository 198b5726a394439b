"""End to end through `plmkit train`, reloading with load_run, and exporting at any sparsity."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.core.cli import main
from plmkit.core.run import evaluate_run, load_run
from plmkit.core.sparsity import UnitGates, load_compacted
from plmkit.core.testing import write_toy_files
from plmkit.structured_pruning import (
    TOY_LANGUAGES,
    StructuredPruningMethod,
    evaluate_at,
    export_at,
    load_at,
    multilingual_toy_dataset,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_toy_files(tmp_path_factory.mktemp("data"), 64, 16, fmt="jsonl")


def _train(files, out, *method_flags):
    argv = ["train", "--model_name_or_path", "tiny-bert", "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]), "--test_file", str(files["test"]),
            "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--learning_rate", "1e-3",
            "--output_dir", str(out), "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
            "--num_threads", "1", *method_flags]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_structured_pruning_cli_save_and_reload_identical(files, tmp_path):
    metrics = _train(files, tmp_path / "run", "--method", "structured_pruning", "--method.algorithm", "movement",
                     "--method.sparsity", "0.5")
    model, _, method, _ = load_run(tmp_path / "run")
    assert method.unit_gates.head_mask.sum() == 4 and method.unit_gates.neuron_mask.sum() == 64
    again = evaluate_run(tmp_path / "run", "test")
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-6)
    assert main(["export", str(tmp_path / "run"), "--output_dir", str(tmp_path / "exported")]) == 0
    exported = load_compacted(AutoModelForSequenceClassification, tmp_path / "exported")
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_dynamic_sparsification_cli_then_export_at_any_sparsity(files, tmp_path):
    metrics = _train(files, tmp_path / "ds", "--method", "dynamic_sparsification", "--method.sparsity", "0.5",
                     "--learning_rate", "1e-2")  # (its sub-networks then differ in loss by ~5e-5)
    # evaluate_at: at the run's own sparsity, its test metrics; at another, the gated model's loss on any file
    assert evaluate_at(tmp_path / "ds", 0.5)["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-6)
    gated, tokenizer, _ = load_at(tmp_path / "ds", 0.75)
    rows = [json.loads(line) for line in files["validation"].read_text().splitlines()]
    with torch.no_grad():
        logits = gated(**tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([r["label"] for r in rows])).item()
    at = {sp: evaluate_at(tmp_path / "ds", sp, "test", ["--test_file", str(files["validation"])])["test_loss"]
          for sp in (0.5, 0.75)}
    assert at[0.75] == pytest.approx(loss, abs=1e-6) and abs(at[0.75] - at[0.5]) > 1e-5
    ids = torch.randint(5, 100, (2, 7))
    for sparsity in (0.25, 0.75):
        gated, _, _ = load_at(tmp_path / "ds", sparsity)
        if sparsity == 0.25:
            export_at(tmp_path / "ds", sparsity, tmp_path / f"export-{sparsity}")
        else:
            assert main(["export", str(tmp_path / "ds"), "--output_dir", str(tmp_path / f"export-{sparsity}"),
                         "--method.sparsity", str(sparsity)]) == 0
        compacted = load_compacted(AutoModelForSequenceClassification, tmp_path / f"export-{sparsity}")
        assert sum(compacted.config.plmkit_compaction["intermediate_sizes"]) == 2 * (64 - int(sparsity * 64))
        with torch.no_grad():
            torch.testing.assert_close(compacted(input_ids=ids).logits, gated(input_ids=ids).logits,
                                       atol=1e-5, rtol=0)


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as stop:  # an option with choices may be refused by the flag parser itself
        return stop.code


def test_cli_reports_bad_option(files, tmp_path, capsys):
    assert _exit_code(["train", "--model_name_or_path", "tiny-bert", "--train_file", str(files["train"]),
                       "--output_dir", str(tmp_path / "bad"), "--method", "structured_pruning",
                       "--method.algorithm", "magnitude"]) == 2
    err = capsys.readouterr().err
    assert "algorithm" in err and "'magnitude'" in err and "first_order" in err


@pytest.mark.slow
def test_minilm_rt_polarity_smoke(tmp_path):
    argv = ["train", "--model_name_or_path", "minilm", "--data", "rt-polarity", "--max_steps", "6",
            "--max_train_samples", "64", "--max_eval_samples", "32", "--max_length", "64", "--per_device_train_batch_size", "16",
            "--output_dir", str(tmp_path / "minilm"), "--report_to", "none", "--save_strategy", "no",
            "--disable_tqdm", "true", "--method", "structured_pruning", "--method.sparsity", "0.5",
            "--method.importance_batches", "2"]
    assert main(argv) == 0  # mechanics on the real model; learning with defaults: test_default_options_learn_trec
    metrics = json.loads((tmp_path / "minilm" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    model, _, method, _ = load_run(tmp_path / "minilm")
    assert method.unit_gates.head_mask.sum() == 6 * 6  # 12 heads per layer, half kept


def _multilingual_file(path, extra=()):
    rows = [{"text": t, "label": y, "language": TOY_LANGUAGES[g]}
            for t, y, g in zip(*(multilingual_toy_dataset(48, 3)["train"][c] for c in ("text", "label", "language")),
                               strict=True)]
    path.write_text("".join(json.dumps(row) + "\n" for row in [*rows, *extra]))
    return rows


def test_per_language_masks_through_plmkit_train(tmp_path, monkeypatch):
    """Each example, in training and in evaluation (`plmkit train`'s test split, then `plmkit eval`), is gated by
    the mask row of its `language` (codes mapped by --method.languages)."""
    rows = _multilingual_file(tmp_path / "train.jsonl")
    test_rows = _multilingual_file(tmp_path / "test.jsonl")[:20]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in test_rows))
    pending, used, evaluated = [], [], []
    prepare, before_forward = StructuredPruningMethod.prepare_batch, UnitGates._before_forward

    def spy_prepare(self, batch, ctx):  # noqa: ANN001, ANN202
        pending.append(batch["example_id"].tolist())
        return prepare(self, batch, ctx)

    def spy_forward(self, model, args, kwargs):  # noqa: ANN001, ANN202
        if pending:  # (the importance pass forwards without prepare_batch: it sets each language's rows itself)
            (used if model.training else evaluated).append((pending.pop(), self.rows.tolist()))
        return before_forward(self, model, args, kwargs)

    monkeypatch.setattr(StructuredPruningMethod, "prepare_batch", spy_prepare)
    monkeypatch.setattr(UnitGates, "_before_forward", spy_forward)
    languages = ["de", "en", "fr"]
    argv = ["train", "--model_name_or_path", "tiny-xlmr", "--train_file", str(tmp_path / "train.jsonl"),
            "--test_file", str(tmp_path / "test.jsonl"), "--per_device_eval_batch_size", "8",
            "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--learning_rate", "1e-2",
            "--output_dir", str(tmp_path / "run"), "--report_to", "none", "--save_strategy", "no",
            "--disable_tqdm", "true", "--num_threads", "1", "--method", "structured_pruning",
            "--method.setting", "per_language", "--method.languages", ",".join(languages),
            "--method.sparsity", "0.5", "--method.importance_batches", "2"]
    assert main(argv) == 0
    assert len(used) == 6 and not pending  # 2 epochs x 3 batches, every one gated per example
    expected = {i: languages.index(row["language"]) for i, row in enumerate(rows)}
    for example_ids, mask_rows in used:
        assert mask_rows == [expected[i] for i in example_ids]
    assert {r for _, mask_rows in used for r in mask_rows} == {0, 1, 2}
    # the test split: 20 examples in batches of 8, in file order, each with its own language's row
    test_expected = [languages.index(row["language"]) for row in test_rows]
    assert [r for _, mask_rows in evaluated for r in mask_rows] == test_expected and len(evaluated) == 3
    evaluated.clear()
    assert main(["eval", str(tmp_path / "run"), "--split", "test", "--test_file", str(tmp_path / "test.jsonl")]) == 0
    assert [r for _, mask_rows in evaluated for r in mask_rows] == test_expected
    _, _, method, _ = load_run(tmp_path / "run")
    assert method.unit_gates.head_mask.shape == (3, 2, 4) and (method.unit_gates.head_mask.sum(-1) == 2).all()


def test_unknown_language_is_a_data_error(tmp_path, capsys):
    _multilingual_file(tmp_path / "train.jsonl", extra=[{"text": "hola", "label": 0, "language": "es"}])
    argv = ["train", "--model_name_or_path", "tiny-xlmr", "--train_file", str(tmp_path / "train.jsonl"),
            "--output_dir", str(tmp_path / "run"), "--report_to", "none", "--num_threads", "1",
            "--method", "structured_pruning", "--method.setting", "per_language", "--method.languages", "en,de,fr"]
    assert main(argv) == 2
    assert "language(s) ['es'] that are not in --method.languages ['en', 'de', 'fr']" in capsys.readouterr().err

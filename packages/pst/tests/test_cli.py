"""The `plmkit` CLI end to end with method `pst` on tiny-bert: train, reload, export, and the slow real-data smoke."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

from plmkit.core.cli import main
from plmkit.core.data import TaskData, encode
from plmkit.core.run import load_run
from plmkit.core.sparsity import cubic_sparsity, masked_sparsity
from plmkit.core.testing import bf16_flags, tiny_dataset, tiny_model
from plmkit.core.training import Trainer
from plmkit.pst import PSTLinear, PSTMethod, pst_layers, pst_parameter_counts

TINY = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
        "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pst_cli")
    data = []
    for split, ds in tiny_dataset(64, 32).items():
        ds.to_csv(str(root / f"{split}.csv"), index=False)
        data += [f"--{split}_file", str(root / f"{split}.csv")]
    out = root / "run"
    argv = ["train", *TINY, *data, "--output_dir", str(out), "--max_steps", "10", "--learning_rate", "1e-2",
            "--per_device_train_batch_size", "16", "--method", "pst", "--method.sparsity", "0.8",
            "--method.min_steps", "0", "--method.rank_uv", "4", "--method.train_head", "true"]
    assert main(argv) == 0
    return out


def test_run_reaches_the_target_sparsity_and_reports_parameters(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["pst_trainable_share_of_movement_pruning"] < metrics["pst_trainable_share_of_model"] < 1
    assert metrics["pst_trainable_parameters"] > metrics["pst_pst_parameters"]  # train_head adds the head
    model, _, method, _ = load_run(run_dir)
    assert method.config.sparsity == 0.8 and method.config.train_head
    for _, layer in pst_layers(model):
        assert int((layer.masked_weight() == 0).sum()) == int(0.8 * layer.weight.numel())


def test_save_load_run_gives_identical_outputs(run_dir):
    a, _, _, _ = load_run(run_dir)
    b, _, _, _ = load_run(run_dir)
    assert any(layer.V.abs().sum() > 0 for _, layer in pst_layers(a))  # trained, not the initialisation
    batch = {"input_ids": torch.randint(5, 90, (3, 10))}
    with torch.no_grad():
        assert torch.equal(a(**batch).logits, b(**batch).logits)
    assert all(isinstance(m, PSTLinear) for _, m in pst_layers(a))


def test_cli_export_loads_in_plain_transformers(run_dir, tmp_path):
    assert main(["export", str(run_dir), "--output_dir", str(tmp_path / "plain")]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "plain").eval()
    model, _, _, _ = load_run(run_dir)
    batch = {"input_ids": torch.randint(5, 90, (3, 10))}
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, model(**batch).logits, atol=1e-6)
    encoder = [m for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n]
    assert encoder and all(int((m.weight == 0).sum()) == int(0.8 * m.weight.numel()) for m in encoder)


def test_trainer_applies_the_schedule_and_reports_the_counts_once(tmp_path, capsys):
    model, tok = tiny_model("bert")
    task = TaskData("toy", tiny_dataset(64, 8), ("text",), label_names=("a", "b"))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=8, learning_rate=1e-2,
                             report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no")
    method = PSTMethod(sparsity=0.6, initial_warmup=0.2, final_warmup=0.2, min_steps=0)
    seen = []
    original = method.schedule.apply
    method.schedule.apply = lambda m, step, total: seen.append(step) or original(m, step, total)
    trainer = Trainer(model, args, method=method, train_dataset=encode(task, tok, 32)["train"],
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    assert seen == [0, 1, 2, 3, 4, 5]  # on_train_begin, then after every optimizer step
    for _, layer in pst_layers(model):
        assert layer.sparsity == pytest.approx(cubic_sparsity(5, 5, 0.6, 0.0, 0.2, 0.2), abs=1e-3)
    assert masked_sparsity(model) == pytest.approx(0.6, abs=1e-3)
    report = method.report()
    assert report == {f"pst_{k}": v for k, v in pst_parameter_counts(model).items()}
    assert capsys.readouterr().err.count("[plmkit.pst] trainable params:") == 1


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path):
    """Stopping at step 3 of 6 (mid-schedule) and resuming from checkpoint-3 reproduces the uninterrupted run."""
    data = []
    for split, ds in tiny_dataset(64, 16).items():
        ds.to_csv(str(tmp_path / f"{split}.csv"), index=False)
        data += [f"--{split}_file", str(tmp_path / f"{split}.csv")]
    flags = [*TINY, *data, "--max_steps", "6", "--learning_rate", "1e-2", "--per_device_train_batch_size", "8",
             "--save_strategy", "steps", "--save_steps", "3", "--method", "pst", "--method.sparsity", "0.8",
             "--method.min_steps", "0", "--method.rank_uv", "4", "--method.train_head", "true"]
    assert main(["train", *flags, "--output_dir", str(tmp_path / "full")]) == 0
    resumed = tmp_path / "resumed"
    assert main(["train", *flags, "--output_dir", str(resumed)]) == 0
    shutil.rmtree(resumed / "checkpoint-6")
    (resumed / "model.safetensors").unlink()
    assert main(["train", *flags, "--output_dir", str(resumed), "--resume_from_checkpoint",
                 str(resumed / "checkpoint-3")]) == 0
    full, again = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full)
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["pst_pst_parameters"] == json.loads((tmp_path / "full" / "metrics.json").read_text())[
        "pst_pst_parameters"]


@pytest.mark.slow
def test_minilm_rt_polarity_smoke(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", "minilm", "--data", "rt-polarity", "--max_train_samples", "64",
            "--max_eval_samples", "32", "--max_length", "48",
            "--max_steps", "6", "--per_device_train_batch_size", "16", "--learning_rate", "1e-3", *bf16_flags(),
            "--per_device_eval_batch_size", "100", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true", "--output_dir", str(out),
            "--method", "pst", "--method.sparsity", "0.5", "--method.train_head", "true",
            "--method.min_steps", "0"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # 6 steps check the mechanics on the real model's shapes, not accuracy: that PST's default options learn on
    # real data is the contract kit's test_default_options_learn_trec.
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["train_loss"] > 0, metrics
    model, _, _, _ = load_run(out)
    assert all(abs(m.sparsity - 0.5) < 1e-3 for m in model.modules() if hasattr(m, "pruned_count"))
    # MiniLM: 6 layers of Q, K, V, O (384 x 384), FFN in (1536 x 384) and out (384 x 1536); r1 = r2 = 8
    shapes = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]
    assert metrics["pst_pst_parameters"] == 6 * sum(17 * (n + k) for n, k in shapes)


def test_a_run_too_short_to_recover_from_pruning_is_a_clear_error(tmp_path, capsys):
    ds = tiny_dataset(16, 8)["train"]
    ds.to_csv(str(tmp_path / "train.csv"), index=False)
    assert main(["train", *TINY, "--train_file", str(tmp_path / "train.csv"), "--output_dir", str(tmp_path / "run"),
                 "--max_steps", "8", "--method", "pst"]) == 2
    err = capsys.readouterr().err
    assert "pst: 8 optimizer steps are too few to prune to 90% sparsity" in err and "--method.min_steps 0" in err

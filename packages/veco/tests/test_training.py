"""Training through `plmkit train` with a tiny VECO: the core `masked_lm` task on the H-stream, CA-MLM runs that
reload and resume exactly, and the core contract kit for the `veco` method."""

import json

import pytest
import torch
from safetensors.torch import load_file

from plmkit.core.cli import main
from plmkit.core.run import evaluate_run, load_run
from plmkit.core.tasks.masked_lm import masked_lm_forward
from plmkit.core.testing.contract import (
    check_export,
    check_half_precision_checkpoint,
    check_resume,
    check_save_reload,
)
from plmkit.veco.method import VecoMethod
from plmkit.veco.modeling import VecoForPreTraining
from plmkit.veco.tiny import tiny_model_config

PAIRS = [("der gute film", "the good film"), ("eine schlechte geschichte", "a bad story"),
         ("wer ist es", "who is it"), ("der film ist gut", "the film is good"), ("es war schlecht", "it was bad"),
         ("die beste geschichte", "the best story"), ("wo ist der film", "where is the film"),
         ("ich liebe es", "i love it")]
COMMON = ["--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1", "--per_device_train_batch_size", "4",
          "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--max_length", "32", "--seed", "3",
          "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


def test_core_masked_lm_path_equals_the_models_own_loss(tokenizer):
    """The core task scores only the masked rows (a hook on the base model); VECO's own forward scores all of them."""
    torch.manual_seed(0)
    model = VecoForPreTraining(tiny_model_config(tokenizer)).eval()
    batch = dict(tokenizer(["the good film is fun", "a bad story"], padding=True, return_tensors="pt"))
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2], labels[1, 1], labels[0, 4] = batch["input_ids"][0, 2], batch["input_ids"][1, 1], batch["input_ids"][0, 4]
    with torch.no_grad():
        logits, targets, rows = masked_lm_forward(model, {**batch, "labels": labels})
        ours = model(**batch, labels=labels).loss
    assert logits.shape == (3, len(tokenizer)) and rows.tolist() == [0, 0, 1]
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits, targets), ours, rtol=0, atol=1e-6)


def test_masked_lm_task_trains_and_evaluates_a_veco(tmp_path):
    text = "".join(f"{a}\n{b}\n" for a, b in PAIRS)
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "validation.txt").write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--task", "masked_lm", "--model_name_or_path", "tiny-veco", "--task.mlm_probability", "0.3",
                 "--train_file", str(tmp_path / "train.txt"), "--validation_file", str(tmp_path / "validation.txt"),
                 "--output_dir", str(out), "--max_steps", "4", "--save_strategy", "no", *COMMON]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_masked_tokens"] > 0 and 0 < metrics["eval_masked_loss"] < 20
    assert json.loads((out / "config.json").read_text())["architectures"] == ["VecoForPreTraining"]


def _pretrain(tmp_path, out, *flags):
    rows = "".join(json.dumps({"x": a, "y": b}) + "\n" for a, b in PAIRS)
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text(rows)
    argv = ["train", "--task", "veco_pretrain", "--method", "veco", "--model_name_or_path", "tiny-veco",
            *[f for s in ("train", "validation", "test") for f in (f"--{s}_file", str(tmp_path / f"{s}.jsonl"))],
            "--output_dir", str(out), "--max_steps", "8", *COMMON, *flags]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_ca_mlm_run_reloads_with_the_same_metrics(tmp_path):
    out = tmp_path / "run"
    metrics = _pretrain(tmp_path, out, "--save_strategy", "no")
    again = evaluate_run(out, "test")
    for key in ("test_masked_loss", "test_mlm_x_loss", "test_ca_mlm_y_loss", "test_ca_mlm_x_accuracy"):
        assert abs(again[key] - metrics[key]) <= 1e-5, (key, again[key], metrics[key])
    model, _, _, _ = load_run(out)
    assert isinstance(model, VecoForPreTraining) and model.veco.has_cross_attention


def test_ca_mlm_resume_equals_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    full = _pretrain(tmp_path, straight, "--save_strategy", "steps", "--save_steps", "4")
    resumed = tmp_path / "resumed"
    again = _pretrain(tmp_path, resumed, "--save_strategy", "steps", "--save_steps", "4",
                      "--resume_from_checkpoint", str(straight / "checkpoint-4"))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and any(".encoder_attn." in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
    for key in ("eval_masked_loss", "eval_ca_mlm_x_loss", "test_masked_accuracy"):
        assert abs(full[key] - again[key]) <= 1e-5, (key, full[key], again[key])


@pytest.mark.parametrize("check", ["save_reload_export", "resume", "bf16_checkpoint"])
def test_contract_kit(check, tmp_path):
    """The core contract kit with the method's own case (tiny-veco on the kit's toy classification task)."""
    case = VecoMethod.contract
    assert case.model == "tiny-veco"
    if check == "resume":
        check_resume(case, tmp_path)
    elif check == "bf16_checkpoint":
        check_half_precision_checkpoint(case, tmp_path, torch.bfloat16)
    else:
        check_export(case, check_save_reload(case, tmp_path), tmp_path)


def test_pair_files_tsv_jsonl_and_aligned_text(tmp_path):
    from plmkit.core.tasks import DataSource
    from plmkit.veco.pretrain import VecoPretrainConfig, VecoPretrainTask

    (tmp_path / "p.tsv").write_text("id\tde\ten\n" + "".join(f"{i}\t{a}\t{b}\n" for i, (a, b) in enumerate(PAIRS)))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"x": a, "y": b, "kind": "parallel"}) + "\n" for a, b in PAIRS))
    (tmp_path / "p.de").write_text("".join(f"{a}\n" for a, _ in PAIRS))
    (tmp_path / "p.en").write_text("".join(f"{b}\n" for _, b in PAIRS))
    cases = [(VecoPretrainConfig(x_column="de", y_column="en"), "p.tsv"), (VecoPretrainConfig(), "p.jsonl"),
             (VecoPretrainConfig(x_suffix=".de", y_suffix=".en"), "p")]
    for config, name in cases:
        train = VecoPretrainTask(config, DataSource(train_file=str(tmp_path / name))).load()["train"]
        assert list(zip(train["x"], train["y"], strict=True)) == PAIRS, name


def test_detach_memory_stops_the_gradient_into_the_paired_h_stream(tokenizer):
    torch.manual_seed(7)
    model = VecoForPreTraining(tiny_model_config(tokenizer))
    batch = dict(tokenizer([a for a, _ in PAIRS[:2]], padding=True, return_tensors="pt"))
    pair = dict(tokenizer([b for _, b in PAIRS[:2]], padding=True, return_tensors="pt"))
    labels, targets = batch["input_ids"].clone(), pair["input_ids"].clone()
    labels[:, 0] = targets[:, 0] = -100
    memories = []

    def spy(module, args, kwargs):
        if kwargs.get("memory") is not None:
            memories.append(kwargs["memory"])

    handle = model.veco.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        for detach in (False, True):
            model(**batch, labels=labels, pair_input_ids=pair["input_ids"], pair_attention_mask=pair["attention_mask"],
                  pair_targets=targets, detach_memory=detach)
    finally:
        handle.remove()
    assert [m.requires_grad for m in memories] == [True, False]

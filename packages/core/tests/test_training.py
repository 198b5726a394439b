from dataclasses import dataclass, field

import pytest
import torch
from transformers import DataCollatorWithPadding, TrainingArguments

from plmkit.core.data import TaskData, encode
from plmkit.core.testing import tiny_dataset, tiny_model
from plmkit.core.training import (
    FinetuneMethod,
    Method,
    MethodConfig,
    MethodError,
    Trainer,
    auto_num_threads,
    available_methods,
    build_method,
    get_method,
    make_compute_metrics,
)


def _setup(tmp_path, method=None, steps=4, **args):
    model, tok = tiny_model("bert")
    task = TaskData("toy", tiny_dataset(64, 32), ("text",), label_names=("a", "b"))
    enc = encode(task, tok, 32)
    defaults = dict(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
        report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", dataloader_pin_memory=False,
    )
    targs = TrainingArguments(**{**defaults, **args})
    trainer = Trainer(
        model, targs, method=method, train_dataset=enc["train"], eval_dataset=enc["validation"],
        data_collator=DataCollatorWithPadding(tok), compute_metrics=make_compute_metrics(("accuracy",)),
    )
    return trainer, enc


@dataclass
class RecorderConfig(MethodConfig):
    """Records every hook call."""

    extra: float = field(default=0.5, metadata={"help": "constant added to the loss"})


class Recorder(Method):
    name = "recorder"
    config_class = RecorderConfig

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls: list[str] = []
        self.grad_norms: list[float] = []

    def prepare_model(self, model):
        self.calls.append("prepare_model")
        for p in model.bert.embeddings.parameters():
            p.requires_grad_(False)
        return model

    def parameter_groups(self, model):
        head = [p for n, p in model.named_parameters() if n.startswith("classifier") and p.requires_grad]
        body = [p for n, p in model.named_parameters() if not n.startswith("classifier") and p.requires_grad]
        return [{"params": body}, {"params": head, "lr": 0.123}]

    def extra_loss(self, model, inputs, outputs):
        return torch.tensor(self.config.extra)

    def before_optimizer_step(self, model):
        self.calls.append("before_optimizer_step")
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        for n, p in model.named_parameters():  # train only the classifier
            if p.grad is not None and not n.startswith("classifier"):
                p.grad.zero_()


def test_method_hooks_run_in_order_with_clipped_gradients(tmp_path):
    method = Recorder()
    trainer, enc = _setup(tmp_path, method, steps=3, max_grad_norm=1e-3, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert method.calls == ["prepare_model"] + ["before_optimizer_step"] * 3
    assert all(g <= 1e-3 * 1.001 for g in method.grad_norms)  # hook sees gradients after clipping
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert {round(g["initial_lr"], 6) for g in trainer.optimizer.param_groups} == {0.01, 0.123}
    frozen = {id(p) for p in trainer.model.bert.embeddings.parameters()}
    assert not frozen & {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}


def test_parameter_groups_get_the_usual_weight_decay_split(tmp_path):
    trainer, _ = _setup(tmp_path, Recorder(), weight_decay=0.01)
    optimizer = trainer.create_optimizer()
    groups = {(g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert groups == {(0.01, 0.01), (0.01, 0.0), (0.123, 0.01), (0.123, 0.0)}
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for g in optimizer.param_groups:
        for p in g["params"]:
            no_decay = names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)]
            assert (g["weight_decay"] == 0.0) == no_decay, names[id(p)]


def test_extra_loss_is_added_to_the_task_loss(tmp_path):
    trainer, enc = _setup(tmp_path, Recorder(extra=2.5))
    batch = trainer.data_collator([enc["train"][i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        task_loss = trainer.model(**batch).loss
        total = trainer.compute_loss(trainer.model, batch)
    assert total.item() == pytest.approx(task_loss.item() + 2.5, abs=1e-6)


class ReversedOrder(Method):
    name = "reversed"

    def train_sampler(self, dataset, args):
        return list(reversed(range(len(dataset))))


def test_train_sampler_hook_sets_the_example_order(tmp_path):
    trainer, enc = _setup(tmp_path, ReversedOrder(), per_device_train_batch_size=4)
    first = next(iter(trainer.get_train_dataloader()))
    expected = [enc["train"][i]["input_ids"] for i in (63, 62, 61, 60)]
    lengths = first["attention_mask"].sum(1).tolist()
    assert [ids[:n] for ids, n in zip(first["input_ids"].tolist(), lengths, strict=False)] == expected


def test_finetune_learns_the_toy_task(tmp_path):
    trainer, enc = _setup(tmp_path, FinetuneMethod(), steps=60, learning_rate=1e-2)
    trainer.train()
    assert trainer.evaluate()["eval_accuracy"] >= 0.9


def test_finetune_is_registered_through_entry_points():
    assert "finetune" in available_methods()
    assert get_method("finetune") is FinetuneMethod
    assert isinstance(build_method("finetune", {}), FinetuneMethod)


def test_unknown_method_and_option_are_clear_errors():
    with pytest.raises(MethodError, match=r"unknown method 'nope'.*finetune"):
        get_method("nope")
    with pytest.raises(MethodError, match=r"no option\(s\) \['sparsity'\]"):
        build_method("finetune", {"sparsity": 0.5})


def test_auto_num_threads_respects_override(monkeypatch):
    monkeypatch.setenv("PLMKIT_NUM_THREADS", "3")
    assert auto_num_threads() == 3
    monkeypatch.delenv("PLMKIT_NUM_THREADS")
    monkeypatch.setattr("os.getloadavg", lambda: (5.0, 5.0, 5.0))
    assert auto_num_threads() == 1

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

    def prepare_model(self, model, ctx):
        self.calls.append("prepare_model")
        for p in model.bert.embeddings.parameters():
            p.requires_grad_(False)
        return model

    def parameter_groups(self, model):
        head = [p for n, p in model.named_parameters() if n.startswith("classifier") and p.requires_grad]
        body = [p for n, p in model.named_parameters() if not n.startswith("classifier") and p.requires_grad]
        return [{"params": body}, {"params": head, "lr": 0.123}]

    def loss_terms(self, model, batch, outputs, ctx):
        return {"extra": torch.tensor(self.config.extra)}

    def on_train_begin(self, ctx):
        self.calls.append("on_train_begin")

    def on_train_end(self, ctx):
        self.calls.append("on_train_end")

    def before_optimizer_step(self, model, ctx):
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
    assert method.calls == ["prepare_model", "on_train_begin"] + ["before_optimizer_step"] * 3 + ["on_train_end"]
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


def test_loss_terms_are_added_to_the_task_loss_while_training_only(tmp_path):
    trainer, enc = _setup(tmp_path, Recorder(extra=2.5))
    batch = trainer.data_collator([enc["train"][i] for i in range(4)])
    with torch.no_grad():
        trainer.model.train()  # the tiny model has no dropout: train and eval forwards agree
        task_loss = trainer.model(**{k: v for k, v in batch.items() if k != "example_id"}).loss
        total = trainer.compute_loss(trainer.model, batch)
        trainer.model.eval()
        evaluated = trainer.compute_loss(trainer.model, batch)
    assert total.item() == pytest.approx(task_loss.item() + 2.5, abs=1e-6)
    assert evaluated.item() == pytest.approx(task_loss.item(), abs=1e-6)


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


class Columns(Method):
    """Sees example ids and a `language` column in every hook batch; weights the task loss by 0.5."""

    name = "columns"
    batch_columns = ("language",)

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen: list[tuple[list[int], list[int]]] = []
        self.state = {"steps": 0}

    task_loss_weight = 0.5

    def prepare_batch(self, batch, ctx):
        self.seen.append((batch["example_id"].tolist(), batch["language"].tolist()))
        return batch

    def loss_terms(self, model, batch, outputs, ctx):
        return {"double": outputs.loss.detach() * 0 + 1.0}

    def on_step_end(self, ctx):
        self.state["steps"] += 1

    def state_dict(self):
        return {"steps": self.state["steps"], "marker": torch.arange(3.0)}

    def load_state_dict(self, state):
        self.state["steps"] = state["steps"]
        self.loaded = state


def _with_language(tmp_path, method, **args):
    model, tok = tiny_model("bert")
    data = tiny_dataset(32, 8)
    data = data.map(lambda row, i: {"language": i % 3}, with_indices=True)
    task = TaskData("toy", data, ("text",), label_names=("a", "b"))
    enc = encode(task, tok, 32, keep_columns=("language",))
    forwards: list[set[str]] = []
    model.register_forward_pre_hook(lambda m, a, kw: forwards.append(set(kw)), with_kwargs=True)
    defaults = dict(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-3,
                    report_to=[], use_cpu=True, save_strategy="no", logging_steps=2, dataloader_pin_memory=False)
    trainer = Trainer(model, TrainingArguments(**{**defaults, **args}), method=method, train_dataset=enc["train"],
                      data_collator=DataCollatorWithPadding(tok))
    return trainer, enc, forwards


def test_hook_columns_reach_the_hooks_but_never_the_model(tmp_path):
    method = Columns()
    trainer, enc, forwards = _with_language(tmp_path, method)
    trainer.train()
    ids = sorted(i for batch_ids, _ in method.seen for i in batch_ids)
    assert ids == sorted(list(range(32)) * 1)  # 4 steps x 8 = one pass over the 32 examples
    assert all(lang == [i % 3 for i in batch_ids] for batch_ids, lang in method.seen)
    assert forwards and all(not {"example_id", "language"} & keys for keys in forwards)
    logged = [entry for entry in trainer.state.log_history if "loss/double" in entry]
    assert logged and all(entry["loss/double"] == pytest.approx(1.0) and "loss/task" in entry for entry in logged)


def test_a_missing_method_column_is_a_data_error():
    from plmkit.core.errors import DataError

    model, tok = tiny_model("bert")
    with pytest.raises(DataError, match=r"no column\(s\) \['language'\]"):
        encode(TaskData("toy", tiny_dataset(8, 4), ("text",), label_names=("a", "b")), tok, 16, ("language",))


class Exploding(Method):
    name = "exploding"

    def loss_terms(self, model, batch, outputs, ctx):
        return {"contrastive": torch.tensor(float("nan"))}


def test_a_non_finite_loss_term_stops_training_naming_step_and_term(tmp_path):
    from plmkit.core.errors import NonFiniteError

    trainer, _ = _setup(tmp_path, Exploding())
    with pytest.raises(NonFiniteError, match="step 1: the contrastive loss is nan"):
        trainer.train()


def test_method_state_is_saved_in_checkpoints_and_restored_on_resume(tmp_path):
    method = Columns()
    trainer, _, _ = _with_language(tmp_path, method, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "method_state.json").exists() and (checkpoint / "method_state.safetensors").exists()
    resumed = Columns()
    trainer, _, _ = _with_language(tmp_path, resumed, save_strategy="steps", save_steps=2)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.loaded["steps"] == 2 and torch.equal(resumed.loaded["marker"], torch.arange(3.0))
    assert resumed.state["steps"] == 4  # 2 restored + the 2 steps run after resuming


class Restarting(Method):
    name = "restarting"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.lrs: list[float] = []

    def on_step_begin(self, ctx):
        if ctx.global_step == 4:
            assert ctx.optimizer.state  # Adam has moments by now
            ctx.restart_optimizer(steps=4)
            assert not ctx.optimizer.state
        self.lrs.append(ctx.optimizer.param_groups[0]["lr"])


def test_restart_optimizer_clears_the_state_and_restarts_the_schedule(tmp_path):
    method = Restarting()
    trainer, _ = _setup(tmp_path, method, steps=8, warmup_steps=2, learning_rate=1.0)
    trainer.train()
    first, second = method.lrs[:4], method.lrs[4:]
    assert first[0] == 0.0 and second[0] == 0.0 and second == pytest.approx([0.0, 0.5, 1.0, 0.5])


class Passes(Method):
    name = "passes"

    def on_train_begin(self, ctx):
        batches = list(ctx.batches(batch_size=5))
        self.ids = torch.cat([b["example_id"] for b in batches]).tolist()
        self.total = ctx.all_reduce(torch.tensor(float(len(self.ids))))


def test_context_batches_walk_the_training_set_in_order(tmp_path):
    method = Passes()
    trainer, _ = _setup(tmp_path, method, steps=1)
    trainer.train()
    assert method.ids == list(range(64)) and method.total.item() == 64


def test_head_only_trains_the_head_and_leaves_the_encoder(tmp_path):
    """`--method head_only` on masked_lm: the MLM head (transform, bias) changes, the encoder and the decoder tied to
    the word embeddings do not."""
    from safetensors.torch import load_file

    from plmkit.core.cli import main
    from plmkit.core.models import load_model
    from plmkit.core.testing import tiny_dataset

    model, tokenizer = load_model("tiny-bert", kind="masked-lm", seed=1)
    start = tmp_path / "start"
    model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny_dataset(32, 4)["train"]["text"]) + "\n")
    out = tmp_path / "run"
    code = main(["train", "--task", "masked_lm", "--train_file", str(corpus), "--model_name_or_path", str(start),
                 "--method", "head_only", "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "1e-2",
                 "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "true",
                 "--save_strategy", "no", "--num_threads", "1"])
    assert code == 0
    before, after = load_file(str(start / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("cls.") for k in changed), sorted(changed)
    assert not any(k.startswith("bert.") for k in changed)


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch):
    from plmkit.core import training

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "native_bf16", lambda: False)
    assert "emulated" in training.slow_bf16_warning(True) and "--bf16" in training.slow_bf16_warning(True)
    assert training.slow_bf16_warning(False) is None
    monkeypatch.setattr(training, "native_bf16", lambda: True)
    assert training.slow_bf16_warning(True) is None

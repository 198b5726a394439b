"""The prompt methods on the core's Method contract.

- `prepare_model(model, ctx)`: the core builds a sequence-classification model; it is replaced by a `PromptModel`
  holding the same encoder weights plus the masked-LM head transform of the same checkpoint (a fresh one where the
  checkpoint has none, e.g. `minilm` or the tiny test models). A reloaded run is already a `PromptModel` and passes
  through. The token ids the forward needs (special tokens, template words, label words) are bound here from
  `ctx.processor`, the tokenizer the data is encoded with.
- `train_sampler`: class-balanced batches (CP-Tuning), so every batch has positive and negative pairs; UPT's
  stage 1 (task `upt_stage1`) draws task-balanced batches (Eq. 3) with a share of KSMLM examples.
- CP-Tuning's anchors: `before_evaluate` and `on_train_end` recompute them from the training data (`ctx.batches`,
  each process its own shard, gathered with `ctx.all_gather` and ordered by `example_id`, so any number of
  processes gives the same anchors), so the saved model carries them. `prepare_data` gives every row an
  `anchor_id` (its `example_id` in the training split, -1 in the other splits), which the model uses to never
  score a training example against its own anchor.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

from datasets import DatasetDict
from torch import nn
from torch.utils.data import Sampler
from transformers import AutoModelForMaskedLM, PreTrainedModel, TrainingArguments

from plmkit.core.models import load_model
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodContext, MethodError
from plmkit.prompt_tuning.anchors import NO_ANCHOR
from plmkit.prompt_tuning.config import CPTuningConfig, PromptTuningConfig, UPTConfig
from plmkit.prompt_tuning.model import PromptModel, encode_anchors
from plmkit.prompt_tuning.pov import pov_template
from plmkit.prompt_tuning.sampler import ClassBalancedSampler
from plmkit.prompt_tuning.stage1 import UPTStage1Task, ksmlm_template
from plmkit.prompt_tuning.weighting import TaskBalancedSampler, task_balanced_weights

__all__ = ["ANCHOR_ID", "CPTuningMethod", "PromptTuningMethod", "UPTMethod", "load_masked_lm"]

ANCHOR_ID = "anchor_id"  # dataset column: the row's own anchor (its training example_id), -1 outside training


def load_masked_lm(backbone: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """The masked-LM version of `backbone`'s checkpoint (for its head); built from the config if it has no source."""
    source = getattr(backbone.config, "_name_or_path", "") or ""
    if source:
        masked_lm, _ = load_model(source, kind="masked-lm", seed=seed)
        return masked_lm
    return AutoModelForMaskedLM.from_config(backbone.config)


def label_names(model: nn.Module) -> list[str]:
    """The task's label names in label order, to serve as label words when none are given (the tokenizer check that
    each is one token happens in `PromptModel.bind_tokenizer`)."""
    config = model.config
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    if all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        raise MethodError("the task's labels have no names to use as label words: pass --method.label_words, one "
                          "word per label in label order (e.g. 'terrible,great')")
    print(f"[plmkit.prompt_tuning] label words: the label names {names}", file=sys.stderr, flush=True)
    return names


def _bind(model: PromptModel, ctx: MethodContext | None) -> PromptModel:
    """Bind the tokenizer's token ids when the context has the tokenizer (always, when the core calls)."""
    if ctx is not None and ctx.processor is not None:
        model.bind_tokenizer(ctx.processor)
    return model


class _PromptMethod(Method):
    objective = ""

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        if isinstance(model, PromptModel):
            if model.config.objective != self.objective:
                model = model.for_objective(self.objective, **self._model_options(model))
            # else: a saved run of this method, with its own prompt settings
        else:
            options = self._model_options(model)
            model = PromptModel.from_backbone(model, load_masked_lm(model), objective=self.objective, **options)
        return _bind(model, ctx)

    def train_sampler(self, dataset: Any, args: TrainingArguments) -> Sampler | None:
        if not getattr(self.config, "balanced_batches", False):
            return None
        return ClassBalancedSampler(dataset["labels"], args.per_device_train_batch_size, args.seed)


class CPTuningMethod(_PromptMethod):
    """CP-Tuning (Xu et al., WSDM 2023): contrastive prompt tuning without a verbalizer."""

    # The kit's TREC run: batches of 16 hold each of the 6 classes 2-3 times (below min_per_class, an error), so
    # batches of 24 for 3 epochs, the same ~128 steps.
    contract = ContractCase("cp_tuning", exports=None, extra_passes=True,
                            trec_budget={"per_device_train_batch_size": 24, "num_train_epochs": 3})

    name = "cp_tuning"
    config_class = CPTuningConfig
    objective = "contrastive"

    def __init__(self, config: CPTuningConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self._anchors_step: int | None = None  # the step the model's anchors were taken at

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        options = super()._model_options(model)
        options.pop("balanced_batches")
        options.pop("min_per_class")
        return options

    def train_sampler(self, dataset: Any, args: TrainingArguments) -> Sampler | None:
        """The class-balanced sampler, after checking that a batch (over every process: PCCL gathers the features)
        can hold every class `min_per_class` times."""
        need = self.config.min_per_class
        classes = len(set(dataset["labels"]))
        processes = max(1, args.world_size)
        batch = args.per_device_train_batch_size * processes
        if need and batch < need * classes:
            raise MethodError(
                f"cp_tuning: a training batch of {batch} cannot hold each of the {classes} classes {need} times, and "
                f"CP-Tuning's contrastive loss learns from the pairs within a batch (TREC, MiniLM, 128 steps: batches "
                f"of 16 ended 24 points below fine-tuning, of 24 3 below); set --per_device_train_batch_size "
                f"{-(-need * classes // processes)} or more, or pass --method.min_per_class 0 to train anyway")
        return super().train_sampler(dataset, args)

    def prepare_data(self, data: DatasetDict, ctx: MethodContext) -> DatasetDict:
        out = DatasetDict()
        for split, ds in data.items():
            ids = list(ds["example_id"]) if split == "train" else [NO_ANCHOR] * len(ds)
            if ANCHOR_ID in ds.column_names:
                ds = ds.remove_columns(ANCHOR_ID)
            out[split] = ds.add_column(ANCHOR_ID, ids)
        return out

    def _refresh_anchors(self, ctx: MethodContext) -> None:
        """Anchors = the features of every training example under the current weights (module docstring)."""
        model = ctx.model
        if not isinstance(model, PromptModel) or model.config.objective != "contrastive" or ctx.train_dataset is None:
            return  # (no training data: a reloaded run evaluates with the anchors it saved)
        if self._anchors_step == ctx.global_step and model.config.num_anchors:
            return  # the weights have not changed since (e.g. the evaluations right after training)
        features, labels, ids = (ctx.all_gather(t.contiguous()) for t in encode_anchors(model, ctx.batches()))
        order = ids.argsort()
        model.set_anchors(features[order], labels[order], ids[order])
        self._anchors_step = ctx.global_step

    def before_evaluate(self, ctx: MethodContext) -> None:
        self._refresh_anchors(ctx)

    def on_train_end(self, ctx: MethodContext) -> None:
        self._refresh_anchors(ctx)


class PromptTuningMethod(_PromptMethod):
    """Prompt-based fine-tuning with a verbalizer (LM-BFF style), the baseline CP-Tuning is compared with."""

    contract = ContractCase("prompt_tuning", exports=None)

    name = "prompt_tuning"
    config_class = PromptTuningConfig
    objective = "verbalizer"

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        options = super()._model_options(model)
        options["label_words"] = self.config.words() or label_names(model)
        options["label_words_from_names"] = not self.config.words()
        return options


class UPTMethod(_PromptMethod):
    """UPT (Wang et al., Findings of EMNLP 2022): POV inputs, full-vocabulary cross-entropy at [MASK].

    Stage 2 (`plmkit train --method upt`): the model (a backbone, or a stage-1 / head-adapted `PromptModel` folder
    given as `--model_name_or_path`) is set to the target's POV template(s) and label words. Stage 1
    (`plmkit train --task upt_stage1 --method upt`): the templates are the sources' (and KSMLM's), read from the
    task.
    """

    contract = ContractCase("upt", exports=None)

    name = "upt"
    config_class = UPTConfig
    objective = "upt"
    config: UPTConfig

    def __init__(self, config: UPTConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.stage1: tuple[list[str], list[list[str]], int] | None = None  # templates, label words, KSMLM index
        self._stage1_examples: int | None = None

    def _stage1_layout(self, ctx: MethodContext | None) -> tuple[list[str], list[list[str]], int] | None:
        """Stage 1's POV templates and label words (index = task id; KSMLM last) and the KSMLM task index (-1:
        none), from the `upt_stage1` task; None for any other task (stage 2)."""
        task = getattr(ctx, "task", None)
        if not isinstance(task, UPTStage1Task):
            return None
        c = self.config
        sources = task.pov_tasks()
        templates = [pov_template(list(t.label_words), c.prompt, t.options, t.pair) for t in sources]
        words = [list(t.label_words) for t in sources]
        if task.ksmlm:
            templates.append(ksmlm_template(c.options))
            words.append([])
        elif c.ksmlm_share > 0:
            raise MethodError("KSMLM (--method.ksmlm_share > 0) needs KSMLM rows: pass --task.okr, a repository from "
                              "`plmkit upt build-okr`; or --method.ksmlm_share 0 for UPT without KSMLM")
        return templates, words, task.ksmlm_task

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        from_names = self.stage1 is None and not self.config.words()
        if self.stage1 is not None:
            templates, words, ksmlm_task = self.stage1
        else:
            (templates, words), ksmlm_task = self.config.pov(label_names(model) if from_names else None), -1
        return dict(
            template=templates[0], num_prompt_tokens=0, max_length=self.config.max_length, templates=templates,
            template_label_words=words, ksmlm_task=ksmlm_task, ksmlm_weight=self.config.ksmlm_weight if ksmlm_task >= 0 else 0.0,
            label_words_from_names=from_names,
        )

    def prepare_data(self, data: DatasetDict, ctx: MethodContext) -> DatasetDict:
        if isinstance(ctx.task, UPTStage1Task) and "train" in data:
            self._stage1_examples = len(data["train"])
        return data

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        self.stage1 = self._stage1_layout(ctx)
        options = self._model_options(model)
        if not isinstance(model, PromptModel):
            model = PromptModel.from_backbone(model, load_masked_lm(model), objective=self.objective, **options)
        elif len(model.prompt_embeddings):
            raise MethodError("upt starts from a backbone or a upt folder, not a model with trainable prompt tokens")
        else:
            cfg = model.config
            bound = {k: getattr(cfg, k) for k in options} == options and cfg.objective == self.objective
            for key, value in options.items():
                setattr(cfg, key, value)
            cfg.objective = self.objective
            if not bound:  # another layout: the token ids are bound again from the tokenizer
                cfg.template_ids = cfg.templates_ids = cfg.label_word_ids = cfg.template_label_word_ids = None
        if self.stage1 is None and len(options["template_label_words"][0]) != model.config.num_labels:
            raise MethodError(f"label_words has {len(options['template_label_words'][0])} word(s), the task has "
                              f"{model.config.num_labels} labels")
        return _bind(model, ctx)

    def train_sampler(self, dataset: Any, args: TrainingArguments) -> Sampler | None:
        if self.stage1 is None:
            return None
        ksmlm_task = self.stage1[2]
        tasks = [-1 if t == ksmlm_task else t for t in dataset["task_ids"]]
        num_tasks = len(self.stage1[0]) - (ksmlm_task >= 0)
        weights = task_balanced_weights([tasks.count(k) for k in range(num_tasks)], self.config.gamma)
        share = self.config.ksmlm_share if ksmlm_task >= 0 else 0.0
        return TaskBalancedSampler(tasks, weights, args.per_device_train_batch_size, share, args.seed)

    def report(self) -> dict[str, Any]:
        if self.stage1 is None:
            return {}
        out: dict[str, Any] = {"stage1_tasks": len(self.stage1[0])}
        if self._stage1_examples is not None:
            out["stage1_train_examples"] = self._stage1_examples
        return out

"""The prompt methods wired into the core Trainer.

- `prepare_model`: the core builds a sequence-classification model; it is replaced by a `PromptModel` holding the
  same encoder weights plus the masked-LM head transform of the same checkpoint (a fresh one where the checkpoint
  has none, e.g. `minilm` or the tiny test models). A reloaded run is already a `PromptModel` and passes through.
- `train_sampler`: class-balanced batches (CP-Tuning), so every batch has positive and negative pairs; UPT's
  stage 1 draws task-balanced batches (Eq. 3) with a share of KSMLM examples.
- `callbacks`: `PromptCallback` binds the tokenizer's token ids when the Trainer is built, and refreshes the
  training anchors before every evaluation and at the end of training, so the saved model carries them.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import AutoModelForMaskedLM, PreTrainedModel, TrainerCallback, TrainingArguments

from plmkit.core.models import load_model
from plmkit.core.training import Method, MethodError
from plmkit.prompt_tuning.config import CPTuningConfig, PromptTuningConfig, UPTConfig
from plmkit.prompt_tuning.model import PromptModel, compute_anchors
from plmkit.prompt_tuning.sampler import ClassBalancedSampler
from plmkit.prompt_tuning.weighting import TaskBalancedSampler, task_balanced_weights

__all__ = ["CPTuningMethod", "PromptCallback", "PromptTuningMethod", "UPTMethod", "load_masked_lm"]


def load_masked_lm(backbone: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """The masked-LM version of `backbone`'s checkpoint (for its head); built from the config if it has no source."""
    source = getattr(backbone.config, "_name_or_path", "") or ""
    if source:
        masked_lm, _ = load_model(source, kind="masked-lm", seed=seed)
        return masked_lm
    return AutoModelForMaskedLM.from_config(backbone.config)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


class PromptCallback(TrainerCallback):
    """Token-id binding, class-balanced batches, and anchor refreshes (module docstring)."""

    def on_init_end(self, args, state, control, model=None, processing_class=None, **kwargs):  # noqa: ANN001
        if processing_class is not None:
            _unwrap(model).bind_tokenizer(processing_class)

    def _refresh(self, args, model, train_dataloader) -> None:  # noqa: ANN001
        model = _unwrap(model)
        if model.config.objective != "contrastive" or train_dataloader is None:
            return
        ordered = DataLoader(
            train_dataloader.dataset, batch_size=args.per_device_eval_batch_size, shuffle=False,
            collate_fn=train_dataloader.collate_fn,
        )
        compute_anchors(model, ordered)

    def on_step_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):  # noqa: ANN001
        if control.should_evaluate:
            self._refresh(args, model, train_dataloader)

    def on_epoch_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):  # noqa: ANN001
        if control.should_evaluate:
            self._refresh(args, model, train_dataloader)

    def on_train_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):  # noqa: ANN001
        self._refresh(args, model, train_dataloader)


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


class _PromptMethod(Method):
    objective = ""

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if isinstance(model, PromptModel):
            if model.config.objective == self.objective:
                return model  # a saved run of this method, with its own prompt settings
            return model.for_objective(self.objective, **self._model_options(model))
        options = self._model_options(model)
        return PromptModel.from_backbone(model, load_masked_lm(model), objective=self.objective, **options)

    def callbacks(self) -> list[TrainerCallback]:
        return [PromptCallback()]

    def train_sampler(self, dataset: Any, args: TrainingArguments) -> Sampler | None:
        if not getattr(self.config, "balanced_batches", False):
            return None
        return ClassBalancedSampler(dataset["labels"], args.per_device_train_batch_size, args.seed)


class CPTuningMethod(_PromptMethod):
    """CP-Tuning (Xu et al., WSDM 2023): contrastive prompt tuning without a verbalizer."""

    name = "cp_tuning"
    config_class = CPTuningConfig
    objective = "contrastive"

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        options = super()._model_options(model)
        options.pop("balanced_batches")
        return options


class PromptTuningMethod(_PromptMethod):
    """Prompt-based fine-tuning with a verbalizer (LM-BFF style), the baseline CP-Tuning is compared with."""

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
    (`plmkit.prompt_tuning.stage1`) sets `stage1_tasks` to the sources' templates before building the Trainer.
    """

    name = "upt"
    config_class = UPTConfig
    objective = "upt"

    def __init__(self, config: UPTConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.stage1_tasks: tuple[list[str], list[list[str]], int] | None = None  # templates, label words, KSMLM index

    def _model_options(self, model: nn.Module) -> dict[str, Any]:
        from_names = self.stage1_tasks is None and not self.config.words()
        if self.stage1_tasks is not None:
            templates, words, ksmlm_task = self.stage1_tasks
        else:
            (templates, words), ksmlm_task = self.config.pov(label_names(model) if from_names else None), -1
        return dict(
            template=templates[0], num_prompt_tokens=0, max_length=self.config.max_length, templates=templates,
            template_label_words=words, ksmlm_task=ksmlm_task, ksmlm_weight=self.config.ksmlm_weight if ksmlm_task >= 0 else 0.0,
            label_words_from_names=from_names,
        )

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.config.sources and self.stage1_tasks is None:
            raise MethodError("--method.sources is for stage 1, which runs as `plmkit-upt stage1 CONFIG`; stage 2 "
                              "(plmkit train --method upt) takes the stage-1 folder as --model_name_or_path instead")
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
            if not bound:  # token ids are re-bound from the tokenizer when the Trainer is built
                cfg.template_ids = cfg.templates_ids = cfg.label_word_ids = cfg.template_label_word_ids = None
        if self.stage1_tasks is None and len(options["template_label_words"][0]) != model.config.num_labels:
            raise MethodError(f"label_words has {len(options['template_label_words'][0])} word(s), the task has "
                              f"{model.config.num_labels} labels")
        return model

    def train_sampler(self, dataset: Any, args: TrainingArguments) -> Sampler | None:
        if self.stage1_tasks is None:
            return None
        ksmlm_task = self.stage1_tasks[2]
        tasks = [-1 if t == ksmlm_task else t for t in dataset["task_ids"]]
        num_tasks = len(self.stage1_tasks[0]) - (ksmlm_task >= 0)
        weights = task_balanced_weights([tasks.count(k) for k in range(num_tasks)], self.config.gamma)
        share = self.config.ksmlm_share if ksmlm_task >= 0 else 0.0
        return TaskBalancedSampler(tasks, weights, args.per_device_train_batch_size, share, args.seed)

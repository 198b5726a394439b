"""``CAPMethod``: wires CAP's banks, loss terms, teacher and pruning engines into the core Trainer hooks.

    plmkit train packages/cap/configs/rt_polarity_cap_m.yaml --method.sparsity 0.97

Timeline of a run (spec cap.md 2.1):
- train begin: index the training set, load or fine-tune the teacher, encode the FiC bank;
- unstructured (CAP-m / CAP-soft): at the start of epoch 0 the PrC bank (the pre-trained model, unpruned), at
  the start of every later epoch one more SnC snapshot; the cubic schedule runs after every optimizer step;
- structured (CAP-f): at steps 0, T/n, 2T/n, ...: importance with the full loss, PrC (iteration 0) or an SnC
  snapshot of the model before the new masks, the new masks, a fresh optimizer state and LR schedule;
- every training step: ``extra_loss`` adds (w_ce - 1) L_task (so the task loss counts w_ce times), KD, the
  contrastive terms of each bank, and CAP-soft's L1.
"""

from __future__ import annotations

import copy
import json
import logging
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from plmkit.cap.banks import DTYPES, ExampleIndex, RepresentationBank
from plmkit.cap.config import CAPConfig
from plmkit.cap.engines import IterativePruningCallback, StructuredEngine, UnstructuredEngine
from plmkit.cap.losses import contrastive_terms, distillation_loss, sample_extra, soft_movement_regularizer
from plmkit.cap.representations import RepresentationTap
from plmkit.cap.teacher import finetune_teacher, load_teacher
from plmkit.core.pruning import movement_parameter_groups
from plmkit.core.training import Method, MethodError

__all__ = ["CAPMethod"]

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BANKS_FILE = "cap_banks.json"


class CAPMethod(Method):
    """Contrastive Pruning (Xu, Luo et al., AAAI 2022) with the CAP-m, CAP-soft or CAP-f engine."""

    name = "cap"
    config_class = CAPConfig
    config: CAPConfig

    def __init__(self, config: CAPConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        c = self.config
        self.engine: UnstructuredEngine | StructuredEngine = StructuredEngine(c) if c.structured else UnstructuredEngine(c)
        self.banks: dict[str, RepresentationBank] = {}
        self.labels: torch.Tensor | None = None
        self.index: ExampleIndex | None = None
        self.teacher: nn.Module | None = None
        self.tap: RepresentationTap | None = None
        self.generator = torch.Generator()
        self.pretrained: nn.Module | None = None
        self.loader: DataLoader | None = None

    # -- hooks ------------------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        c = self.config
        if getattr(model.config, "num_labels", 2) == 1 and c.banks["supervised"]:
            raise MethodError("regression tasks have no 'same label' positives: pass --method.supervised_banks none")
        if c.teacher is None and self.needs_teacher:
            self.pretrained = copy.deepcopy(model)  # the teacher is fine-tuned from the same weights
        self.engine.prepare(model)
        self.tap = RepresentationTap(model, c.representation)
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        if self.config.structured:
            return None
        return movement_parameter_groups(model, self.config.scores_learning_rate, self.config.scores_lr_schedule)

    def callbacks(self) -> list[TrainerCallback]:
        if isinstance(self.engine, StructuredEngine):
            return [BankCallback(self), IterativePruningCallback(self.engine, self.prune_iteration)]
        return [BankCallback(self), *self.engine.callbacks()]

    def extra_loss(self, model: nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """CAP's terms beyond the task loss while training; evaluation reports the plain task loss."""
        if not model.training:
            return None
        return self.cap_terms(model, inputs, outputs)

    def export(self, model: nn.Module) -> nn.Module:
        """CAP-m / CAP-soft: dense layers holding the zeros; CAP-f: the physically compacted model."""
        if self.tap is not None:
            self.tap.remove()
        return self.engine.export(model)

    # -- the loss ---------------------------------------------------------------------------------------------
    @property
    def needs_teacher(self) -> bool:
        c = self.config
        return c.distill_weight > 0 or "finetuned" in c.banks["unsupervised"] + c.banks["supervised"]

    def cap_terms(self, model: nn.Module, inputs: dict[str, Any], outputs: Any, with_banks: bool = True) -> torch.Tensor:
        """(w_ce - 1) L_task + w_kd KD + sum_banks (w_u L_unsup + w_s L_sup) + lambda_t L_reg (CAP, Sec. 3);
        ``with_banks=False`` leaves out the contrastive terms."""
        c = self.config
        assert self.tap is not None
        anchors = self.tap.pop()
        total = (c.ce_weight - 1.0) * outputs.loss
        if self.teacher is not None and c.distill_weight > 0:
            with torch.no_grad():
                teacher_logits = self.teacher(**{k: inputs[k] for k in MODEL_INPUTS if k in inputs}).logits
            total = total + c.distill_weight * distillation_loss(outputs.logits, teacher_logits, c.distill_temperature)
        if isinstance(self.engine, UnstructuredEngine) and (weight := self.engine.regularizer_weight()) > 0:
            total = total + weight * soft_movement_regularizer(model)
        if not with_banks or self.index is None or self.labels is None:
            return total
        rows, labels = self.index.lookup(inputs), inputs.get("labels")
        chosen = c.banks
        for name, bank in self.banks.items():
            unsupervised, supervised = name in chosen["unsupervised"], name in chosen["supervised"]
            if not len(bank) or not (unsupervised or supervised):
                continue
            extra = sample_extra(bank.num_examples, len(bank), c.extra_examples, self.generator)
            u_term, s_term = contrastive_terms(
                anchors, rows, labels if supervised else None, bank.gather(rows), bank.gather(extra), extra,
                self.labels[extra] if supervised else None, c.contrastive_temperature,
            )
            if unsupervised:
                total = total + c.unsupervised_weight * u_term
            if s_term is not None:
                total = total + c.supervised_weight * s_term
        return total

    def full_loss(self, model: nn.Module, batch: dict[str, Any], with_banks: bool = True) -> torch.Tensor:
        """The whole CAP loss of one batch (CAP-f's importance is measured with it, as the reference's run_glue.py)."""
        outputs = model(**batch)
        return outputs.loss + self.cap_terms(model, batch, outputs, with_banks)

    # -- banks ------------------------------------------------------------------------------------------------
    def begin(self, args: TrainingArguments, model: nn.Module, train_dataloader: Any) -> None:
        """Index the training set, get the teacher, encode the FiC bank."""
        c = self.config
        dataset, collator = train_dataloader.dataset, train_dataloader.collate_fn
        if "labels" not in dataset.column_names:
            raise MethodError("CAP needs a labelled training set (a 'labels' column)")
        self.index = ExampleIndex(dataset["input_ids"])
        self.labels = torch.as_tensor(dataset["labels"])
        self.generator.manual_seed(args.seed)
        self.loader = DataLoader(dataset, batch_size=args.per_device_eval_batch_size, shuffle=False,
                                 collate_fn=collator)
        self.banks = {}
        device = next(model.parameters()).device
        if self.needs_teacher:
            if c.teacher is not None:
                self.teacher = load_teacher(c.teacher, model)
            elif self.teacher is None:
                assert self.pretrained is not None
                logger.info("CAP: fine-tuning the teacher for %s epochs", c.teacher_epochs)
                self.teacher = finetune_teacher(self.pretrained, args, dataset, collator, c.teacher_epochs,
                                                Path(args.output_dir) / "teacher")
                self.pretrained = None
            self.teacher.to(device).eval().requires_grad_(False)
        if self.teacher is not None and "finetuned" in c.banks["unsupervised"] + c.banks["supervised"]:
            tap = RepresentationTap(self.teacher, c.representation)
            try:
                self.add_to_bank("finetuned", self.encode(self.teacher, tap, train_mode=False))
            finally:
                tap.remove()

    @torch.no_grad()
    def encode(self, model: nn.Module, tap: RepresentationTap, train_mode: bool) -> torch.Tensor:
        """h(x) [N, H] of every training example in training-set order, without gradient."""
        assert self.loader is not None
        was_training = model.training
        device = next(model.parameters()).device
        model.train(train_mode)
        parts = []
        try:
            for batch in self.loader:
                model(**{k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS})
                parts.append(tap.pop().float().cpu())
        finally:
            model.train(was_training)
        return torch.cat(parts)

    def add_to_bank(self, name: str, representations: torch.Tensor) -> None:
        c = self.config
        if name not in self.banks:
            n, hidden = representations.shape
            dtype = DTYPES[c.bank_dtype]
            self.banks[name] = (
                RepresentationBank.on_disk(name, n, hidden, dtype, c.bank_dir) if c.bank_storage == "disk"
                else RepresentationBank(name, n, hidden, dtype)
            )
        self.banks[name].append(representations)
        logger.info("CAP bank %s: %s", name, self.banks[name].memory())

    def snapshot(self, model: nn.Module, first: bool) -> None:
        """The student's current representations: the PrC bank the first time, then one more SnC entry."""
        c = self.config
        name = "pretrained" if first else "snapshots"
        if name not in c.banks["unsupervised"] + c.banks["supervised"]:
            return
        assert self.tap is not None
        self.add_to_bank(name, self.encode(model, self.tap, train_mode=not first and c.snapshot_mode == "train"))

    def bank_memory(self) -> dict[str, Any]:
        """Per bank: representations, dtype, bytes and the ratio to fp32 storage."""
        return {name: bank.memory() for name, bank in self.banks.items()}

    # -- CAP-f ------------------------------------------------------------------------------------------------
    def prune_iteration(self, model: nn.Module, train_dataloader: Any, iteration: int, sparsity: float) -> None:
        """Importance (full loss), snapshot of the model before the new masks, then the masks."""
        assert isinstance(self.engine, StructuredEngine)
        c = self.config
        loader = DataLoader(train_dataloader.dataset, batch_size=train_dataloader.batch_size or 1, shuffle=False,
                            collate_fn=train_dataloader.collate_fn)
        batches = islice(loader, c.importance_batches) if c.importance_batches else loader
        # The reference attaches the banks to the model only after the first importance pass: task loss and KD only.
        heads, neurons = self.engine.importance(
            model, batches, lambda m, batch: self.full_loss(m, batch, with_banks=iteration > 0)
        )
        keep = self.engine.masks_at(heads, neurons, sparsity)
        self.snapshot(model, first=iteration == 0)
        self.engine.set_masks(*keep)
        logger.info("CAP-f iteration %d: %.0f%% of heads and neurons pruned", iteration + 1, 100 * sparsity)


class BankCallback(TrainerCallback):
    """Builds the banks at the right moments and writes their memory report next to the run."""

    def __init__(self, method: CAPMethod) -> None:
        self.method = method
        self.epochs_begun = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.epochs_begun = 0
        self.method.begin(args, kwargs["model"], kwargs["train_dataloader"])

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not self.method.config.structured:
            self.method.snapshot(kwargs["model"], first=self.epochs_begun == 0)
        self.epochs_begun += 1

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if state.is_world_process_zero:
            out = Path(args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / BANKS_FILE).write_text(json.dumps(self.method.bank_memory(), indent=2))

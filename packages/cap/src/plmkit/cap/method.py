"""``CAPMethod``: CAP's banks, loss terms, teacher and pruning engines on the core's Method hooks.

    plmkit train packages/cap/configs/rt_polarity_cap_m.yaml --method.sparsity 0.97

Timeline of a run (Xu et al. 2022, Sec. 3, in the order of the reference code, alibaba/AliceMind
ContrastivePruning/):
- train begin: the training labels, the teacher (loaded, or fine-tuned first and saved to OUTPUT/teacher), the
  FiC bank; CAP-m / CAP-soft apply the cubic schedule (again after every optimizer step);
- unstructured (CAP-m / CAP-soft): at the start of epoch 0 the PrC bank (the pre-trained model, unpruned), at the
  start of every later epoch one more SnC snapshot;
- structured (CAP-f): at steps 0, T/n, 2T/n, ...: importance with the full loss over the training set (each
  process its share, summed), PrC (iteration 0) or an SnC snapshot of the model before the new masks, the new
  masks, then a fresh optimizer state and learning-rate schedule for the round (``ctx.restart_optimizer``);
- every training step: the task loss weighs ``ce_weight``; ``loss_terms`` adds ``kd``, ``contrastive_unsupervised``
  and ``contrastive_supervised`` (summed over the banks) and CAP-soft's ``l1``.

Banks are addressed by the core's ``example_id``. ``state_dict()`` carries the banks (disk banks: what reopens
them), the generator of the extra candidates, the snapshots and pruning iterations done and the teacher's folder,
so a resumed run continues exactly: no bank is rebuilt from trained weights, no pruning iteration repeated.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from plmkit.cap.banks import DTYPES, RepresentationBank
from plmkit.cap.config import CAPConfig
from plmkit.cap.engines import StructuredEngine, UnstructuredEngine, pruning_sequence
from plmkit.cap.losses import contrastive_terms, sample_extra, soft_movement_regularizer
from plmkit.cap.representations import RepresentationTap
from plmkit.cap.teacher import finetune_teacher, load_teacher
from plmkit.core.losses import distillation_loss
from plmkit.core.pruning import movement_parameter_groups
from plmkit.core.sparsity import frozen_masks, masked_sparsity
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodContext, MethodError

__all__ = ["CAPMethod"]

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXAMPLE_ID = "example_id"
BANK_FOLDER = "cap_banks"


def _encoder_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


class CAPMethod(Method):
    """Contrastive Pruning (Xu, Luo et al., AAAI 2022) with the CAP-m, CAP-soft or CAP-f engine."""

    contract = [
        # min_steps 0: the kit's runs are 16 steps; its TREC run takes the 512 steps min_steps asks for.
        ContractCase("cap", {"teacher_epochs": 1, "min_steps": 0}, extra_passes=True,
                     trec_budget={"num_train_epochs": 8}),
        ContractCase("cap", {"engine": "cap-soft", "teacher_epochs": 1, "min_steps": 0}),
        ContractCase("cap", {"engine": "cap-f", "sparsity": 0.5, "teacher_epochs": 1}, exports="compacted",
                     extra_passes=True),
    ]

    name = "cap"
    config_class = CAPConfig
    config: CAPConfig

    def __init__(self, config: CAPConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        c = self.config
        self.engine: UnstructuredEngine | StructuredEngine = StructuredEngine(c) if c.structured else UnstructuredEngine(c)
        self.banks: dict[str, RepresentationBank] = {}
        self.labels: torch.Tensor | None = None
        self.teacher: nn.Module | None = None
        self.teacher_dir: str | None = None
        self.tap: RepresentationTap | None = None
        self.generator = torch.Generator()
        self.pretrained: nn.Module | None = None
        self.snapshot_epochs = 0  # unstructured: epochs whose start snapshot (PrC, then SnC) is in the banks
        self.iterations_done = 0  # CAP-f: pruning iterations done
        self.pruning_log: list[dict[str, Any]] = []  # CAP-f: step and cumulative sparsity of each iteration
        self.events: list[tuple[int, float]] = []  # CAP-f: (step, cumulative sparsity) of every iteration
        self.restored = False
        self.reached: dict[str, float] = {}

    @property
    def task_loss_weight(self) -> float:
        return self.config.ce_weight

    @property
    def needs_teacher(self) -> bool:
        c = self.config
        return c.distill_weight > 0 or "finetuned" in c.banks["unsupervised"] + c.banks["supervised"]

    # -- set-up --------------------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
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

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def on_train_begin(self, ctx: MethodContext) -> None:
        """The training labels, the teacher and the FiC bank (fresh runs), the schedule's current value or the
        pruning iterations' steps."""
        c, dataset = self.config, ctx.train_dataset
        if isinstance(self.engine, UnstructuredEngine):  # CAP-f prunes in iterations with fine-tuning between them
            c.check_steps(self.name, ctx.state.max_steps)
        for column in ("labels", EXAMPLE_ID):
            if column not in dataset.column_names:
                raise MethodError(f"CAP needs a labelled training set with example ids (no {column!r} column)")
        self.labels = torch.as_tensor(dataset["labels"])
        if not self.restored:
            self.generator.manual_seed(ctx.args.seed)
            self.banks, self.snapshot_epochs, self.iterations_done, self.pruning_log = {}, 0, 0, []
        self._prepare_teacher(ctx)
        if self.teacher is not None and "finetuned" in self._used_banks and "finetuned" not in self.banks:
            tap = RepresentationTap(self.teacher, c.representation)
            try:
                self.add_to_bank(ctx, "finetuned", self.encode(ctx, self.teacher, tap, train_mode=False))
            finally:
                tap.remove()
        if isinstance(self.engine, UnstructuredEngine):
            self.engine.step(ctx.model, ctx.global_step, ctx.state.max_steps)
        else:
            targets = pruning_sequence(c.sparsity, c.pruning_step)
            period = max(1, ctx.state.max_steps // max(1, len(targets)))
            self.events = [(k * period, s) for k, s in enumerate(targets)]

    def on_epoch_begin(self, ctx: MethodContext) -> None:
        """Unstructured: PrC at the start of epoch 0, one SnC snapshot at the start of every later epoch (not again
        for an epoch a resumed run re-enters)."""
        if self.config.structured:
            return
        epoch = math.floor((ctx.state.epoch or 0.0) + 1e-6)
        if epoch < self.snapshot_epochs:
            return
        self.snapshot(ctx, first=self.snapshot_epochs == 0)
        self.snapshot_epochs = epoch + 1

    def on_step_begin(self, ctx: MethodContext) -> None:
        """CAP-f: the pruning iteration due at this step, then a fresh optimizer and LR schedule for its round."""
        due = [k for k, (at, _) in enumerate(self.events) if at <= ctx.global_step and k >= self.iterations_done]
        if not due:
            return
        # Several due at once only in runs shorter than the number of iterations: prune once, to the last.
        iteration = due[-1]
        self.prune_iteration(ctx, iteration, self.events[iteration][1])
        self.iterations_done = iteration + 1
        end = self.events[iteration + 1][0] if iteration + 1 < len(self.events) else ctx.state.max_steps
        ctx.restart_optimizer(steps=max(1, end - ctx.global_step))

    def on_step_end(self, ctx: MethodContext) -> None:
        if isinstance(self.engine, UnstructuredEngine):
            self.engine.step(ctx.model, ctx.global_step, ctx.state.max_steps)

    def on_train_end(self, ctx: MethodContext) -> None:
        if isinstance(self.engine, UnstructuredEngine):
            self.reached = {"masked_sparsity": masked_sparsity(ctx.model)}
        elif self.engine.gates is not None:
            self.reached = self.engine.gates.sparsity_reached()

    # -- the loss ---------------------------------------------------------------------------------------------
    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext | None = None) -> dict[str, torch.Tensor]:
        """KD, the contrastive terms of the banks and CAP-soft's L1; the task loss weighs ``ce_weight``."""
        return self.cap_terms(model, batch, outputs)

    def cap_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                  with_banks: bool = True) -> dict[str, torch.Tensor]:
        """w_kd KD, sum over banks of w_u L_unsup and of w_s L_sup, lambda_t L_reg (Xu et al. 2022, Sec. 3), by
        name; ``with_banks=False`` leaves out the contrastive terms."""
        c = self.config
        assert self.tap is not None
        anchors = self.tap.pop()
        terms: dict[str, torch.Tensor] = {}
        if self.teacher is not None and c.distill_weight > 0:
            with torch.no_grad():
                teacher_logits = self.teacher(**_encoder_inputs(batch)).logits
            terms["kd"] = c.distill_weight * distillation_loss(outputs.logits, teacher_logits, c.distill_temperature)
        if isinstance(self.engine, UnstructuredEngine) and (weight := self.engine.regularizer_weight()) > 0:
            terms["l1"] = weight * soft_movement_regularizer(model)
        if not with_banks or self.labels is None or not self.banks:
            return terms
        rows, labels = batch[EXAMPLE_ID].detach().cpu().long(), batch.get("labels")
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
                _add(terms, "contrastive_unsupervised", c.unsupervised_weight * u_term)
            if s_term is not None:
                _add(terms, "contrastive_supervised", c.supervised_weight * s_term)
        return terms

    def full_loss(self, model: nn.Module, batch: dict[str, Any], with_banks: bool = True) -> torch.Tensor:
        """The whole CAP loss of one batch (CAP-f's importance is measured with it, as the reference's run_glue.py)."""
        outputs = model(**{k: v for k, v in batch.items() if k != EXAMPLE_ID})
        total = self.config.ce_weight * outputs.loss
        for term in self.cap_terms(model, batch, outputs, with_banks).values():
            total = total + term
        return total

    # -- teacher and banks ---------------------------------------------------------------------------------------
    @property
    def _used_banks(self) -> set[str]:
        return set(self.config.banks["unsupervised"] + self.config.banks["supervised"])

    def _prepare_teacher(self, ctx: MethodContext) -> None:
        """Load the teacher (--method.teacher, or the one this run fine-tuned before it was interrupted), or
        fine-tune it now from the pre-trained weights and save it to OUTPUT/teacher."""
        c = self.config
        if not self.needs_teacher or self.teacher is not None:
            self.pretrained = None
            return
        if c.teacher is not None:
            self.teacher = load_teacher(c.teacher, ctx.model)
        elif self.teacher_dir is not None:
            self.teacher = load_teacher(self.teacher_dir, ctx.model)
        else:
            assert self.pretrained is not None
            folder = Path(ctx.args.output_dir).resolve() / "teacher"
            logger.info("CAP: fine-tuning the teacher for %s epochs", c.teacher_epochs)
            self.teacher = finetune_teacher(self.pretrained, ctx.args, ctx.train_dataset,
                                            ctx.train_dataloader.collate_fn, c.teacher_epochs, folder)
            self.teacher_dir = str(folder)
        self.pretrained = None
        self.teacher.to(ctx.device).eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, ctx: MethodContext, model: nn.Module, tap: RepresentationTap, train_mode: bool) -> torch.Tensor:
        """h(x) [N, H] of every training example (row = example_id), without gradient; each process encodes its
        share and the rows are gathered."""
        was_training = model.training
        model.train(train_mode)
        ids, parts = [], []
        try:
            with torch.no_grad(), frozen_masks(model):
                for batch in ctx.batches(batch_size=ctx.args.per_device_eval_batch_size):
                    model(**_encoder_inputs(batch))
                    parts.append(tap.pop().float())
                    ids.append(batch[EXAMPLE_ID].long())
        finally:
            model.train(was_training)
        rows, reps = ctx.all_gather(torch.cat(ids)).cpu(), ctx.all_gather(torch.cat(parts)).cpu()
        out = torch.zeros(len(ctx.train_dataset), reps.shape[-1])
        out[rows] = reps
        return out

    def add_to_bank(self, ctx: MethodContext | None, name: str, representations: torch.Tensor) -> None:
        c = self.config
        if name not in self.banks:
            n, hidden = representations.shape
            directory = None
            if c.bank_storage == "disk":
                directory = c.bank_dir or str(Path(ctx.args.output_dir if ctx is not None else ".") / BANK_FOLDER)
            self.banks[name] = RepresentationBank(name, n, hidden, DTYPES[c.bank_dtype], directory)
        self.banks[name].append(representations)
        logger.info("CAP bank %s: %s", name, self.banks[name].memory())

    def snapshot(self, ctx: MethodContext, first: bool) -> None:
        """The student's current representations: the PrC bank the first time, then one more SnC entry."""
        c = self.config
        name = "pretrained" if first else "snapshots"
        if name not in self._used_banks:
            return
        assert self.tap is not None
        train_mode = not first and c.snapshot_mode == "train"
        self.add_to_bank(ctx, name, self.encode(ctx, ctx.model, self.tap, train_mode))

    def bank_memory(self) -> dict[str, Any]:
        """Per bank: representations, dtype, bytes and the ratio to fp32 storage."""
        return {name: bank.memory() for name, bank in self.banks.items()}

    # -- CAP-f ------------------------------------------------------------------------------------------------
    def prune_iteration(self, ctx: MethodContext, iteration: int, sparsity: float) -> None:
        """Importance (full loss), snapshot of the model before the new masks, then the masks."""
        assert isinstance(self.engine, StructuredEngine)
        c = self.config
        size = ctx.global_train_batch_size  # importance sums batch-level |gradients|: whole batches per process
        data = ctx.train_dataset
        if c.importance_batches:
            data = Subset(data, range(min(len(data), c.importance_batches * size)))
        # The reference attaches the banks to the model only after the first importance pass: task loss and KD only.
        heads, neurons = self.engine.importance(
            ctx.model, ctx.batches(data, batch_size=size, shard="batches"),
            lambda m, batch: self.full_loss(m, batch, with_banks=iteration > 0), all_reduce=ctx.all_reduce,
        )
        keep = self.engine.masks_at(heads, neurons, sparsity)
        self.snapshot(ctx, first=iteration == 0)
        self.engine.set_masks(*keep)
        self.pruning_log.append({"step": ctx.global_step, "sparsity": sparsity})
        logger.info("CAP-f iteration %d: %.0f%% of heads and neurons pruned", iteration + 1, 100 * sparsity)

    # -- state, report, export ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "generator": self.generator.get_state(),
            "snapshot_epochs": self.snapshot_epochs,
            "iterations_done": self.iterations_done,
            "pruning_log": self.pruning_log,
            "teacher_dir": self.teacher_dir,
            "banks": {name: bank.state() for name, bank in self.banks.items()},
        }
        for name, bank in self.banks.items():
            if bank.directory is None:
                state.update({f"bank/{name}/{i}": entry for i, entry in enumerate(bank.entries)})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "banks" not in state:
            raise MethodError("the checkpoint holds no CAP state (banks, pruning progress): it cannot be resumed")
        self.generator.set_state(state["generator"])
        self.snapshot_epochs = int(state["snapshot_epochs"])
        self.iterations_done = int(state["iterations_done"])
        self.pruning_log = list(state["pruning_log"])
        self.teacher_dir = state["teacher_dir"]
        self.banks = {}
        for name, meta in state["banks"].items():
            entries = [state[f"bank/{name}/{i}"] for i in range(int(meta["count"]))] if meta["directory"] is None else None
            self.banks[name] = RepresentationBank.from_state(meta, entries)
        self.restored = True

    def report(self) -> dict[str, Any]:
        """Bank memory (``cap_banks``), the sparsity reached and, for CAP-f, the pruning iterations."""
        report: dict[str, Any] = dict(self.reached)
        if self.banks:
            report["cap_banks"] = self.bank_memory()
        if self.config.structured:
            report["cap_f_pruning"] = list(self.pruning_log)
        return report

    def export(self, model: nn.Module) -> nn.Module:
        """CAP-m / CAP-soft: dense layers holding the zeros; CAP-f: the physically compacted model."""
        if self.tap is not None:
            self.tap.remove()
        return self.engine.export(model)


def _add(terms: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    terms[name] = terms[name] + value if name in terms else value

"""`PSTMethod`: PST wired into the core Trainer's hooks.

    plmkit train packages/pst/configs/rt_polarity.yaml --method.sparsity 0.9

prepare_model    swaps the target linears for PSTLinear and freezes everything else, so the optimizer only sees
                 U, V, A, B, R, C (as the reference's training loop), plus the task head when it is new
                 (``train_head=auto``; the reference never trains it)
on_train_begin   sets the cubic schedule's sparsity for the current step (the core's ``SparsitySchedule``) and
                 counts and prints the trainable parameters once
on_step_end      the schedule after every optimizer step, as the reference's loop
report           the parameter counts (``pst_*`` keys of metrics.json)
export           merges M * (W0 + beta U V) into plain weights (the core's ``export_dense``)
"""

from __future__ import annotations

import fnmatch
import sys
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.models import fresh_parameters
from plmkit.core.sparsity import DEFAULT_TARGETS, SparsitySchedule, export_dense, is_linear, set_sparsity
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodContext, MethodError
from plmkit.pst.config import PSTConfig
from plmkit.pst.layers import PSTLinear, pst_layers
from plmkit.pst.params import format_parameter_counts, pst_parameter_counts

__all__ = ["PSTMethod", "PST_TARGETS", "head_parameter_names"]

# The core's block patterns (BERT/RoBERTa/XLM-R encoder layers, GPT-2 blocks) plus Llama-style decoders
# (`model.layers.*` in *ForCausalLM, `layers.*` in a bare model).
PST_TARGETS: tuple[str, ...] = (*DEFAULT_TARGETS, "layers.*", "model.layers.*")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Parameters of the task head: everything outside the base model, plus a pooler (BERT's sits inside it)."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or getattr(model, prefix, None) is None:
        return []  # a bare encoder/decoder has no head
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".") or ".pooler." in n]


class PSTMethod(Method):
    name = "pst"
    config_class = PSTConfig
    config: PSTConfig
    # min_steps 0: the kit's runs are 16 steps; its TREC run takes the 512 steps min_steps asks for.
    contract = ContractCase("pst", {"min_steps": 0}, trec_budget={"num_train_epochs": 8})

    def __init__(self, config: PSTConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.schedule = SparsitySchedule(self.config.schedule())
        self.counts: dict[str, Any] = {}

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        c = self.config
        patterns = c.target_patterns() or PST_TARGETS
        chosen = [
            (name, module) for name, module in model.named_modules()
            if is_linear(module) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
        ]
        if not chosen:
            raise MethodError(f"no linear layers of {type(model).__name__} match the PST targets {list(patterns)}")
        for name, module in chosen:
            fused_qkv = c.split_fused_qkv and isinstance(module, Conv1D) and name.endswith("attn.c_attn")
            layer = PSTLinear.from_linear(
                module, rank_uv=c.rank_uv, rank_score=c.rank_score, alpha1=c.alpha1, alpha2=c.alpha2, beta=c.beta,
                blocks=3 if fused_qkv else 1,
            )
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        set_sparsity(model, c.initial_sparsity)
        self._freeze(model)
        return model

    def _freeze(self, model: nn.Module) -> None:
        """Only U, V, A, B, R, C train (and the head with ``train_head``)."""
        model.requires_grad_(False)
        for _, layer in pst_layers(model):
            for p in (layer.U, layer.V, layer.A, layer.B, layer.R, layer.C):
                p.requires_grad_(True)
        if self.trains_head(model):
            head = set(head_parameter_names(model))
            for name, p in model.named_parameters():
                if name in head:
                    p.requires_grad_(True)

    def trains_head(self, model: nn.Module) -> bool:
        """``train_head``: true, false, or auto = when any head parameter was initialised instead of loaded."""
        if self.config.train_head == "auto":
            return bool(fresh_parameters(model) & set(head_parameter_names(model)))
        return self.config.train_head == "true"

    def on_train_begin(self, ctx: MethodContext) -> None:
        self.config.check_steps(self.name, ctx.state.max_steps)
        model = ctx.model
        self.schedule.apply(model, ctx.global_step, ctx.state.max_steps)
        self.counts = pst_parameter_counts(model)
        if ctx.rank == 0:
            print(f"[plmkit.pst] {format_parameter_counts(self.counts)}", file=sys.stderr, flush=True)

    def on_step_end(self, ctx: MethodContext) -> None:
        self.schedule.apply(ctx.model, ctx.global_step, ctx.state.max_steps)

    def report(self) -> dict[str, Any]:
        """The trainable-parameter counts of the run (``pst_`` + the keys of `pst_parameter_counts`)."""
        return {f"pst_{k}": v for k, v in self.counts.items()}

    def export(self, model: nn.Module) -> nn.Module:
        """Plain nn.Linear/Conv1D layers holding M * (W0 + beta U V); the PST tensors are dropped."""
        export_dense(model)
        return model.requires_grad_(True)


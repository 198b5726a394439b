"""`veco`: the method that goes with VECO models.

- With task `veco_pretrain` it logs each CA-MLM term: the task's loss is the sum of the terms (Eq. 3); here the
  terms themselves are the training loss (`loss_terms`, each logged as `loss/<term>`, e.g. `loss/mlm_x`,
  `loss/ca_mlm_y`) and the task loss weight is 0, so the total and the gradients are the same sum.
- On any other task it trains as plain fine-tuning.
- `export`: a plain transformers model (`plmkit.veco.export.export_plain`): a plug-out encoder or classifier as
  XLM-R, the NLG model as BART; other models unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodConfig, MethodContext
from plmkit.veco.export import export_plain

__all__ = ["VecoMethod", "VecoMethodConfig"]


@dataclass
class VecoMethodConfig(MethodConfig):
    """VECO: logs the CA-MLM terms with --task veco_pretrain, trains as fine-tuning elsewhere, exports VECO models as
    XLM-R (plug-out) or BART (NLG)."""


class VecoMethod(Method):
    name = "veco"
    config_class = VecoMethodConfig
    contract = ContractCase("veco", model="tiny-veco", trec_defaults=False)  # needs a VECO model, not MiniLM

    def __init__(self, config: VecoMethodConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self._terms = False

    def prepare_model(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        self._terms = getattr(ctx.task, "name", None) == "veco_pretrain"
        return model

    @property
    def task_loss_weight(self) -> float:
        return 0.0 if self._terms else 1.0

    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext) -> dict[str, torch.Tensor]:
        terms = getattr(outputs, "terms", None) if self._terms else None
        return dict(terms) if terms else {}

    def export(self, model: nn.Module) -> nn.Module:
        return export_plain(model)

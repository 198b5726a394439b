"""The representation h(x) CAP contrasts (Xu et al. 2022, Sec. 3), read from the model's own forward.

``cls``: what the classification head receives, i.e. BERT's pooler output after the head's dropout (in train
mode that is the dropout-applied anchor of the reference; in eval mode the bank entry), or the first token's
hidden state for heads that take the whole sequence (RoBERTa). ``mean``: the attention-masked mean of the last
hidden states. Both are l2-normalised. Hooks capture it, so the Trainer's forward serves the task loss and the
contrastive terms at once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from plmkit.core.losses import pool

__all__ = ["RepresentationTap"]


def _classifier(model: nn.Module) -> nn.Module:
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(f"{type(model).__name__} has no classification head (classifier/score) to read h(x) from")


class RepresentationTap:
    """Keeps the latest h(x) of ``model``'s forward (with its autograd graph); ``pop()`` returns and clears it."""

    def __init__(self, model: nn.Module, kind: str = "cls") -> None:
        if kind not in ("cls", "mean"):
            raise ValueError(f"representation must be 'cls' or 'mean', got {kind!r}")
        self.kind = kind
        self.latest: torch.Tensor | None = None
        self.handles: list[RemovableHandle] = []
        if kind == "cls":
            self.handles.append(_classifier(model).register_forward_pre_hook(self._from_head_input))
        else:
            base = getattr(model, "base_model", model)
            self.handles.append(base.register_forward_hook(self._from_last_hidden, with_kwargs=True))

    def _from_head_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        features = args[0]
        self.latest = features[:, 0] if features.dim() == 3 else features

    def _from_last_hidden(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self.latest = pool(output[0], kwargs.get("attention_mask"), "mean")

    def pop(self) -> torch.Tensor:
        """The l2-normalised representation [B, H] of the last forward."""
        if self.latest is None:
            raise RuntimeError("no forward pass has been captured since the last pop()")
        latest, self.latest = self.latest, None
        return F.normalize(latest, p=2, dim=-1)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

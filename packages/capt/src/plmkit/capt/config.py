"""CAPT's options. The paper publishes no code; every default below is a documented choice (see the README,
"Deviations and decisions")."""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.training import MethodConfig, MethodError

__all__ = ["CAPTConfig", "POOLING"]

POOLING = ("cls", "mean")


@dataclass
class CAPTConfig(MethodConfig):
    """Contrastive pre-training (Luo et al. 2021): L = L_MLM + capt_weight * NT-Xent(z(x), z(x~)) over the 2N views of
    a batch, x the clean sequence, x~ the masked-LM corrupted one, z = g(pool(h)) l2-normalised."""

    temperature: float = field(default=0.1, metadata={"help": "NT-Xent temperature tau"})
    capt_weight: float = field(default=1.0, metadata={"help": "lambda: weight of the contrastive loss (added to MLM)"})
    projection_size: int = field(
        default=128, metadata={"help": "output size of the projection head g (Linear-ReLU-Linear, l2-normalised)"}
    )
    pooling: str = field(
        default="cls",
        metadata={"help": "sequence representation h: the first hidden state (cls) or the attention-masked mean",
                  "choices": POOLING},
    )
    stop_gradient_clean: bool = field(
        default=False,
        metadata={"help": "ablation: the clean view is encoded without gradient (only the corrupted view learns)"},
    )
    queue_size: int = field(
        default=0,
        metadata={"help": "past clean-view z kept as extra negatives (MoCo-style FIFO queue); 0 = in-batch only"},
    )
    mlm_probability: float = field(default=0.15, metadata={
        "help": "image-text tasks: share of caption tokens masked in x~ (BERT's 80/10/10); masked_lm: the task's "
                "--task.mlm_probability masks"})
    visual_mask_probability: float = field(default=0.15, metadata={
        "help": "image-text tasks: share of image tokens whose features are zeroed in x~"})
    mlm_weight: float = field(default=1.0, metadata={
        "help": "image-text tasks: weight of the model's MLM loss on the masked captions (masked_lm: the task's loss, "
                "weight 1)"})
    geometry_batches: int = field(
        default=4,
        metadata={"help": "training batches read before each evaluation to measure alignment and uniformity of z "
                          "(eval mode); 0 = off"},
    )

    def validate(self) -> None:
        if not self.temperature > 0:
            raise MethodError(f"temperature must be > 0, got {self.temperature}")
        for name in ("capt_weight", "mlm_weight"):
            if getattr(self, name) < 0:
                raise MethodError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.projection_size < 1:
            raise MethodError(f"projection_size must be >= 1, got {self.projection_size}")
        if self.queue_size < 0:
            raise MethodError(f"queue_size must be >= 0 (0 = no queue), got {self.queue_size}")
        for name in ("mlm_probability", "visual_mask_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise MethodError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.geometry_batches < 0:
            raise MethodError(f"geometry_batches must be >= 0 (0 = off), got {self.geometry_batches}")

"""The fine-tuned teacher (FiC bank and distillation): loaded from a folder, or fine-tuned first in the same run
with the core ``finetune`` method, starting from the same pre-trained weights as the student."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoModelForSequenceClassification, TrainingArguments

from plmkit.core.training import FinetuneMethod, MethodError, Trainer

__all__ = ["check_labels", "finetune_teacher", "load_teacher"]


def _is_generic(label2id: dict[str, int]) -> bool:
    return all(name == f"LABEL_{i}" for name, i in label2id.items())


def check_labels(teacher: nn.Module, student: nn.Module) -> None:
    """Refuse a teacher whose label set or order differs from the student's (a wrong order silently ruins FiC
    and KD)."""
    t, s = teacher.config, student.config
    if t.num_labels != s.num_labels:
        raise MethodError(f"the teacher has {t.num_labels} labels, the student {s.num_labels}")
    if not (_is_generic(t.label2id) or _is_generic(s.label2id)) and t.label2id != s.label2id:
        raise MethodError(f"the teacher's label order {t.label2id} differs from the task's {s.label2id}")


def load_teacher(path: str | Path, student: nn.Module) -> nn.Module:
    """A fine-tuned sequence classifier (a plmkit ``finetune`` run folder or any transformers folder)."""
    if not Path(path).is_dir():
        raise MethodError(f"--method.teacher {path}: not a folder holding a fine-tuned model")
    teacher = AutoModelForSequenceClassification.from_pretrained(str(path))
    check_labels(teacher, student)
    return teacher


def finetune_teacher(pretrained: nn.Module, args: TrainingArguments, dataset: Any, collator: Any,
                     epochs: float, output_dir: Path) -> nn.Module:
    """Fine-tune ``pretrained`` with the run's training arguments for ``epochs`` and save it to ``output_dir``."""
    teacher_args = dataclasses.replace(
        args, output_dir=str(output_dir), num_train_epochs=epochs, max_steps=-1, save_strategy="no",
        eval_strategy="no", report_to=[], logging_strategy="no", load_best_model_at_end=False, push_to_hub=False,
    )
    trainer = Trainer(pretrained, teacher_args, method=FinetuneMethod(), train_dataset=dataset,
                      data_collator=collator)
    trainer.train()
    trainer.save_model()
    return pretrained.eval()

"""Shared pieces of the cross-package tests."""

from pathlib import Path

from plmkit.core.testing import write_toy_files

TINY = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]
NO_DROPOUT = ["--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


def write_toy_csvs(folder: Path, n_train: int = 64, n_eval: int = 32) -> list[str]:
    """The toy task as csv files; returns the data flags that point at them."""
    paths = write_toy_files(folder, n_train, n_eval)
    return [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]

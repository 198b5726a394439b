"""Shared pieces of the cross-package tests."""

from pathlib import Path

from plmkit.core.testing import tiny_dataset

TINY = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]
NO_DROPOUT = ["--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


def write_toy_csvs(folder: Path, n_train: int = 64, n_eval: int = 32) -> list[str]:
    """The toy task as csv files; returns the data flags that point at them."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in tiny_dataset(n_train, n_eval).items():
        ds.to_csv(str(folder / f"{split}.csv"), index=False)
    return [
        "--train_file", str(folder / "train.csv"),
        "--validation_file", str(folder / "validation.csv"),
        "--test_file", str(folder / "test.csv"),
    ]

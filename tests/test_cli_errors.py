"""Bad input ends with one clear error line (exit code 2) and loses nothing."""

import json

from plmkit.core.cli import main
from tests.helpers import TINY, write_toy_csvs


def _fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "plmkit: error:" in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_unknown_method(capsys, tmp_path):
    _fails(capsys, ["train", *TINY, "--data", "rt-polarity", "--method", "nope", "--output_dir", str(tmp_path / "r")],
           "unknown method 'nope'", "finetune")


def test_unknown_alias_lists_aliases(capsys, tmp_path):
    _fails(capsys, ["train", "--model_name_or_path", "bert-tiny-typo", "--data", "rt-polarity",
                    "--output_dir", str(tmp_path / "r"), "--max_train_samples", "8"], "bert-tiny-typo", "tiny-bert", "minilm")


def test_unknown_dataset(capsys, tmp_path):
    _fails(capsys, ["train", *TINY, "--data", "imdb", "--output_dir", str(tmp_path / "r")], "imdb", "rt-polarity")


def test_no_data(capsys, tmp_path):
    _fails(capsys, ["train", *TINY, "--output_dir", str(tmp_path / "r")], "no data")


def test_missing_column(capsys, tmp_path):
    flags = write_toy_csvs(tmp_path / "d")
    _fails(capsys, ["train", *TINY, *flags, "--text_columns", "sentence", "--output_dir", str(tmp_path / "r")],
           "['sentence']", "columns are ['text', 'label']")


def test_label_outside_label_set(capsys, tmp_path):
    flags = write_toy_csvs(tmp_path / "d")
    (tmp_path / "d" / "test.csv").write_text("text,label\nsomething,7\n")
    _fails(capsys, ["train", *TINY, *flags, "--output_dir", str(tmp_path / "r")], "['7']", "test split")


def test_empty_dataset(capsys, tmp_path):
    flags = write_toy_csvs(tmp_path / "d")
    (tmp_path / "d" / "train.csv").write_text("text,label\n")
    _fails(capsys, ["train", *TINY, *flags, "--output_dir", str(tmp_path / "r")], "has no rows")


def test_k_larger_than_a_class(capsys, tmp_path):
    _fails(capsys, ["train", *TINY, "--data", "trec", "--few_shot_k", "400", "--output_dir", str(tmp_path / "r")],
           "K=400 needs 800", "abbreviation")


def test_unknown_flag_and_bad_override(capsys, tmp_path):
    _fails(capsys, ["train", *TINY, "--data", "trec", "--learnin_rate", "1"], "--learnin_rate")
    _fails(capsys, ["train", *TINY, "--data", "trec", "--config_overrides", "dropout"], "key=value")


def test_previous_run_is_never_overwritten_silently(capsys, tmp_path):
    flags = write_toy_csvs(tmp_path / "d")
    out = tmp_path / "run"
    argv = ["train", *TINY, *flags, "--output_dir", str(out), "--max_steps", "2"]
    assert main(argv) == 0
    before = (out / "metrics.json").read_bytes()
    _fails(capsys, argv, "already holds files", "--overwrite_output_dir", "--resume_from_checkpoint")
    assert (out / "metrics.json").read_bytes() == before
    _fails(capsys, [*argv, "--resume_from_checkpoint", "true"], "no checkpoint-* folder")
    assert main([*argv, "--overwrite_output_dir", "--seed", "3"]) == 0
    assert json.loads((out / "metrics.json").read_text())["train_loss"] > 0


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    flags = write_toy_csvs(tmp_path / "d")
    out = tmp_path / "run"
    base = ["train", "--model_name_or_path", "tiny-bert", "--report_to", "none", "--disable_tqdm", "true", *flags,
            "--output_dir", str(out), "--save_strategy", "steps", "--save_steps", "4", "--max_steps", "4"]
    assert main(base) == 0
    assert (out / "checkpoint-4").is_dir()
    assert main([*base[:-1], "8", "--resume_from_checkpoint", "true"]) == 0
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8

"""The methods through the `plmkit` command, as a user runs them."""

import json

import pytest

from plmkit.core.cli import main
from plmkit.core.run import load_run
from plmkit.core.testing import tiny_dataset
from plmkit.core.training import MethodError, build_method
from plmkit.prompt_tuning import PromptModel, predict


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for split, ds in tiny_dataset(64, 32, 2).items():
        ds.to_json(folder / f"{split}.jsonl")
    return folder


def _train(data_dir, out, *flags):
    main([
        "train", "--model_name_or_path", "tiny-bert", "--few_shot_k", "8",
        "--train_file", str(data_dir / "train.jsonl"), "--validation_file", str(data_dir / "validation.jsonl"),
        "--test_file", str(data_dir / "test.jsonl"), "--output_dir", str(out), "--max_steps", "12",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--report_to", "none", "--num_threads", "1",
        "--save_strategy", "no", *flags,
    ])
    return json.loads((out / "metrics.json").read_text())


def test_cp_tuning_trains_saves_evaluates_and_predicts(data_dir, tmp_path, capsys):
    metrics = _train(data_dir, tmp_path / "run", "--method", "cp_tuning", "--method.num_prompt_tokens", "2",
                     "--method.mlm_weight", "0.1")
    assert {"eval_accuracy", "test_accuracy"} <= set(metrics)
    model, tokenizer, _, _ = load_run(tmp_path / "run")
    assert isinstance(model, PromptModel) and model.config.num_anchors == 16  # K=8 x 2 classes
    capsys.readouterr()
    main(["eval", str(tmp_path / "run"), "--split", "test"])
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    # Evaluating the anchors' own examples runs leave-one-out (never each example's own anchor).
    main(["eval", str(tmp_path / "run"), "--split", "train"])
    assert "train_accuracy" in json.loads(capsys.readouterr().out)
    assert predict(model, tokenizer, ["a great movie", "the worst film"])[0] in ("0", "1")  # load_files names labels by their values


def test_centroid_prediction_and_verbalizer_baseline_run(data_dir, tmp_path):
    assert "test_accuracy" in _train(data_dir, tmp_path / "c", "--method", "cp_tuning", "--method.prediction", "centroid")
    assert "test_accuracy" in _train(data_dir, tmp_path / "v", "--method", "prompt_tuning", "--method.label_words", "good,bad")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prediction": "knn"}, "prediction must be one of"),
        ({"margin": 1.5}, "margin must be in"),
        ({"scale": 0}, "scale must be > 0"),
        ({"cost_ratio": -1}, "cost_ratio must be > 0"),
        ({"mlm_weight": -0.1}, "mlm_weight must be >= 0"),
        ({"mlm_probability": 1.0}, "mlm_probability must be in"),
        ({"num_prompt_tokens": -1}, "num_prompt_tokens must be >= 0"),
        ({"template": "{text}"}, "exactly one"),
        ({"verbalizer": "a,b"}, "has no option"),
    ],
)
def test_bad_options_are_explained(options, message):
    with pytest.raises(MethodError, match=message):
        build_method("cp_tuning", options)


@pytest.mark.parametrize("method", ["prompt_tuning", "upt"])
def test_label_names_serve_as_label_words_when_each_is_one_token(tmp_path, method, capsys):
    folder = tmp_path / "named"
    folder.mkdir()
    for split, ds in tiny_dataset(64, 32, 2).items():  # labels named by words of the tiny vocabulary
        rows = [{"text": r["text"], "label": ["bad", "good"][r["label"]]} for r in ds]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = _train(folder, tmp_path / "run", "--method", method)
    assert "label words: the label names ['bad', 'good']" in capsys.readouterr().err
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.parametrize("method", ["prompt_tuning", "upt"])
def test_label_names_of_several_tokens_ask_for_label_words(tmp_path, method, capsys):
    rows = [{"text": "a good film", "label": "zebra"}, {"text": "a bad film", "label": "yak"}] * 4
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["train", "--model_name_or_path", "tiny-bert", "--train_file", str(tmp_path / "train.jsonl"),
                 "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--report_to", "none",
                 "--method", method]) == 2
    err = capsys.readouterr().err
    assert "label names are used as label words, but 'yak' is" in err and "--method.label_words" in err


@pytest.mark.slow
def test_minilm_rt_polarity_smoke(tmp_path):
    main([
        "train", "--model_name_or_path", "minilm", "--data", "rt-polarity", "--few_shot_k", "16", "--max_length", "64",
        "--method", "cp_tuning", "--max_steps", "8", "--per_device_train_batch_size", "8", "--learning_rate", "2e-5",
        "--max_eval_samples", "64", "--output_dir", str(tmp_path / "run"), "--report_to", "none", "--save_strategy", "no",
        "--num_threads", "1",
    ])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5  # a pretrained encoder's [MASK] features separate sentiment a little
    model, _, _, _ = load_run(tmp_path / "run")
    assert model.config.num_anchors == 32


@pytest.mark.parametrize("name", ["cp_tuning_rt_polarity", "cp_tuning_trec", "prompt_tuning_rt_polarity", "upt_rt_polarity"])
def test_shipped_configs_parse(name):
    from pathlib import Path

    from plmkit.core.config import parse_experiment

    cfg = parse_experiment([str(Path(__file__).parents[1] / "configs" / f"{name}.yaml")])
    build_method(cfg.method_name, cfg.method_options)

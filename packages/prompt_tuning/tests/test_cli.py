"""The methods through the `plmkit` command, as a user runs them."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from plmkit.core.cli import main
from plmkit.core.config import parse_experiment
from plmkit.core.run import build_run_task, load_run, train
from plmkit.core.testing import tiny_dataset
from plmkit.core.training import MethodContext, MethodError, Trainer, build_method
from plmkit.prompt_tuning import CPTuningMethod, PromptModel, predict


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for split, ds in tiny_dataset(64, 32, 2).items():
        ds.to_json(folder / f"{split}.jsonl")
    return folder


def _flags(data_dir, out, *flags):
    return [
        "--model_name_or_path", "tiny-bert", "--few_shot_k", "8",
        "--train_file", str(data_dir / "train.jsonl"), "--validation_file", str(data_dir / "validation.jsonl"),
        "--test_file", str(data_dir / "test.jsonl"), "--output_dir", str(out), "--max_steps", "12",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--report_to", "none", "--num_threads", "1",
        "--save_strategy", "no", *flags,
    ]


def _train(data_dir, out, *flags):
    assert main(["train", *_flags(data_dir, out, *flags)]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_cp_tuning_trains_saves_evaluates_and_predicts(data_dir, tmp_path, capsys):
    metrics = _train(data_dir, tmp_path / "run", "--method", "cp_tuning", "--method.num_prompt_tokens", "2",
                     "--method.mlm_weight", "0.1")
    assert {"eval_accuracy", "test_accuracy"} <= set(metrics)
    model, tokenizer, _, _ = load_run(tmp_path / "run")
    assert isinstance(model, PromptModel) and model.config.num_anchors == 16  # K=8 x 2 classes
    assert torch.equal(model.anchor_ids, torch.arange(16))  # the training examples' example_id, in order
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
    _, _, method, _ = load_run(tmp_path / "v")
    assert method.config.label_words == ["good", "bad"]  # a list option, saved and reloaded as a list


def _random_label_files(folder, n=32):
    """Training labels that no text predicts: only an example's own anchor would get them right."""
    folder.mkdir()
    rng = random.Random(0)
    for split, ds in tiny_dataset(n, n, 2).items():
        rows = [{"text": r["text"], "label": rng.randint(0, 1) if split == "train" else r["label"]} for r in ds]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _train_split_accuracy(run_dir, with_method_data):
    """Accuracy on the run's own training split through the core Trainer, with or without cp_tuning's data columns."""
    model, tokenizer, method, cfg = load_run(run_dir)
    task = build_run_task(cfg)
    encoded = task.encode(task.load(), tokenizer, cfg.model.max_length, method.batch_columns)
    if with_method_data:
        encoded = method.prepare_data(encoded, MethodContext(cfg.training, task, tokenizer))
    cfg.training.report_to = []
    trainer = Trainer(model, cfg.training, task=task, data_collator=task.collator(tokenizer, model),
                      processing_class=tokenizer, compute_metrics=task.compute_metrics())
    return trainer.evaluate(encoded["train"], metric_key_prefix="train")["train_accuracy"]


@pytest.fixture(scope="module")
def random_label_run(tmp_path_factory):
    """A barely trained cp_tuning run on training labels that are noise, predicting by nearest anchor."""
    folder = _random_label_files(tmp_path_factory.mktemp("noise") / "data")
    out = tmp_path_factory.mktemp("noise") / "run"
    flags = _flags(folder, out, "--method", "cp_tuning", "--method.prediction", "nearest",
                   "--config_overrides", "initializer_range=0.5",
                   "--learning_rate", "1e-6", "--max_steps", "2")
    flags[flags.index("--few_shot_k") : flags.index("--few_shot_k") + 2] = []
    assert main(["train", *flags]) == 0
    return out


def test_scoring_the_training_split_is_leave_one_out(random_label_run):
    """With its own anchor, every training example would score 100%; left out, noise labels score near chance."""
    assert _train_split_accuracy(random_label_run, with_method_data=False) == 1.0
    assert _train_split_accuracy(random_label_run, with_method_data=True) < 0.8


def test_plmkit_eval_on_the_training_split_is_leave_one_out(random_label_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(random_label_run), "--split", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["train_accuracy"] == pytest.approx(
        _train_split_accuracy(random_label_run, with_method_data=True))


class _Interrupted(Exception):
    pass


def test_a_resumed_run_ends_with_the_weights_and_anchors_of_an_uninterrupted_one(data_dir, tmp_path, monkeypatch):
    """Checkpoints every 3 steps (mid-epoch: 16 examples, batch 8), evaluations every 2 (anchors taken, and held by
    the checkpoint), the auxiliary MLM on (random masking); one run is stopped after step 5 and resumed from its
    checkpoint-3."""
    flags = ["--method", "cp_tuning", "--method.mlm_weight", "0.5", "--max_steps", "8", "--save_strategy", "steps",
             "--save_steps", "3", "--eval_strategy", "steps", "--eval_steps", "2", "--seed", "3"]
    train(parse_experiment(_flags(data_dir, tmp_path / "whole", *flags)))

    def stop_after_step_5(self, ctx):
        if ctx.global_step == 5:
            raise _Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(CPTuningMethod, "on_step_begin", stop_after_step_5)
        with pytest.raises(_Interrupted):
            train(parse_experiment(_flags(data_dir, tmp_path / "cut", *flags)))
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-3"]
    assert load_file(str(tmp_path / "cut" / "checkpoint-3" / "model.safetensors"))["anchor_ids"].numel() == 16
    starts = []
    with monkeypatch.context() as patch:
        patch.setattr(CPTuningMethod, "on_train_begin", lambda self, ctx: starts.append((ctx.resumed_from, ctx.global_step)))
        train(parse_experiment(_flags(data_dir, tmp_path / "cut", *flags, "--resume_from_checkpoint", "true")))
    assert starts == [(str(tmp_path / "cut" / "checkpoint-3"), 3)]  # it did resume, at step 3

    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert set(whole) == set(resumed) and {"anchor_features", "anchor_labels", "anchor_ids"} <= set(whole)
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["test_accuracy"] == pytest.approx(
        json.loads((tmp_path / "whole" / "metrics.json").read_text())["test_accuracy"])


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
        ({"min_per_class": -1}, "min_per_class must be >= 0"),
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

    cfg = parse_experiment([str(Path(__file__).parents[1] / "configs" / f"{name}.yaml")])
    build_method(cfg.method_name, cfg.method_options)


def test_a_batch_too_small_for_every_class_is_a_clear_error(tmp_path, capsys):
    """Three classes need batches of 12 for 4 examples of each (min_per_class); 8 stops before training with an
    error that names the batch flag and the option; min_per_class 0 trains anyway."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, ds in tiny_dataset(48, 12, 3).items():
        ds.to_json(folder / f"{split}.jsonl")
    assert main(["train", *_flags(folder, tmp_path / "small", "--method", "cp_tuning")]) == 2
    err = capsys.readouterr().err
    assert "a training batch of 8 cannot hold each of the 3 classes 4 times" in err
    assert "--per_device_train_batch_size 12" in err and "--method.min_per_class 0" in err
    assert "test_accuracy" in _train(folder, tmp_path / "any", "--method", "cp_tuning", "--method.min_per_class", "0")

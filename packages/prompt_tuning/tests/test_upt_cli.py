"""UPT end to end on tiny-bert: stage 1 (`plmkit train --task upt_stage1 --method upt`) -> stage 2 (`plmkit train
--method upt --model_name_or_path STAGE1_DIR`) -> `plmkit eval`, and the `plmkit upt` commands."""

import json
from pathlib import Path

import pytest

import plmkit.prompt_tuning.commands as commands
import plmkit.prompt_tuning.sources as sources
import plmkit.prompt_tuning.stage1 as stage1
from plmkit.core.cli import main
from plmkit.core.data import TaskData
from plmkit.core.models import load_model
from plmkit.core.run import load_run
from plmkit.core.testing import tiny_dataset
from plmkit.prompt_tuning import OptionsKnowledgeRepository, PromptModel
from plmkit.prompt_tuning.ksmlm import embed_words

CONFIGS = Path(__file__).parents[1] / "configs"
_FAKE = {"toy-a": sources.SourceTask("g1", ("good", "bad")), "toy-b": sources.SourceTask("g2", ("what", "who", "where"))}


def _load_fake(name):
    data = tiny_dataset(48, 16, len(_FAKE[name].label_words), seed=len(name))
    return TaskData(name, data, ("text",), "label", _FAKE[name].label_words)


@pytest.fixture()
def toy_sources(monkeypatch):
    for module in (stage1, commands):
        monkeypatch.setattr(module, "SOURCES", {**sources.SOURCES, **_FAKE})
        monkeypatch.setattr(module, "load_source", _load_fake)


def _common(out):
    return ["--output_dir", str(out), "--max_steps", "8", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
            "--report_to", "none", "--num_threads", "1", "--save_strategy", "no", "--max_length", "32"]


def _okr(path):
    model, tok = load_model("tiny-bert", num_labels=2)
    words = ["good", "great", "best", "fun", "bad", "terrible", "worst", "dull"]
    OptionsKnowledgeRepository.build(words, embed_words(model.base_model, tok, words), 2).save(path)
    return path


def test_stage1_then_stage2_through_the_cli(toy_sources, tmp_path, capsys):
    okr = _okr(tmp_path / "okr.json")
    assert main(["train", "--model_name_or_path", "tiny-bert", *_common(tmp_path / "s1"), "--task", "upt_stage1",
                 "--task.sources", "toy-a,toy-b", "--task.okr", str(okr), "--method", "upt"]) == 0
    s1 = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    assert s1["stage1_tasks"] == 3 and "eval_accuracy" in s1  # two sources + KSMLM
    assert s1["stage1_train_examples"] > 2 * 48  # the sources' training rows plus the KSMLM rows
    trained, _ = load_model(str(tmp_path / "s1"), num_labels=2)
    assert isinstance(trained, PromptModel) and trained.config.ksmlm_task == 2
    assert trained.config.templates[2] == "{text_a} Is it {text_b} ? It is {mask} ."
    reloaded, _, _, _ = load_run(tmp_path / "s1")  # a stage-1 run rebuilds with its own layout
    assert reloaded.config.templates == trained.config.templates

    folder = tmp_path / "data"
    folder.mkdir()
    for split, ds in tiny_dataset(64, 32, 2).items():
        ds.to_json(folder / f"{split}.jsonl")
    main(["train", "--model_name_or_path", str(tmp_path / "s1"), "--few_shot_k", "8",
          "--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "validation.jsonl"),
          "--test_file", str(folder / "test.jsonl"), *_common(tmp_path / "s2"), "--method", "upt",
          "--method.label_words", "good,bad"])
    metrics = json.loads((tmp_path / "s2" / "metrics.json").read_text())
    assert "stage1_tasks" not in metrics
    model2, _, _, _ = load_run(tmp_path / "s2")
    assert model2.config.templates == ["{text} Is it good or bad ? It is {mask} ."] and model2.config.ksmlm_task == -1
    capsys.readouterr()
    main(["eval", str(tmp_path / "s2"), "--split", "test"])
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_stage1_without_ksmlm_needs_no_repository(toy_sources, tmp_path):
    main(["train", "--model_name_or_path", "tiny-bert", *_common(tmp_path / "s1"), "--task", "upt_stage1",
          "--task.sources", "toy-a,toy-b", "--method", "upt", "--method.ksmlm_share", "0"])
    metrics = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    assert metrics["stage1_tasks"] == 2 and metrics["stage1_train_examples"] == 2 * 48


def test_stage1_mistakes_are_one_line_errors(toy_sources, tmp_path, capsys):
    base = ["train", "--model_name_or_path", "tiny-bert", *_common(tmp_path / "s1"), "--task", "upt_stage1",
            "--method", "upt"]
    assert main([*base, "--task.sources", "toy-a,toy-b"]) == 2  # KSMLM share without a repository
    assert "--task.okr" in capsys.readouterr().err
    assert main([*base, "--task.sources", "toy-a", "--task.okr", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([*base, "--task.sources", "toy-a", "--data", "trec", "--method.ksmlm_share", "0"]) == 2
    assert "reads its data from --task.sources" in capsys.readouterr().err


def test_upt_commands_adapt_a_head_that_cp_tuning_starts_from(toy_sources, tmp_path, capsys):
    assert main(["upt", "adapt-head", "--model", "tiny-bert", "--sources", "toy-a,toy-b", "--steps", "3",
                 "--batch_size", "8", "--num_threads", "1", "--out", str(tmp_path / "head")]) == 0
    report = json.loads((tmp_path / "head" / "head_adaptation.json").read_text())
    assert report["steps"] == 3 and report["masked_token_accuracy_after"] is not None
    adapted, _ = load_model(str(tmp_path / "head"), num_labels=2)
    assert isinstance(adapted, PromptModel) and adapted.config.objective == "upt"
    assert main(["upt", "adapt-head", "--sources", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "expected source tasks" in capsys.readouterr().err
    assert main(["upt", "--help"]) == 0
    assert "build-okr" in capsys.readouterr().out


def test_rating_pairs_compare_real_ratings():
    from datasets import Dataset

    snippets = Dataset.from_dict({"text": ["a", "b", "c", "d"], "rating": [3.0, -2.0, 2.5, 0.1]})
    pairs = sources.rating_pairs(snippets)
    rating = dict(zip(snippets["text"], snippets["rating"], strict=True))
    for a, b, label in zip(pairs["text_a"], pairs["text_b"], pairs["label"], strict=True):
        assert abs(rating[a] - rating[b]) >= sources.RATING_GAP and label == int(rating[a] > rating[b])
    assert len(pairs) == 4


def test_dissimilar_sources_skip_the_target_group():
    assert sources.sources_for("rt-polarity") == ["trec", "sms-spam"]
    assert "trec" not in sources.sources_for("trec") and "amazon-rating-pairs" in sources.sources_for("trec")
    assert set(sources.GROUPS) == {"sentiment", "question-type", "spam"}
    assert sources.PAIR_TASKS == ("amazon-rating-pairs",)


def test_stage1_config_parses():
    from plmkit.core.config import parse_experiment
    from plmkit.core.run import build_run_task
    from plmkit.core.training import build_method

    cfg = parse_experiment([str(CONFIGS / "upt_stage1_rt_polarity.yaml")])
    task = build_run_task(cfg)
    assert cfg.task_name == "upt_stage1" and task.names == ["trec", "sms-spam"] and task.ksmlm
    assert build_method(cfg.method_name, cfg.method_options).config.ksmlm_share == 0.25


@pytest.mark.slow
def test_shipped_stage1_config_runs_through_plmkit_train(tmp_path):
    """The shipped stage-1 config on the real builtin sources (trec, sms-spam), shrunk to tiny-bert and 2 steps."""
    okr = _okr(tmp_path / "okr.json")
    assert main(["train", str(CONFIGS / "upt_stage1_rt_polarity.yaml"), "--model_name_or_path", "tiny-bert",
                 "--task.okr", str(okr), "--max_train_samples", "40", "--max_eval_samples", "8", "--max_steps", "2",
                 "--output_dir", str(tmp_path / "s1"), "--report_to", "none", "--num_threads", "1"]) == 0
    metrics = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    assert metrics["stage1_tasks"] == 3 and "eval_accuracy" in metrics

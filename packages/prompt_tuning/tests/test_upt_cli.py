"""UPT end to end on tiny-bert: stage 1 (`plmkit-upt stage1`) -> stage 2 (`plmkit train --model_name_or_path`)."""

import json

import pytest

import plmkit.prompt_tuning.sources as sources
import plmkit.prompt_tuning.stage1 as stage1
from plmkit.core.cli import main
from plmkit.core.data import TaskData
from plmkit.core.models import load_model
from plmkit.core.run import load_run
from plmkit.core.testing import tiny_dataset
from plmkit.prompt_tuning import OptionsKnowledgeRepository, PromptModel
from plmkit.prompt_tuning.ksmlm import embed_words

_FAKE = {"toy-a": sources.SourceTask("g1", ("good", "bad")), "toy-b": sources.SourceTask("g2", ("what", "who", "where"))}


@pytest.fixture()
def toy_sources(monkeypatch):
    def load(name):
        data = tiny_dataset(48, 16, len(_FAKE[name].label_words), seed=len(name))
        return TaskData(name, data, ("text",), "label", _FAKE[name].label_words)

    monkeypatch.setattr(stage1, "SOURCES", {**sources.SOURCES, **_FAKE})
    monkeypatch.setattr(stage1, "load_source", load)


def _common(out):
    return ["--output_dir", str(out), "--max_steps", "8", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
            "--report_to", "none", "--num_threads", "1", "--save_strategy", "no", "--max_length", "32"]


def test_stage1_then_stage2_through_the_cli(toy_sources, tmp_path, capsys):
    model, tok = load_model("tiny-bert", num_labels=2)
    words = ["good", "great", "best", "fun", "bad", "terrible", "worst", "dull"]
    OptionsKnowledgeRepository.build(words, embed_words(model.base_model, tok, words), 2).save(tmp_path / "okr.json")
    stage1.main(["stage1", "--model_name_or_path", "tiny-bert", *_common(tmp_path / "s1"), "--method", "upt",
                 "--method.sources", "toy-a,toy-b", "--method.okr", str(tmp_path / "okr.json")])
    s1 = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    assert s1["stage1_tasks"] == 3 and "eval_accuracy" in s1  # two sources + KSMLM
    trained, _ = load_model(str(tmp_path / "s1"), num_labels=2)
    assert isinstance(trained, PromptModel) and trained.config.ksmlm_task == 2

    folder = tmp_path / "data"
    folder.mkdir()
    for split, ds in tiny_dataset(64, 32, 2).items():
        ds.to_json(folder / f"{split}.jsonl")
    main(["train", "--model_name_or_path", str(tmp_path / "s1"), "--few_shot_k", "8",
          "--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "validation.jsonl"),
          "--test_file", str(folder / "test.jsonl"), *_common(tmp_path / "s2"), "--method", "upt",
          "--method.label_words", "good,bad"])
    metrics = json.loads((tmp_path / "s2" / "metrics.json").read_text())
    model2, _, _, _ = load_run(tmp_path / "s2")
    assert model2.config.templates == ["{text} Is it good or bad ? It is {mask} ."] and model2.config.ksmlm_task == -1
    capsys.readouterr()
    main(["eval", str(tmp_path / "s2"), "--split", "test"])
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_stage1_without_ksmlm_needs_no_repository(toy_sources, tmp_path):
    stage1.main(["stage1", "--model_name_or_path", "tiny-bert", *_common(tmp_path / "s1"), "--method", "upt",
                 "--method.sources", "toy-a,toy-b", "--method.ksmlm_share", "0"])
    assert json.loads((tmp_path / "s1" / "metrics.json").read_text())["stage1_tasks"] == 2


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


def test_stage1_config_parses():
    from pathlib import Path

    from plmkit.core.config import parse_experiment
    from plmkit.core.training import build_method

    cfg = parse_experiment([str(Path(__file__).parents[1] / "configs" / "upt_stage1_rt_polarity.yaml")])
    assert build_method(cfg.method_name, cfg.method_options).config.sources == "trec,sms-spam"

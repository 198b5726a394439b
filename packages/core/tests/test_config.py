from dataclasses import dataclass, field

import pytest
import yaml

from plmkit.core import training
from plmkit.core.config import ConfigError, parse_experiment
from plmkit.core.training import Method, MethodConfig, MethodError


@dataclass
class ToyConfig(MethodConfig):
    """A method with typed options."""

    sparsity: float = field(default=0.5, metadata={"help": "fraction of weights removed"})
    rank: int = field(default=8, metadata={"help": "rank"})
    train_head: bool = field(default=False, metadata={"help": "train the head"})

    def validate(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise MethodError(f"sparsity must be in [0, 1), got {self.sparsity}")


class Toy(Method):
    name = "toy"
    config_class = ToyConfig


class _EntryPoint:
    def __init__(self, obj):
        self.obj = obj

    def load(self):
        return self.obj


@pytest.fixture(autouse=True)
def _register_toy(monkeypatch):
    real = training.available_methods()
    monkeypatch.setattr(training, "available_methods", lambda: {**real, "toy": _EntryPoint(Toy)})


def _yaml(tmp_path, cfg):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_flags_override_the_file_and_method_options_are_typed(tmp_path):
    path = _yaml(tmp_path, {
        "model_name_or_path": "tiny-bert", "data": "rt-polarity", "learning_rate": 1e-3, "num_train_epochs": 3,
        "method": {"name": "toy", "sparsity": 0.7, "rank": 4},
    })
    cfg = parse_experiment([path, "--learning_rate", "2e-4", "--method.rank", "16", "--method.train_head=true"])
    assert cfg.model.model_name_or_path == "tiny-bert" and cfg.data.data == "rt-polarity"
    assert cfg.training.learning_rate == 2e-4 and cfg.training.num_train_epochs == 3
    assert cfg.method_name == "toy"
    assert cfg.method_options == {"sparsity": 0.7, "rank": 16, "train_head": True}


def test_command_line_data_source_replaces_the_files_source_and_back(tmp_path):
    builtin = _yaml(tmp_path, {"model_name_or_path": "tiny-bert", "data": "rt-polarity", "method": {"name": "toy"}})
    cfg = parse_experiment([builtin, "--train_file", "mine.csv", "--validation_file", "dev.csv"])
    assert cfg.data.data is None and cfg.data.train_file == "mine.csv" and cfg.data.validation_file == "dev.csv"
    files = tmp_path / "files.yaml"
    files.write_text(yaml.safe_dump({"train_file": "a.csv", "test_file": "b.csv", "method": "toy"}))
    cfg = parse_experiment([str(files), "--data", "trec"])
    assert cfg.data.data == "trec" and cfg.data.train_file is None and cfg.data.test_file is None


def test_another_method_on_the_command_line_drops_the_files_method_options(tmp_path):
    path = _yaml(tmp_path, {"data": "rt-polarity", "method": {"name": "toy", "sparsity": 0.7, "rank": 4}})
    cfg = parse_experiment([path, "--method", "finetune"])
    assert cfg.method_name == "finetune" and cfg.method_options == {}
    cfg = parse_experiment([path, "--method", "toy", "--method.rank", "2"])  # same method: options merge
    assert cfg.method_options == {"sparsity": 0.7, "rank": 2}


def test_method_from_flags_only():
    cfg = parse_experiment(["--data", "rt-polarity", "--method", "toy", "--method.sparsity", "0.9"])
    assert cfg.method_name == "toy" and cfg.method_options == {"sparsity": 0.9}
    assert training.build_method(cfg.method_name, cfg.method_options).config.sparsity == 0.9


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_experiment(["--data", "trec", "--method", "toy", "--method.rank", "2", "--seed", "7"])
    again = parse_experiment([_yaml(tmp_path, cfg.to_dict())])
    assert again.to_dict() == cfg.to_dict()


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learnin_rate'\]"):
        parse_experiment([_yaml(tmp_path, {"learnin_rate": 0.1})])
    with pytest.raises(MethodError, match=r"no option\(s\) \['rnk'\]"):
        parse_experiment(["--method", "toy", "--method.rnk", "3"])
    with pytest.raises(ValueError, match="--not_a_flag"):
        parse_experiment(["--not_a_flag", "1"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_experiment(["missing.yaml"])


def test_method_option_validation_runs():
    with pytest.raises(MethodError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        training.build_method("toy", {"sparsity": 1.0})


def test_flat_data_keys_mean_the_classification_task_and_a_task_section_is_shaped_like_method(tmp_path):
    cfg = parse_experiment(["--data", "trec"])
    assert cfg.task_name == "classification" and cfg.task_options == {}
    path = _yaml(tmp_path, {"data": "trec", "task": {"name": "classification"}, "method": "toy"})
    cfg = parse_experiment([path])
    assert cfg.task_name == "classification" and cfg.to_dict()["task"] == {"name": "classification"}
    assert parse_experiment([path, "--task", "classification"]).task_name == "classification"


def test_unknown_task_is_an_error_naming_the_installed_ones():
    from plmkit.core.errors import TaskError

    with pytest.raises(TaskError, match=r"unknown task 'nope'.*classification"):
        parse_experiment(["--data", "trec", "--task", "nope"])
    with pytest.raises(TaskError, match=r"task 'classification' has no option\(s\) \['beams'\]"):
        parse_experiment(["--data", "trec", "--task.beams", "4"])

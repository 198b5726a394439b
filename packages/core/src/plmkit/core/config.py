"""Experiment configuration: YAML files and command-line flags.

An experiment names the model, the data, transformers' `TrainingArguments` and the method with its options:

    model_name_or_path: minilm
    data: rt-polarity
    num_train_epochs: 2
    method:
      name: finetune

Every key is also a flag (HfArgumentParser conventions, TrainingArguments' own names), and method options are
dotted flags: `plmkit train exp.yaml --learning_rate 1e-4 --method pst --method.sparsity 0.9`. Flags override
the file. Unknown keys are errors, never silently ignored.

(Design note: HfArgumentParser keeps TrainingArguments' ~110 flags exactly as transformers documents them; the
method section is the only nesting needed, so it is handled here rather than through a second CLI framework.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from plmkit.core.errors import ConfigError, MethodError, TaskError
from plmkit.core.training import get_method

__all__ = [
    "ConfigError",
    "DataArguments",
    "ExperimentConfig",
    "ModelArguments",
    "RunArguments",
    "parse_experiment",
    "parse_method_options",
    "parse_section_options",
    "split_method_flags",
    "split_section_flags",
]


@dataclass
class ModelArguments:
    """Which model to start from."""

    model_name_or_path: str = field(
        default="minilm", metadata={"help": "alias (minilm, tiny-bert, ...), local folder, or hub id (online only)"}
    )
    max_length: int = field(default=128, metadata={"help": "truncate inputs to this many tokens"})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "model config changes as key=value pairs, e.g. 'hidden_dropout_prob=0,attention_probs_dropout_prob=0'"},
    )
    model_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "build a random model (pre-training from scratch): config options for the model type, alias "
                          "or folder in model_name_or_path, e.g. '{hidden_size: 256, num_hidden_layers: 4}'; '{}' for "
                          "the defaults"},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "tokenizer folder (plmkit tokenizer train) or alias instead of the model's; needed with "
                          "model_config for a model type"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.model_config, str):  # a flag: YAML flow mapping
            self.model_config = yaml.safe_load(self.model_config)
        if self.model_config is not None and not isinstance(self.model_config, dict):
            raise ConfigError(f"model_config must be a mapping of config options, got {self.model_config!r}")

    def overrides(self) -> dict[str, Any]:
        """`config_overrides` parsed into typed values (YAML scalars: 0 -> int, 0.1 -> float, true -> bool)."""
        out: dict[str, Any] = {}
        for pair in filter(None, (self.config_overrides or "").split(",")):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"config_overrides: expected key=value, got {pair!r}")
            out[key.strip()] = yaml.safe_load(value)
        return out


@dataclass
class DataArguments:
    """Which data to train and evaluate on: a builtin task (`--data`) or local files."""

    data: str | None = field(default=None, metadata={"help": "builtin dataset (plmkit data list)"})
    train_file: str | None = field(default=None, metadata={"help": "csv, tsv or jsonl training file"})
    validation_file: str | None = field(default=None, metadata={"help": "csv, tsv or jsonl validation file"})
    test_file: str | None = field(default=None, metadata={"help": "csv, tsv or jsonl test file"})
    glue_dir: str | None = field(default=None, metadata={"help": "GLUE-format folder (train.tsv, dev.tsv, test.tsv)"})
    text_columns: list[str] = field(default_factory=lambda: ["text"], metadata={"help": "one or two text columns"})
    label_column: str = field(default="label", metadata={"help": "label column of the files"})
    few_shot_k: int | None = field(default=None, metadata={"help": "LM-BFF sampling: K examples per class"})
    few_shot_seed: int = field(default=13, metadata={"help": "LM-BFF sampling seed (13, 21, 42, 87, 100)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training examples"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use only the first N validation/test examples"})


@dataclass
class RunArguments:
    """Run-level switches that TrainingArguments does not have."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "allow writing into an output_dir that holds a previous run"}
    )
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 picks from the load average"})


@dataclass
class ExperimentConfig:
    model: ModelArguments
    data: DataArguments
    training: TrainingArguments
    run: RunArguments
    method_name: str = "finetune"
    method_options: dict[str, Any] = field(default_factory=dict)
    task_name: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, in the same flat shape a YAML file uses (so a run's config file can be re-run)."""
        out: dict[str, Any] = {}
        for part in (self.model, self.data, self.run):
            out.update(dataclasses.asdict(part))
        out.update({k: v for k, v in self.training.to_dict().items() if not k.startswith("_")})
        out["task"] = {"name": self.task_name, **self.task_options}
        out["method"] = {"name": self.method_name, **self.method_options}
        return out


_ARG_CLASSES = (ModelArguments, DataArguments, TrainingArguments, RunArguments)
SECTIONS = ("method", "task")


def split_section_flags(argv: list[str], section: str) -> tuple[list[str], str | None, dict[str, str]]:
    """Separate `--SECTION NAME` and `--SECTION.KEY VALUE` (or `--SECTION.KEY=VALUE`) from the other flags."""
    rest: list[str] = []
    name: str | None = None
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == f"--{section}" or arg.startswith(f"--{section}="):
            if "=" in arg:
                name = arg.split("=", 1)[1]
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"--{section} needs a {section} name")
                name = argv[i + 1]
                i += 1
        elif arg.startswith(f"--{section}."):
            key = arg[len(section) + 3 :]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ConfigError(f"--{section}.{key} needs a value")
                value = argv[i + 1]
                i += 1
            options[key.replace("-", "_")] = value
        else:
            rest.append(arg)
        i += 1
    return rest, name, options


def split_method_flags(argv: list[str]) -> tuple[list[str], str | None, dict[str, str]]:
    """`split_section_flags(argv, "method")`."""
    return split_section_flags(argv, "method")


def _config_class(section: str, name: str) -> type:
    if section == "method":
        return get_method(name).config_class
    from plmkit.core.tasks import get_task

    return get_task(name).config_class


def _section_error(section: str) -> type[Exception]:
    return MethodError if section == "method" else TaskError


def parse_section_options(section: str, name: str, from_file: dict[str, Any], from_flags: dict[str, str]) -> dict[str, Any]:
    """Typed options of a method or task: file values as they are, flag strings converted by the config's field
    types (a list-typed option takes a comma-separated flag value)."""
    config_class = _config_class(section, name)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted((set(from_file) | set(from_flags)) - set(fields))
    if unknown:
        raise _section_error(section)(
            f"{section} {name!r} has no option(s) {unknown}; its options are {sorted(fields) or 'none'}"
        )
    parser = HfArgumentParser(config_class)
    for action in parser._actions:
        action.choices = None  # the config checks its choices itself, with a one-line error naming the option
    parser.set_defaults(**from_file)
    flags: list[str] = []
    for key, value in from_flags.items():
        listed = "list" in str(fields[key].type).lower() or "tuple" in str(fields[key].type).lower()
        flags += [f"--{key}", *([v.strip() for v in value.split(",") if v.strip()] if listed else [value])]
    namespace, _ = parser.parse_known_args(flags)
    return {k: v for k, v in vars(namespace).items() if k in set(from_file) | set(from_flags)}


def parse_method_options(name: str, from_file: dict[str, Any], from_flags: dict[str, str]) -> dict[str, Any]:
    """Typed method options (see `parse_section_options`)."""
    return parse_section_options("method", name, from_file, from_flags)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(loaded).__name__}")
    return loaded


_BUILTIN_SOURCE = ("data",)
_FILE_SOURCE = ("train_file", "validation_file", "test_file", "glue_dir")


def _without_overridden_sources(file_cfg: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    """Flags override the file, also across data sources: `--train_file` on the command line replaces the file's
    builtin `data`, and `--data` replaces the file's data files."""
    given = {f[2:].split("=", 1)[0] for f in flags if f.startswith("--")}
    if given & set(_FILE_SOURCE):
        return {k: v for k, v in file_cfg.items() if k not in _BUILTIN_SOURCE}
    if given & set(_BUILTIN_SOURCE):
        return {k: v for k, v in file_cfg.items() if k not in _FILE_SOURCE}
    return file_cfg


def _section(file_cfg: dict[str, Any], section: str) -> dict[str, Any]:
    value = file_cfg.pop(section, None) or {}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"`{section}:` must be a name or a mapping with `name` and options, got {value!r}")
    return dict(value)


def parse_experiment(argv: list[str]) -> ExperimentConfig:
    """Parse `[CONFIG.yaml] [--flags]` into an ExperimentConfig (flags override the file)."""
    file_cfg: dict[str, Any] = {}
    if argv and not argv[0].startswith("-"):
        file_cfg = load_yaml(argv[0])
        argv = argv[1:]
    sections = {name: _section(file_cfg, name) for name in SECTIONS}

    parser = HfArgumentParser(_ARG_CLASSES)
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(file_cfg) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} (see `plmkit train --help` for the valid ones)")
    rest = argv
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    defaults = {"method": "finetune", "task": "classification"}
    flag_sections = {}
    for section in SECTIONS:
        rest, flag_name, flag_options = split_section_flags(rest, section)
        flag_sections[section] = (flag_name, flag_options)
    file_cfg = _without_overridden_sources(file_cfg, rest)
    for section in SECTIONS:
        flag_name, flag_options = flag_sections[section]
        from_file = sections[section]
        if flag_name is not None and flag_name != from_file.get("name", flag_name):
            from_file = {}  # another method/task on the command line: the file's options were for the file's one
        name = flag_name or from_file.pop("name", defaults[section])
        from_file.pop("name", None)
        chosen[section] = (name, parse_section_options(section, name, from_file, flag_options))
    parser.set_defaults(**file_cfg)
    if "output_dir" not in file_cfg and "--output_dir" not in " ".join(rest):
        parser.set_defaults(output_dir="outputs/run")
    if "report_to" not in file_cfg:
        parser.set_defaults(report_to=["tensorboard"])
    if not torch.cuda.is_available():
        # CPU-only machine: say so up front (transformers refuses bf16 otherwise) and skip pinned memory.
        parser.set_defaults(**{"use_cpu": True, "dataloader_pin_memory": False} | file_cfg)
    try:
        model_args, data_args, training_args, run_args = parser.parse_args_into_dataclasses(args=rest)
    except ValueError as err:  # unknown flags, or TrainingArguments refusing a combination
        raise ConfigError(str(err)) from err
    (method_name, method_options), (task_name, task_options) = chosen["method"], chosen["task"]
    return ExperimentConfig(model_args, data_args, training_args, run_args, method_name, method_options,
                            task_name, task_options)

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

from plmkit.core.errors import ConfigError, MethodError
from plmkit.core.training import get_method

__all__ = [
    "ConfigError",
    "DataArguments",
    "ExperimentConfig",
    "ModelArguments",
    "RunArguments",
    "parse_experiment",
    "parse_method_options",
    "split_method_flags",
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

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, in the same flat shape a YAML file uses (so a run's config file can be re-run)."""
        out: dict[str, Any] = {}
        for part in (self.model, self.data, self.run):
            out.update(dataclasses.asdict(part))
        out.update({k: v for k, v in self.training.to_dict().items() if not k.startswith("_")})
        out["method"] = {"name": self.method_name, **self.method_options}
        return out


_ARG_CLASSES = (ModelArguments, DataArguments, TrainingArguments, RunArguments)


def split_method_flags(argv: list[str]) -> tuple[list[str], str | None, dict[str, str]]:
    """Separate `--method NAME` and `--method.KEY VALUE` (or `--method.KEY=VALUE`) from the other flags."""
    rest: list[str] = []
    name: str | None = None
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--method" or arg.startswith("--method="):
            if "=" in arg:
                name = arg.split("=", 1)[1]
            else:
                if i + 1 >= len(argv):
                    raise ConfigError("--method needs a method name")
                name = argv[i + 1]
                i += 1
        elif arg.startswith("--method."):
            key = arg[len("--method.") :]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ConfigError(f"--method.{key} needs a value")
                value = argv[i + 1]
                i += 1
            options[key.replace("-", "_")] = value
        else:
            rest.append(arg)
        i += 1
    return rest, name, options


def parse_method_options(name: str, from_file: dict[str, Any], from_flags: dict[str, str]) -> dict[str, Any]:
    """Typed method options: file values as they are, flag strings converted by the config's field types."""
    config_class = get_method(name).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted((set(from_file) | set(from_flags)) - known)
    if unknown:
        raise MethodError(f"method {name!r} has no option(s) {unknown}; its options are {sorted(known) or 'none'}")
    parser = HfArgumentParser(config_class)
    parser.set_defaults(**from_file)
    flags = [tok for k, v in from_flags.items() for tok in (f"--{k}", v)]
    namespace, extra = parser.parse_known_args(flags)
    return {k: v for k, v in vars(namespace).items() if k in set(from_file) | set(from_flags)}


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


def parse_experiment(argv: list[str]) -> ExperimentConfig:
    """Parse `[CONFIG.yaml] [--flags]` into an ExperimentConfig (flags override the file)."""
    file_cfg: dict[str, Any] = {}
    if argv and not argv[0].startswith("-"):
        file_cfg = load_yaml(argv[0])
        argv = argv[1:]
    method_cfg = file_cfg.pop("method", None) or {}
    if isinstance(method_cfg, str):
        method_cfg = {"name": method_cfg}
    method_cfg = dict(method_cfg)

    parser = HfArgumentParser(_ARG_CLASSES)
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(file_cfg) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} (see `plmkit train --help` for the valid ones)")
    rest, flag_name, flag_options = split_method_flags(argv)
    file_cfg = _without_overridden_sources(file_cfg, rest)
    if flag_name is not None and flag_name != method_cfg.get("name", flag_name):
        method_cfg = {}  # another method on the command line: the file's options were for the file's method
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

    name = flag_name or method_cfg.pop("name", "finetune")
    method_cfg.pop("name", None)
    options = parse_method_options(name, method_cfg, flag_options)
    return ExperimentConfig(model_args, data_args, training_args, run_args, name, options)

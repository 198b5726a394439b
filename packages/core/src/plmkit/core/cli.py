"""The `plmkit` command.

    plmkit methods                       installed methods and their options
    plmkit data list                     builtin datasets (the core's and installed packages')
    plmkit data prepare NAME [NAME ...]  fetch, check and cache datasets
    plmkit train [CONFIG.yaml] [--flags] train (see `plmkit train --help`)
    plmkit eval RUN_DIR [--split test] [data flags]
    plmkit export RUN_DIR --output_dir DIR [--method.KEY VALUE]
    plmkit tasks                         installed tasks and their options
    plmkit tokenizer train --input FILE --vocab_size N --output_dir DIR   train a SentencePiece tokenizer
    plmkit PACKAGE COMMAND ...           commands installed packages add (entry-point group plmkit.commands)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from plmkit.core.errors import PlmkitError
from plmkit.core.registry import Registry

USAGE = __doc__


def _list_plugins(section: str, argv: list[str]) -> int:
    from plmkit.core.tasks import TASKS
    from plmkit.core.training import METHODS

    registry = METHODS if section == "method" else TASKS
    for name in argv or registry.names():
        try:
            cls = registry.get(name)
        except ImportError as err:  # one broken plugin must not hide the others
            print(f"{name}: cannot be loaded ({type(err).__name__}: {err})")
            continue
        doc = (cls.config_class.__doc__ or "").strip().splitlines()[0] if cls.config_class.__doc__ else ""
        print(f"{name}: {doc}")
        for f in dataclasses.fields(cls.config_class):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            choices = f" (one of {list(f.metadata['choices'])})" if "choices" in f.metadata else ""
            print(f"    --{section}.{f.name} (default {default!r}): {f.metadata.get('help', '')}{choices}")
    return 0


def _cmd_methods(argv: list[str]) -> int:
    return _list_plugins("method", argv)


def _cmd_tasks(argv: list[str]) -> int:
    return _list_plugins("task", argv)


def _cmd_data(argv: list[str]) -> int:
    from plmkit.core.data import BUILTIN, DATASETS, prepare_builtin

    parser = argparse.ArgumentParser(prog="plmkit data")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list builtin datasets")
    prep = sub.add_parser("prepare", help="fetch, check and cache builtin datasets")
    prep.add_argument("names", nargs="+", help="dataset names, or 'all' (the core's builtins)")
    prep.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    if args.action == "list":
        for name, spec in BUILTIN.items():
            print(f"{name:26s} {spec.description}")
        for name in DATASETS.names():
            try:
                print(f"{name:26s} {DATASETS.get(name).description}")
            except (ImportError, AttributeError) as err:  # one broken package must not hide the others
                print(f"{name:26s} cannot be loaded ({type(err).__name__}: {err})")
        return 0
    names = list(BUILTIN) if args.names == ["all"] else args.names
    for name in names:
        packaged = name not in BUILTIN and name in DATASETS.entries()
        path = DATASETS.get(name).prepare(force=args.force) if packaged else prepare_builtin(name, force=args.force)
        print(f"{name}: {path}")
    return 0


def _cmd_train(argv: list[str]) -> int:
    from plmkit.core.config import parse_experiment
    from plmkit.core.run import train

    train(parse_experiment(argv))
    return 0


def _cmd_eval(argv: list[str]) -> int:
    from plmkit.core.run import evaluate_run

    parser = argparse.ArgumentParser(prog="plmkit eval", description="evaluate a trained run")
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test", help="train, validation or test (default test)")
    args, data_flags = parser.parse_known_args(argv)
    metrics = evaluate_run(args.run_dir, args.split, data_flags)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _cmd_export(argv: list[str]) -> int:
    from plmkit.core.config import ConfigError, split_method_flags
    from plmkit.core.run import export_run

    parser = argparse.ArgumentParser(
        prog="plmkit export",
        description="export a run for plain transformers; --method.KEY VALUE changes a method option for the export",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--output_dir", required=True)
    rest, name, overrides = split_method_flags(argv)
    if name is not None:
        raise ConfigError("plmkit export uses the run's own method; only --method.KEY options can change")
    args = parser.parse_args(rest)
    print(f"exported to {export_run(args.run_dir, args.output_dir, overrides)}")
    return 0


def _cmd_tokenizer(argv: list[str]) -> int:
    from plmkit.core.tokenizers import tokenizer_command

    return tokenizer_command(argv)


COMMANDS = {"tokenizer": _cmd_tokenizer, "methods": _cmd_methods, "tasks": _cmd_tasks, "data": _cmd_data, "train": _cmd_train,
            "eval": _cmd_eval, "export": _cmd_export}
PACKAGE_COMMANDS = Registry("plmkit.commands", "command", PlmkitError)


def _command(name: str) -> Any:
    """A core command, or a package's (`plmkit upt adapt-head ...`: entry point `upt` -> a function taking argv)."""
    if name in COMMANDS:
        return COMMANDS[name]
    if name in PACKAGE_COMMANDS.entries():
        return PACKAGE_COMMANDS.get(name)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv[0]) if argv else None
    if command is None:
        print(USAGE.strip())
        extra = PACKAGE_COMMANDS.names()
        if extra:
            print(f"\npackage commands: {', '.join(extra)}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    try:
        return int(command(argv[1:]) or 0)
    except PlmkitError as err:
        # Bad input ends with one clear line (other exceptions are bugs and keep their traceback);
        # PLMKIT_DEBUG=1 shows the traceback here too.
        if os.environ.get("PLMKIT_DEBUG"):
            raise
        print(f"plmkit: error: {err}", file=sys.stderr)
        return 2
    finally:
        _end_process_group()


def _end_process_group() -> None:
    """Under torchrun, close the process group before the interpreter exits: left to interpreter teardown, gloo's
    threads can abort a finished run ('terminate called without an active exception', exit code -6)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _exit(code: int) -> None:
    """Exit with `code`. A torchrun worker (`LOCAL_RANK` set) leaves without interpreter teardown once its output is
    flushed: even with the process group closed, a gloo thread destroyed there can still abort a finished run
    (exit code -6, seen in the 2-process contract checks)."""
    if "LOCAL_RANK" in os.environ:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())

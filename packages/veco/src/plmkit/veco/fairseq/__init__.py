"""fairseq support for VECO (the optional extra `plmkit-veco[fairseq]`, fairseq-fixed 0.12.3.1).

- `plmkit.veco.fairseq.model`: model `veco` (archs `veco_small`, `veco_base`, `veco_large`) and
  `plmkit.veco.fairseq.task`: task `translation_from_pretrained_veco`, the official AliceMind/VECO NLG setup
  (`NLG/fairseq/models/veco/model.py`, `NLG/fairseq/tasks/translation_from_pretrained_veco.py`) as a `--user-dir`
  plugin for upstream fairseq: `fairseq-train --user-dir $(plmkit veco fairseq-user-dir) ...`;
- `plmkit.veco.fairseq.convert`: checkpoints both ways between `VecoForConditionalGeneration` and fairseq, and
  fairseq data-bin folders from our source<TAB>target files.

Importing this package without fairseq raises `FairseqMissingError`, one line naming the extra; the rest of
`plmkit.veco` never imports fairseq.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from plmkit.core.errors import ConfigError

__all__ = ["INSTALL", "USER_DIR", "FairseqMissingError"]

INSTALL = "pip install --no-build-isolation 'plmkit-veco[fairseq]'"
#: the folder to pass as fairseq's `--user-dir` (its module registers the model and the task)
USER_DIR = Path(__file__).parent / "user_dir" / "plmkit_veco"


class FairseqMissingError(ConfigError, ImportError):
    """fairseq is not installed: a plmkit error (the `plmkit` command prints its one line) and an ImportError."""


try:
    import fairseq  # noqa: F401
except ImportError:
    raise FairseqMissingError(f"plmkit.veco.fairseq needs fairseq, the optional extra: {INSTALL}") from None

# fairseq 0.12 checkpoints hold their legacy options as an `argparse.Namespace`, and fairseq loads them with
# `torch.load`'s default, which torch >= 2.6 made `weights_only=True`: without this, fairseq-generate cannot read
# what fairseq-train wrote. A Namespace is a plain attribute container, safe to unpickle.
torch.serialization.add_safe_globals([argparse.Namespace])

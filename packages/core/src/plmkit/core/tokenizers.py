"""Train a SentencePiece tokenizer (Kudo & Richardson, 2018) from a text corpus, for pre-training from scratch.

    plmkit tokenizer train --input corpus.txt --vocab_size 8000 --model_type unigram --special xlmr --output_dir DIR

writes a folder that `AutoTokenizer.from_pretrained(DIR)` and `load_model(..., tokenizer=DIR)` load:

- `--special xlmr`: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4 (XLM-R's first four ids; the mask follows
  them instead of closing the vocabulary), inputs `<s> A </s>` and `<s> A </s></s> B </s>`. With a unigram model the
  tokenizer class is transformers' `XLMRobertaTokenizer`, as XLM-R's own.
- `--special bert`: `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4 (BertConfig's pad id 0), inputs
  `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` with token_type_ids 0/1.
- any other combination (bpe, or the bert layout) is a `tokenizers` pipeline saved as tokenizer.json
  (`PreTrainedTokenizerFast`), built from the SentencePiece model so that it encodes as `SentencePieceProcessor`.

The special tokens are SentencePiece's own reserved pieces, so the ids of ordinary text equal SentencePiece's
`encode`. The folder also keeps `sentencepiece.model` (for tools that read SentencePiece models) and
`tokenizer_training.json` (the options, corpus line counts and thread count: a unigram model depends on the number
of threads, so the same options and threads give the same tokenizer).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AddedToken, PreTrainedTokenizerBase, PreTrainedTokenizerFast, XLMRobertaTokenizer

from plmkit.core.errors import ConfigError, DataError

__all__ = ["LAYOUTS", "SpecialLayout", "tokenizer_command", "train_tokenizer"]

MODEL_TYPES = ("unigram", "bpe")
NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
TRAINING_FILE = "tokenizer_training.json"
SENTENCEPIECE_FILE = "sentencepiece.model"


@dataclass(frozen=True)
class SpecialLayout:
    """Special tokens at ids 0-4, in SentencePiece's roles: first (bos), pad, last (eos), unk, mask (control)."""

    first: str
    pad: str
    last: str
    unk: str
    mask: str
    ids: tuple[int, int, int, int, int]  # first, pad, last, unk, mask
    pair_type_ids: bool  # the second text of a pair gets token_type_id 1 (BERT)

    def sentencepiece_options(self) -> dict[str, Any]:
        first, pad, last, unk, _ = self.ids
        return dict(bos_id=first, bos_piece=self.first, pad_id=pad, pad_piece=self.pad, eos_id=last,
                    eos_piece=self.last, unk_id=unk, unk_piece=self.unk, control_symbols=[self.mask])


LAYOUTS = {
    "xlmr": SpecialLayout("<s>", "<pad>", "</s>", "<unk>", "<mask>", (0, 1, 2, 3, 4), pair_type_ids=False),
    "bert": SpecialLayout("[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]", (2, 0, 3, 1, 4), pair_type_ids=True),
}


def _check_corpus(files: Sequence[Path]) -> list[int]:
    """Non-empty line counts; an absent, empty or non-UTF-8 file raises DataError naming it (and the line)."""
    counts = []
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: no such file")
        lines = 0
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{file}: line {number} is not UTF-8 text ({err.reason} at byte {err.start} of the line)") from err
                lines += bool(text.strip())
        if not lines:
            raise DataError(f"{file}: the corpus is empty (no line with text)")
        counts.append(lines)
    return counts


def _sentencepiece_error(err: RuntimeError, vocab_size: int, files: Sequence[Path], model_type: str) -> ConfigError:
    message = str(err)
    corpus = ", ".join(str(f) for f in files)
    too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return ConfigError(
            f"--vocab_size {vocab_size} is more than {corpus} supports for a {model_type} model (at most "
            f"{too_high.group(2)} pieces): lower --vocab_size, or train on more text"
        )
    too_low = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        return ConfigError(
            f"--vocab_size {vocab_size} is smaller than the {too_low.group(2)} characters and special tokens "
            f"{corpus} needs: raise --vocab_size, or lower --character_coverage"
        )
    return ConfigError(f"sentencepiece could not train on {corpus}: {message.splitlines()[-1] if message else err}")


def _hf_tokenizer(model: bytes, model_type: str, layout: SpecialLayout, model_max_length: int
                  ) -> PreTrainedTokenizerBase:
    """The transformers tokenizer of a trained SentencePiece model (see the module docstring)."""
    from tokenizers import processors
    from tokenizers.models import BPE, Unigram
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    with tempfile.TemporaryDirectory() as folder:  # the extractor reads a file
        path = Path(folder) / SENTENCEPIECE_FILE
        path.write_bytes(model)
        extractor = SentencePieceExtractor(str(path))
    extracted = extractor.extract(BPE if model_type == "bpe" else Unigram)
    mask = AddedToken(layout.mask, lstrip=not layout.pair_type_ids, special=True, normalized=False)
    specials = dict(bos_token=layout.first, eos_token=layout.last, cls_token=layout.first, sep_token=layout.last,
                    unk_token=layout.unk, pad_token=layout.pad, mask_token=mask, model_max_length=model_max_length)
    if model_type == "unigram" and not layout.pair_type_ids:
        return XLMRobertaTokenizer(vocab=extracted["vocab"], _spm_precompiled_charsmap=extracted["_spm_precompiled_charsmap"],
                                   **specials)
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto=extractor.proto, vocab=extracted["vocab"], legacy=True)
    first, last = layout.first, layout.last
    ids = [(first, layout.ids[0]), (last, layout.ids[2])]
    if layout.pair_type_ids:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", pair=f"{first} $A {last} $B:1 {last}:1", special_tokens=ids
        )
        names = ["input_ids", "token_type_ids", "attention_mask"]
    else:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", pair=f"{first} $A {last} {last} $B {last}", special_tokens=ids
        )
        names = ["input_ids", "attention_mask"]
    if layout.pair_type_ids:  # BERT's tokenizer has no bos/eos: [CLS]/[SEP] only
        specials.pop("bos_token")
        specials.pop("eos_token")
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=names, **specials)


def train_tokenizer(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    special: str = "xlmr",
    character_coverage: float = 0.9995,
    normalization: str = "nmt_nfkc",
    input_sentence_size: int = 0,
    num_threads: int | None = None,
    model_max_length: int = 512,
    seed: int = 0,
    overwrite: bool = False,
) -> PreTrainedTokenizerBase:
    """Train a SentencePiece `model_type` model of `vocab_size` pieces (the five special tokens included) on the
    text files `inputs` (one sentence or paragraph per line, UTF-8) and save it as a transformers tokenizer in
    `output_dir` with the `special` layout (see the module docstring). Returns the tokenizer.

    `character_coverage`: the share of the corpus's characters the vocabulary covers (rarer characters become
    the unknown token; 1.0 for small alphabets); `normalization`: SentencePiece's rule (`nmt_nfkc`, its default;
    `*_cf` also lowercases); `input_sentence_size`: train on that many randomly sampled lines (0: all);
    `num_threads`: SentencePiece's threads (default: `PLMKIT_NUM_THREADS` or the free cores).
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ConfigError(f"--model_type must be one of {list(MODEL_TYPES)}, got {model_type!r}")
    if special not in LAYOUTS:
        raise ConfigError(f"--special must be one of {list(LAYOUTS)}, got {special!r}")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"--normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    if vocab_size <= len(LAYOUTS[special].ids):
        raise ConfigError(f"--vocab_size must be more than the {len(LAYOUTS[special].ids)} special tokens, got {vocab_size}")
    if not 0.0 < character_coverage <= 1.0:
        raise ConfigError(f"--character_coverage must be in (0, 1], got {character_coverage}")
    files = [Path(f) for f in inputs]
    if not files:
        raise ConfigError("--input: give at least one corpus file")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output_dir {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--output_dir {out} is not empty; pass --overwrite to replace its tokenizer")
    lines = _check_corpus(files)
    if num_threads is None:
        from plmkit.core.training import auto_num_threads

        num_threads = auto_num_threads()
    layout = LAYOUTS[special]
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            input=[str(f) for f in files], model_writer=model, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, normalization_rule_name=normalization,
            input_sentence_size=input_sentence_size, shuffle_input_sentence=True, num_threads=num_threads,
            minloglevel=2, **layout.sentencepiece_options(),
        )
    except RuntimeError as err:
        raise _sentencepiece_error(err, vocab_size, files, model_type) from err
    tokenizer = _hf_tokenizer(model.getvalue(), model_type, layout, model_max_length)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    (out / SENTENCEPIECE_FILE).write_bytes(model.getvalue())
    record = dict(inputs=[str(f) for f in files], lines=lines, vocab_size=vocab_size, model_type=model_type,
                  special=special, character_coverage=character_coverage, normalization=normalization,
                  input_sentence_size=input_sentence_size, num_threads=num_threads, seed=seed,
                  tokenizer_class=type(tokenizer).__name__)
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return tokenizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plmkit tokenizer", description="train tokenizers for pre-training")
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="train a SentencePiece tokenizer on text files (one text per line)",
                           description=__doc__.split("\n\n")[0] if __doc__ else None)
    train.add_argument("--input", nargs="+", required=True,
                       help="UTF-8 text files, one sentence or paragraph per line (several: space or comma separated)")
    train.add_argument("--output_dir", required=True, help="folder to write the tokenizer to")
    train.add_argument("--vocab_size", type=int, default=8000, help="pieces, the special tokens included (8000)")
    train.add_argument("--model_type", choices=MODEL_TYPES, default="unigram", help="SentencePiece model (unigram)")
    train.add_argument("--special", choices=tuple(LAYOUTS), default="xlmr",
                       help="special tokens: xlmr (<s> <pad> </s> <unk> <mask>) or bert ([PAD] [UNK] [CLS] [SEP] [MASK])")
    train.add_argument("--character_coverage", type=float, default=0.9995,
                       help="share of characters covered (0.9995; 1.0 for small alphabets)")
    train.add_argument("--normalization", choices=NORMALIZATIONS, default="nmt_nfkc",
                       help="SentencePiece normalisation rule (nmt_nfkc; *_cf lowercases)")
    train.add_argument("--input_sentence_size", type=int, default=0,
                       help="train on this many randomly sampled lines (0: all)")
    train.add_argument("--num_threads", type=int, default=None,
                       help="SentencePiece threads (default: PLMKIT_NUM_THREADS or the free cores)")
    train.add_argument("--model_max_length", type=int, default=512, help="the tokenizer's model_max_length (512)")
    train.add_argument("--seed", type=int, default=0, help="SentencePiece's random seed (0)")
    train.add_argument("--overwrite", action="store_true", help="write into a non-empty --output_dir")
    return parser


def tokenizer_command(argv: list[str]) -> int:
    """`plmkit tokenizer train ...` (see `plmkit tokenizer train --help`)."""
    args = _parser().parse_args(argv)
    inputs = [part for value in args.input for part in value.split(",") if part]
    tokenizer = train_tokenizer(
        inputs, args.output_dir, vocab_size=args.vocab_size, model_type=args.model_type, special=args.special,
        character_coverage=args.character_coverage, normalization=args.normalization,
        input_sentence_size=args.input_sentence_size, num_threads=args.num_threads,
        model_max_length=args.model_max_length, seed=args.seed, overwrite=args.overwrite,
    )
    layout = LAYOUTS[args.special]
    names = (layout.first, layout.pad, layout.last, layout.unk, layout.mask)
    ids = " ".join(f"{name}={tokenizer.convert_tokens_to_ids(name)}" for name in names)
    print(f"trained a {args.model_type} tokenizer of {len(tokenizer)} tokens ({type(tokenizer).__name__}; {ids}) "
          f"on {', '.join(inputs)}: {args.output_dir}")
    return 0

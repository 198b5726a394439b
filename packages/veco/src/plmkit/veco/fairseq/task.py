"""fairseq task `translation_from_pretrained_veco`: translation with VECO's sequence layout, as the official task
(AliceMind/VECO `NLG/fairseq/tasks/translation_from_pretrained_veco.py`).

Sources are `x </s> [src]` and targets `y </s> [tgt]` (fairseq's `load_langpair_dataset(..., append_source_id=True)`);
the target language token `[tgt]` is the dataset's eos, so `prev_output_tokens` start with it, and the generator's
eos, so decoding starts with `[tgt]` and stops at it. The language tokens are entries of the dictionary
(`dict.txt`), as in the official release; `plmkit veco export-fairseq-data` writes them there.
"""

from __future__ import annotations

from typing import Any

import torch
from fairseq import utils
from fairseq.data import LanguagePairDataset
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask, load_langpair_dataset

__all__ = ["VecoTranslationTask"]


@register_task("translation_from_pretrained_veco", dataclass=TranslationConfig)
class VecoTranslationTask(TranslationTask):
    """fairseq's translation task with the language tokens appended (module docstring)."""

    def _language_index(self, lang: str) -> int:
        index = self.tgt_dict.index(f"[{lang}]")
        if index == self.tgt_dict.unk():
            raise ValueError(f"the dictionary has no language token [{lang}]: write it into dict.txt "
                             "(plmkit veco export-fairseq-data does)")
        return index

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        paths = utils.split_paths(self.cfg.data)
        if split != self.cfg.train_subset:
            paths = paths[:1]
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        for lang in (src, tgt):  # a missing language token fails here, not as <unk> ids
            self._language_index(lang)
        self.datasets[split] = load_langpair_dataset(
            paths[(epoch - 1) % len(paths)], split, src, self.src_dict, tgt, self.tgt_dict,
            combine=combine, dataset_impl=self.cfg.dataset_impl, upsample_primary=self.cfg.upsample_primary,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
            max_source_positions=self.cfg.max_source_positions, max_target_positions=self.cfg.max_target_positions,
            load_alignments=self.cfg.load_alignments, truncate_source=self.cfg.truncate_source,
            num_buckets=self.cfg.num_batch_buckets, shuffle=(split != "test"),
            pad_to_multiple=self.cfg.required_seq_len_multiple, append_source_id=True,
        )

    def build_generator(self, models: Any, args: Any, seq_gen_cls: Any = None,
                        extra_gen_cls_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """fairseq's generator (or scorer) with `[tgt]` as eos."""
        eos = self._language_index(self.cfg.target_lang)
        if getattr(args, "score_reference", False):
            from fairseq.sequence_scorer import SequenceScorer

            return SequenceScorer(self.target_dictionary, eos=eos)
        return super().build_generator(models, args, seq_gen_cls=seq_gen_cls,
                                       extra_gen_cls_kwargs={**(extra_gen_cls_kwargs or {}), "eos": eos}, **kwargs)

    def build_dataset_for_inference(self, src_tokens: list[torch.Tensor], src_lengths: list[int],
                                    constraints: Any = None) -> LanguagePairDataset:
        """`fairseq-interactive` input: `x </s>` -> `x </s> [src]`."""
        src = self.source_dictionary.index(f"[{self.cfg.source_lang}]")
        tokens = [torch.cat([t, t.new_full((1,), src)]) for t in src_tokens]
        return LanguagePairDataset(tokens, [n + 1 for n in src_lengths], self.source_dictionary,
                                   tgt_dict=self.target_dictionary, constraints=constraints)

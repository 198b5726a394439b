"""CAPT learns on a tiny model in seconds: after 30 steps of `plmkit train --method capt` (tiny-bert, the toy
corpus), the model pairs sentences it never trained on with their masked views much better than before training
(NT-Xent on held-out sentences with fresh masks), and the MLM loss falls at the same time.

Mean pooling here: the [CLS] state of a randomly initialised tiny-bert is nearly the same vector for every sentence
(its layers add little to the residual stream at init), so with `cls` the contrastive loss starts, and for a while
stays, at chance, log(2N - 1). The real MiniLM learns with `cls` (tests/test_smoke_real.py)."""

from __future__ import annotations

import json
import math

import torch

from plmkit.capt import CAPTMethod
from plmkit.core.cli import main
from plmkit.core.losses import mask_tokens, nt_xent
from plmkit.core.models import load_model
from plmkit.core.run import load_run

from .conftest import TINY

BATCH, TAU = 8, 0.1


def _held_out_batch(tokenizer, path, seed: int) -> dict[str, torch.Tensor]:
    texts = path.read_text().split("\n")
    enc = tokenizer([t for t in texts if t], padding=True, return_tensors="pt", return_token_type_ids=False)
    special = torch.isin(enc["input_ids"], torch.tensor(tokenizer.all_special_ids))
    ids, labels = mask_tokens(enc["input_ids"], enc["attention_mask"].bool() & ~special, tokenizer.mask_token_id,
                              len(tokenizer), 0.15, generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": labels}


def _held_out_loss(method: CAPTMethod, model, tokenizer, path) -> float:
    z_clean, z_corrupted = method.measure(model, [_held_out_batch(tokenizer, path, seed) for seed in range(3)])
    n = z_clean.shape[0] // 3  # NT-Xent within each batch of 16 sentences, averaged over 3 draws of masks
    return sum(nt_xent(z_clean[k * n:(k + 1) * n], z_corrupted[k * n:(k + 1) * n], TAU).item() for k in range(3)) / 3


def test_capt_learns_to_pair_held_out_sentences_with_their_masked_views(corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--task", "masked_lm", "--train_file", str(corpus["train"]), *TINY, "--output_dir", str(out),
            "--max_steps", "30", "--per_device_train_batch_size", str(BATCH), "--learning_rate", "3e-3",
            "--logging_steps", "10", "--save_strategy", "no", "--seed", "1", "--method", "capt",
            "--method.pooling", "mean", "--method.projection_size", "16", "--method.temperature", str(TAU),
            "--method.geometry_batches", "0"]
    assert main(argv) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    capt = [h["loss/capt"] for h in history if "loss/capt" in h]
    mlm = [h["loss/task"] for h in history if "loss/task" in h]
    chance = math.log(2 * BATCH - 1)  # every candidate equally likely
    assert len(capt) == 3 and capt[-1] < capt[0] and capt[-1] < 0.5 * chance, capt
    assert mlm[-1] < mlm[0], mlm

    trained, tokenizer, method, _ = load_run(out)
    untrained, _ = load_model("tiny-bert", kind="masked-lm", seed=1)
    before = CAPTMethod(pooling="mean", projection_size=16)
    before.prepare_model(untrained, None)
    trained_loss = _held_out_loss(method, trained, tokenizer, corpus["validation"])
    untrained_loss = _held_out_loss(before, untrained, tokenizer, corpus["validation"])
    assert trained_loss < 0.6 * untrained_loss, (trained_loss, untrained_loss)

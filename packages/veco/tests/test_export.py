"""Exports load in plain transformers (a fresh interpreter without plmkit) with VECO's outputs (fp32, 1e-5)."""

import json
import subprocess
import sys

import torch

from plmkit.veco.export import to_bart, to_xlmr
from plmkit.veco.modeling import (
    VecoForConditionalGeneration,
    VecoForPreTraining,
    VecoForSequenceClassification,
)
from plmkit.veco.tiny import tiny_model_config

TEXTS = ["the good film is fun", "a bad story", "who"]  # right-padded, as the tokenizer pads

_PLAIN = """
import json, sys, torch, transformers
assert not any(m.startswith("plmkit") for m in sys.modules)
out = {}
for job in json.loads(sys.stdin.read()):
    model = getattr(transformers, job["class"]).from_pretrained(job["folder"]).eval()
    batch = {k: torch.tensor(v) for k, v in job["batch"].items()}
    with torch.no_grad():
        result = model(**batch)
    value = result.logits if getattr(result, "logits", None) is not None else result.last_hidden_state
    out[job["folder"]] = value.tolist()
print(json.dumps(out))
"""


def _plain_outputs(jobs):
    """Outputs of each (folder, transformers class, batch), computed with transformers only."""
    payload = [{"folder": str(f), "class": c, "batch": {k: v.tolist() for k, v in b.items()}} for f, c, b in jobs]
    proc = subprocess.run([sys.executable, "-c", _PLAIN], input=json.dumps(payload), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return [torch.tensor(result[str(f)]) for f, _, _ in jobs]


def test_plug_out_and_nlg_exports_are_plain_xlm_r_and_bart(tmp_path, tokenizer):
    torch.manual_seed(0)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    classifier = VecoForSequenceClassification(tiny_model_config(tokenizer, num_labels=3)).eval()
    pre = VecoForPreTraining(tiny_model_config(tokenizer)).eval()
    start = tokenizer.convert_tokens_to_ids("[en]")
    nlg = VecoForConditionalGeneration.from_pretraining(pre, decoder_start_token_id=start).eval()
    nlg.generation_config.eos_token_id = start
    tokenizer.src_lang, tokenizer.tgt_lang = "de", "en"
    try:
        source = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
        labels = tokenizer(text_target=["a film", "the story is good", "who"], padding=True,
                           return_tensors="pt").input_ids
    finally:
        tokenizer.src_lang = tokenizer.tgt_lang = None
    source["decoder_input_ids"] = nlg.prepare_decoder_input_ids_from_labels(labels)
    cases = [
        ("cls", to_xlmr(classifier), "XLMRobertaForSequenceClassification", batch, lambda: classifier(**batch).logits),
        ("base", to_xlmr(pre.veco), "XLMRobertaModel", batch, lambda: pre.veco(**batch).last_hidden_state),
        ("mlm", to_xlmr(pre), "XLMRobertaForMaskedLM", batch, lambda: pre(**batch).logits),
        ("bart", to_bart(nlg), "BartForConditionalGeneration", source, lambda: nlg(**source).logits),
    ]
    for name, exported, kind, _, _ in cases:
        assert type(exported).__name__ == kind
        exported.save_pretrained(tmp_path / name)
    theirs = _plain_outputs([(tmp_path / name, kind, inputs) for name, _, kind, inputs, _ in cases])
    for (name, _, _, _, ours), plain in zip(cases, theirs, strict=True):
        with torch.no_grad():
            torch.testing.assert_close(plain, ours(), rtol=0, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    bart = cases[-1][1]
    inputs = {k: source[k] for k in ("input_ids", "attention_mask")}
    assert torch.equal(nlg.generate(**inputs, num_beams=3, max_length=10, do_sample=False),
                       bart.generate(**inputs, num_beams=3, max_length=10, do_sample=False))
    assert bart.generation_config.decoder_start_token_id == start == bart.generation_config.eos_token_id

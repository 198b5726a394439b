"""Beam-5 generation speed: our `VecoForConditionalGeneration.generate` against fairseq's `SequenceGenerator` (what
fairseq-generate runs, built by the plugin's task with `[tgt]` as eos) on the same model, converted with
`plmkit.veco.fairseq.convert.to_fairseq`. Needs the extra `plmkit-veco[fairseq]`.

Model: the reproduction's small VECO as an NLG model (4+4 layers, d=256, 4 heads, FFN 1024), random weights, a
vocabulary of 16,000 tokens plus [de] [en], fp32, CPU, one torch thread. Input: 8 sources of 20-30 random tokens
(`x </s> [de]`) in one batch; both sides decode exactly `--new_tokens` tokens per hypothesis (a random model does
not stop early, and fairseq's max length is set to the same count). Tokens/s = generated tokens of the best
hypotheses / wall seconds of the call. The two are interleaved, each repeated; the ratio of the medians is
reported. Target: ours >= 0.8x fairseq's.

    PLMKIT_NUM_THREADS=1 python packages/veco/benchmarks/perf_generate.py
        ->  packages/veco/benchmarks/results/veco_generate_perf.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "veco_generate_perf.json"
SHAPE = dict(hidden_size=256, num_hidden_layers=4, decoder_layers=4, num_attention_heads=4, intermediate_size=1024)
VOCAB = 16000
TARGET = 0.8


def build_tokenizer():
    """A VecoTokenizer with VOCAB pieces (XLM-R's specials at 0-4) and the language tokens [de], [en]."""
    from plmkit.veco.tokenization import VecoTokenizer, add_language_tokens

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [(f"\u2581w{i}", -float(i)) for i in range(VOCAB - len(vocab))]
    tokenizer = VecoTokenizer(vocab=vocab)
    add_language_tokens(tokenizer, ["de", "en"])
    tokenizer.src_lang, tokenizer.tgt_lang = "de", "en"
    return tokenizer


def build(folder: Path):
    from plmkit.veco.configuration import VecoConfig
    from plmkit.veco.fairseq.convert import load_fairseq, to_fairseq
    from plmkit.veco.modeling import VecoForConditionalGeneration

    tokenizer = build_tokenizer()
    start = tokenizer.language_id("en")
    torch.manual_seed(0)
    config = VecoConfig(vocab_size=len(tokenizer), is_encoder_decoder=True, decoder_start_token_id=start, **SHAPE)
    ours = VecoForConditionalGeneration(config).eval()
    ours.generation_config.decoder_start_token_id = ours.generation_config.eos_token_id = start
    ours.generation_config.pad_token_id = tokenizer.pad_token_id
    fairseq_model, task = load_fairseq(to_fairseq(ours, tokenizer, folder))
    return tokenizer, ours, fairseq_model, task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PLMKIT_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, ours, fairseq_model, task = build(Path(tmp))
    generator = task.build_generator([fairseq_model], argparse.Namespace(
        beam=5, max_len_a=0, max_len_b=args.new_tokens, min_len=args.new_tokens))
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(20, 31, (args.batch,), generator=g).tolist()
    # sources: random pieces + `</s> [de]` (our tokenizer's layout and the task's)
    sources = [torch.cat([torch.randint(5, VOCAB, (n,), generator=g),
                          torch.tensor([tokenizer.eos_token_id, tokenizer.language_id("de")])]) for n in lengths]
    dataset = task.build_dataset_for_inference([s[:-1] for s in sources], [len(s) - 1 for s in sources])
    sample = dataset.collater([dataset[i] for i in range(len(sources))])  # left-padded, as fairseq-generate's
    ids = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True, padding_value=tokenizer.pad_token_id)
    inputs = dict(input_ids=ids, attention_mask=ids.ne(tokenizer.pad_token_id).long())
    settings = dict(num_beams=5, do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                    length_penalty=1.0)

    def run_ours() -> tuple[int, torch.Tensor]:
        with torch.no_grad():
            out = ours.generate(**inputs, **settings)[:, 1:]  # drop the start token
        return int(out.ne(tokenizer.pad_token_id).sum()), out

    def run_fairseq() -> tuple[int, list[torch.Tensor]]:
        hypotheses = task.inference_step(generator, [fairseq_model], sample)
        best = [h[0]["tokens"] for h in hypotheses]
        return sum(len(t) for t in best), best

    def timed(fn) -> tuple[float, object]:
        wall = time.perf_counter()
        tokens, out = fn()
        return tokens / (time.perf_counter() - wall), (tokens, out)

    for fn in (run_ours, run_fairseq):  # warm-up
        fn()
    speeds: dict[str, list[float]] = {"ours": [], "fairseq": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("fairseq", run_fairseq)):
            speed, outputs[name] = timed(fn)
            speeds[name].append(speed)
    # a sanity check that both decode the same model: fairseq's batch is sorted by length (`id`), and its best
    # hypotheses end with the forced eos
    fairseq_best = dict(zip(sample["id"].tolist(), outputs["fairseq"][1], strict=True))
    same = sum(outputs["ours"][1][i].tolist() == fairseq_best[i][:-1].tolist() for i in range(len(sources)))
    median = {k: statistics.median(v) for k, v in speeds.items()}
    result = {
        "setup": f"VECO NLG {SHAPE['num_hidden_layers']}+{SHAPE['decoder_layers']} layers, d={SHAPE['hidden_size']}, "
                 f"vocabulary {len(tokenizer)}, random weights; {args.batch} sources of 20-30 tokens, beam 5, "
                 f"{args.new_tokens} new tokens each; fp32, CPU, {torch.get_num_threads()} thread(s); median of "
                 f"{args.repeats} interleaved calls",
        "ours_tokens_per_s": median["ours"], "fairseq_tokens_per_s": median["fairseq"],
        "ratio": median["ours"] / median["fairseq"], "target_ratio": TARGET,
        "tokens_per_call": {"ours": outputs["ours"][0], "fairseq": outputs["fairseq"][0]},
        "same_best_hypothesis": f"{same}/{len(sources)}",
        "all_tokens_per_s": speeds, "load_average": os.getloadavg()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

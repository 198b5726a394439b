"""`plmkit train` with the image_text / image_text_classification tasks and the semvlp method; `plmkit vlp`; retrieval."""

import json

import pytest
import torch

from plmkit.core.cli import main
from plmkit.core.run import load_run
from plmkit.vlp.retrieval import score_matching
from plmkit.vlp.testing import data_flags, tiny_config, tiny_folder, write_image_text

COMMON = ["--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--per_device_train_batch_size", "6",
          "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "2", "--seed", "1"]


def _train(tmp_path, model, *flags, steps=4, data=None):
    out = tmp_path / "run"
    data = data or data_flags(write_image_text(tmp_path / "data"))
    code = main(["train", "--model_name_or_path", str(model), *data, "--output_dir", str(out), "--max_steps", str(steps),
                 *COMMON, *flags])
    assert code == 0
    return out, json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("schedule,single,two", [("alternate", 2, 2), ("single", 4, 0), ("two", 0, 4)])
def test_semvlp_pretraining_logs_every_term_and_follows_the_schedule(tiny_model_dir, tmp_path, schedule, single, two):
    out, metrics = _train(tmp_path, tiny_model_dir, "--task", "image_text", "--method", "semvlp",
                          "--method.mode_schedule", schedule, "--task.eval_modes", "single,two")
    assert (metrics["semvlp_single_stream_micro_batches"], metrics["semvlp_two_stream_micro_batches"]) == (single, two)
    for key in ("test_loss", "test_accuracy", "test_itm_single_t2i_r1", "test_itm_two_i2t_r10", "test_emb_t2i_r5",
                "eval_itm_single_t2i_r1"):
        assert key in metrics and 0 <= metrics[key] <= max(1.0, metrics[key])
    assert metrics["test_retrieval_images"] == 6
    assert metrics["semvlp_codebook_size"] == 8
    if schedule == "alternate":
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        logged = {k for h in history for k in h if k.startswith("loss/")}
        assert logged == {"loss/task", "loss/mlm", "loss/visual_regression", "loss/visual_codebook"}
        a, _, _, _ = load_run(out)
        b, processor, _, _ = load_run(out)
        batch = dict(processor(["a red dot"], return_tensors="pt"))
        px = torch.randn(1, 3, 64, 64)
        for mode in ("single", "two"):
            with torch.no_grad():
                assert torch.equal(a(**batch, pixel_values=px, mode=mode).logits,
                                   b(**batch, pixel_values=px, mode=mode).logits)


def test_finetune_trains_the_matching_loss_only_and_a_model_type_builds(tmp_path):
    config = json.dumps({**{k: v for k, v in tiny_config().to_dict().items()
                            if k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                     "timm_model_name", "image_size", "codebook_size", "cross_attention_layers")}})
    out, metrics = _train(tmp_path, "semvlp", "--model_config", config, "--tokenizer_name_or_path", "tiny-bert",
                          "--task", "image_text", "--task.mode", "two")
    assert "test_itm_two_t2i_r1" in metrics and "semvlp_codebook_size" not in metrics
    model, _, _, _ = load_run(out)
    assert model.config.default_mode == "two" and model.config.hidden_size == 32


def test_classification_in_two_stream_mode_from_a_pretrained_folder(tiny_model_dir, tmp_path):
    _, metrics = _train(tmp_path, tiny_model_dir, "--task", "image_text_classification", "--task.mode", "two", steps=6)
    assert 0 <= metrics["test_accuracy"] <= 1 and "test_macro_f1" in metrics


def test_qa_term_when_the_data_has_answers(tiny_model_dir, tmp_path):
    paths = write_image_text(tmp_path / "data")
    for path in paths.values():  # questions about the colour, answered for half the rows
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for i, row in enumerate(rows):
            if i % 2 == 0:
                row["text"], row["answer"] = f"what colour is the {row['text'].split()[2]}?", row["text"].split()[1]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, metrics = _train(tmp_path, tiny_model_dir, "--task", "image_text", "--method", "semvlp", data=data_flags(paths))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("loss/qa" in h for h in history)
    assert load_run(out)[0].config.num_answers >= 2


def test_bad_input_is_one_line(tmp_path, capsys):
    paths = write_image_text(tmp_path / "data")
    code = main(["train", "--model_name_or_path", "tiny-bert", *data_flags(paths), "--output_dir", str(tmp_path / "a"),
                 "--task", "image_text", *COMMON])
    assert code == 2 and "needs a SemVLP model" in capsys.readouterr().err
    (tmp_path / "data" / "img" / "grey_dot.png").unlink()
    folder = tiny_folder(tmp_path / "m")
    capsys.readouterr()
    code = main(["train", "--model_name_or_path", str(folder), *data_flags(paths), "--output_dir", str(tmp_path / "b"),
                 "--task", "image_text", *COMMON])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].endswith("grey_dot.png does not exist")


def test_vlp_init_and_retrieve_commands(tmp_path, capsys):
    folder = tmp_path / "init"
    assert main(["vlp", "init", "--output_dir", str(folder), "--text", "tiny-bert", "--timm", "test_vit", "--image_size",
                 "32", "--set", "cross_attention_layers=1", "region_grid=1", "codebook_size=4"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["timm_model_name"] == "test_vit" and (folder / "plmkit_processor.json").exists()
    out, _ = _train(tmp_path, folder, "--task", "image_text", "--method", "semvlp", steps=2)
    capsys.readouterr()
    assert main(["vlp", "retrieve", str(out), "--query", "a red square", "--top", "3", "--mode", "two"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 3 and all(r["image"].endswith(".png") for r in found)
    # the pre-training run folder is a model folder: fine-tune a two-stream classifier from it
    cls_dir = tmp_path / "cls"
    cls_dir.mkdir()
    _, metrics = _train(cls_dir, out, "--task", "image_text_classification", "--task.mode", "two", steps=2)
    classifier, _, _, _ = load_run(cls_dir / "run")
    assert 0 <= metrics["test_accuracy"] <= 1 and classifier.config.num_labels == 3
    pretrained = load_run(out)[0].semvlp.state_dict()
    tuned = classifier.semvlp.state_dict()
    assert classifier.config.timm_model_name == "test_vit" and set(tuned) == set(pretrained)
    drift = max(float((tuned[k] - pretrained[k]).abs().max()) for k in tuned if tuned[k].is_floating_point())
    assert 0 < drift < 0.05  # 2 AdamW steps at lr 1e-3 from the pre-trained weights (a fresh init would be far)


@pytest.mark.parametrize("mode", ["single", "two"])
def test_retrieval_scores_equal_the_full_pair_forward(mode):
    from plmkit.vlp import SemVLPForPreTraining

    torch.manual_seed(0)
    model = SemVLPForPreTraining(tiny_config(num_hidden_layers=3, cross_attention_layers=1)).eval()
    ids = torch.randint(5, 100, (5, 7))
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 5:] = 0
    px = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        grids = model.semvlp.image_features(px)
        scores = score_matching(model, {"input_ids": ids, "attention_mask": mask}, grids, mode, pair_batch=6)
        for t in range(5):
            for i in range(4):
                logits = model(input_ids=ids[t : t + 1], attention_mask=mask[t : t + 1], pixel_values=px[i : i + 1],
                               mode=mode).logits[0]
                assert abs(float(logits[1] - logits[0]) - float(scores[t, i])) < 1e-4


@pytest.mark.slow
def test_init_from_minilm_pretrains_with_every_term(tmp_path, capsys):
    """The default `plmkit vlp init` (MiniLM's trunk, a random resnet18) and a short SemVLP pre-training run."""
    from plmkit.core.models import load_model

    folder = tmp_path / "init"
    assert main(["vlp", "init", "--output_dir", str(folder), "--set", "codebook_size=8"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["timm_model_name"] == "resnet18" and info["visual_feature_dim"] == 512
    model, tokenizer = load_model(str(folder), kind="masked-lm")  # the folder loads as any model folder does
    bert, _ = load_model("minilm", kind="base")
    batch = tokenizer(["dog face", "thumbs up sign: +1, thumbsup"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = model.eval().semvlp(**batch), bert.eval()(**batch)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.last_hidden_state[valid], theirs.last_hidden_state[valid], atol=1e-4, rtol=0)
    out, metrics = _train(tmp_path, folder, "--task", "image_text", "--method", "semvlp", "--max_length", "16",
                          steps=2)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = {k for h in history for k in h if k.startswith("loss/")}
    assert logged == {"loss/task", "loss/mlm", "loss/visual_regression", "loss/visual_codebook"}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history if "loss" in h)
    assert 0 <= metrics["test_itm_single_t2i_r1"] <= 1



@pytest.mark.slow
def test_matching_learns_a_toy_set(tiny_model_dir, tmp_path):
    """Image-text matching alone (`--task image_text`, no method) on 4 pairs that differ in colour or shape only, from
    the tiny random model: after 600 steps the matching head ranks every image's own caption first (single-stream
    retrieval over the training pairs). Chance R@1 is 0.25."""
    from plmkit.vlp.testing import draw

    (tmp_path / "img").mkdir()
    rows = []
    for color in ("red", "blue"):
        for shape in ("square", "bar"):
            draw(color, shape).save(tmp_path / "img" / f"{color}_{shape}.png")
            rows.append({"image": f"img/{color}_{shape}.png", "text": f"a {color} {shape}"})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = str(tmp_path / "pairs.jsonl")
    out, metrics = _train(tmp_path, tiny_model_dir, "--task", "image_text", "--per_device_train_batch_size", "4",
                          "--logging_steps", "50", steps=600, data=["--train_file", pairs, "--test_file", pairs])
    assert metrics["test_itm_single_t2i_r1"] == 1.0 and metrics["test_itm_single_i2t_r1"] == 1.0
    losses = [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert losses[0] > 0.68 and losses[-1] < 0.1

"""The vision-language variant: capt on the image_text task (a tiny SemVLP model from plmkit-vlp, which the method
itself never imports), x~ = masked caption tokens and zeroed image-token features."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from plmkit.capt import PROJECTION, CAPTMethod
from plmkit.core.cli import main
from plmkit.core.losses import pool

vlp_testing = pytest.importorskip("plmkit.vlp.testing")


@pytest.fixture(scope="module")
def semvlp(tmp_path_factory):
    from plmkit.core.models import load_model

    folder = vlp_testing.tiny_folder(tmp_path_factory.mktemp("semvlp") / "model")
    model, processor = load_model(str(folder), kind="masked-lm")
    return folder, model, processor


def _batch(processor, captions: list[str], ids: list[int]) -> dict[str, torch.Tensor]:
    enc = dict(processor(captions, padding=True, return_tensors="pt"))
    pixels = torch.randn(len(captions), 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return {**enc, "pixel_values": pixels, "example_id": torch.tensor(ids), "itm_labels": torch.ones(len(ids)).long()}


def _ctx(model, processor, step: int = 3):
    return SimpleNamespace(model=model, processor=processor, args=SimpleNamespace(seed=7), global_step=step)


def test_masks_belong_to_the_example_and_never_touch_special_tokens(semvlp):
    _, model, processor = semvlp
    method = CAPTMethod(projection_size=8, mlm_probability=0.5, visual_mask_probability=0.5)
    method.prepare_model(model, None)
    captions = ["a red square on a big grey bar", "a blue dot", "a grey bar and a pink dot"]
    batch = _batch(processor, captions, [4, 9, 11])
    x = method.corrupt(batch, _ctx(model, processor), 3)
    n_image = method.image_tokens(batch["pixel_values"])
    assert n_image == model.semvlp(pixel_values=batch["pixel_values"][:1])[0].shape[1]
    assert x["visual_mask"].shape == (3, n_image) and x["visual_mask"].any()
    chosen = x["mlm_targets"] != -100
    assert chosen.any()
    tokenizer = processor.tokenizer
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & (special | ~batch["attention_mask"].bool())).any()
    assert torch.equal(x["mlm_targets"][chosen], batch["input_ids"][chosen])
    assert torch.equal(x["input_ids"][~chosen], batch["input_ids"][~chosen])
    # the same example alone in a batch (so with no padding) gets the same masks; another step gets others
    for row in range(3):
        alone = method.corrupt(_batch(processor, captions[row : row + 1], [[4, 9, 11][row]]), _ctx(model, processor), 3)
        length = int(batch["attention_mask"][row].sum())
        assert alone["input_ids"].shape[1] == length
        assert torch.equal(alone["input_ids"][0], x["input_ids"][row, :length])
        assert torch.equal(alone["mlm_targets"][0], x["mlm_targets"][row, :length])
        assert torch.equal(alone["visual_mask"][0], x["visual_mask"][row])
    later = method.corrupt(batch, _ctx(model, processor), 4)
    assert not torch.equal(later["visual_mask"], x["visual_mask"])


def test_the_hook_encodes_the_clean_pair_and_the_task_forward_is_that_of_x_corrupted(semvlp):
    _, model, processor = semvlp
    method = CAPTMethod(projection_size=8, pooling="mean", mlm_probability=0.4, visual_mask_probability=0.5)
    method.prepare_model(model, None)
    model.train()
    batch = _batch(processor, ["a red square", "a blue dot and a bar", "a grey bar"], [0, 1, 2])
    armed = method.prepare_batch(dict(batch), _ctx(model, processor))
    assert set(armed) >= {"mlm_targets", "visual_mask"}
    inputs = {k: v for k, v in armed.items() if k != "example_id"}
    out = model(**inputs)
    z_clean, z_corrupted = method._views
    terms = method.loss_terms(model, armed, out, None)
    assert set(terms) == {"mlm", "capt"} and torch.equal(terms["mlm"], out.mlm_loss)
    with torch.no_grad():
        plain = model(**inputs)  # not armed: the hook does nothing
        torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=0)
        head, mask = getattr(model, PROJECTION), batch["attention_mask"]

        def z(ids, visual_mask=None):
            hidden = model.semvlp(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                                  visual_mask=visual_mask)[0]
            full = torch.cat([mask, mask.new_ones(mask.shape[0], hidden.shape[1] - mask.shape[1])], dim=1)
            return head(pool(hidden, full, "mean"))

        torch.testing.assert_close(z_clean, z(batch["input_ids"]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z_corrupted, z(armed["input_ids"], armed["visual_mask"]), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(z_clean, z_corrupted)
    model.eval()
    assert method.prepare_batch(dict(batch), _ctx(model, processor)) == batch  # evaluation batches stay clean


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_plmkit_train_runs_capt_on_image_text(semvlp, tmp_path, weight):
    """`plmkit train --task image_text --method capt`: the task's matching loss, the model's MLM loss on the masked
    captions and the CAPT term are logged, the geometry of z reported; weight 0 is the no-CAPT baseline."""
    folder, _, _ = semvlp
    data = vlp_testing.write_image_text(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--task", "image_text", "--model_name_or_path", str(folder), *vlp_testing.data_flags(data),
            "--method", "capt", "--method.capt_weight", str(weight), "--method.pooling", "mean",
            "--method.geometry_batches", "1", "--max_steps", "6", "--per_device_train_batch_size", "4",
            "--logging_steps", "3", "--learning_rate", "1e-3", "--report_to", "none", "--disable_tqdm", "true",
            "--num_threads", "1", "--output_dir", str(out)]
    assert main(argv) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "loss/capt" in h]
    assert len(logged) == 2 and all(h["loss/mlm"] > 0 and h["loss/task"] > 0 for h in logged)
    if weight:
        assert all(0 < h["loss/capt"] < 10 for h in logged)
    else:
        assert all(h["loss/capt"] == 0 for h in logged)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["capt_alignment"] <= 4 and "test_itm_single_t2i_r1" in metrics

import pytest
import torch

from plmkit.core.testing import tiny_model
from plmkit.core.training import MethodError
from plmkit.prompt_tuning.templates import (
    MASK,
    PROMPT_BASE,
    TEXT,
    apply_template,
    compile_template,
    parse_template,
)

CLS, SEP, MSK, PAD = 2, 3, 4, 0


def _apply(ids, template, max_length=64, mask=None):
    return apply_template(torch.tensor(ids), mask, template, cls_id=CLS, sep_id=SEP, mask_id=MSK, pad_id=PAD,
                          max_length=max_length)


def test_compile_counts_and_places_prompt_tokens():
    _, tok = tiny_model("bert")
    assert compile_template("{text} {prompt} {mask}", 3, tok) == [TEXT, PROMPT_BASE, PROMPT_BASE - 1, PROMPT_BASE - 2, MASK]
    assert compile_template("{prompt} {text} {mask}", 2, tok) == [PROMPT_BASE, PROMPT_BASE - 1, TEXT, MASK]
    # Two {prompt}s get different trainable tokens.
    assert compile_template("{prompt} {text} {prompt} {mask}", 1, tok) == [PROMPT_BASE, TEXT, PROMPT_BASE - 1, MASK]
    literal = compile_template("{text} it was {mask} .", 0, tok)
    assert literal[0] == TEXT and literal[-2] == MASK and literal[1:-2] == tok(" it was", add_special_tokens=False)["input_ids"]


def test_apply_builds_cls_text_prompts_mask_sep():
    template = [TEXT, PROMPT_BASE, PROMPT_BASE - 1, MASK]
    batch = _apply([[CLS, 10, 11, 12, SEP], [CLS, 13, SEP, PAD, PAD]], template, mask=torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]))
    assert batch.input_ids[0].tolist() == [CLS, 10, 11, 12, PAD, PAD, MSK, SEP]
    assert batch.input_ids[1].tolist() == [CLS, 13, PAD, PAD, MSK, SEP, PAD, PAD]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert batch.prompt_index[0].tolist() == [-1, -1, -1, -1, 0, 1, -1, -1]
    assert batch.mask_positions.tolist() == [6, 4]
    assert batch.text_mask[0].tolist() == [False, True, True, True, False, False, False, False]


def test_prompt_position_is_configurable():
    batch = _apply([[CLS, 10, 11, SEP]], [PROMPT_BASE, MASK, TEXT])
    assert batch.input_ids[0].tolist() == [CLS, PAD, MSK, 10, 11, SEP]
    assert batch.prompt_index[0].tolist() == [-1, 0, -1, -1, -1, -1] and batch.mask_positions.tolist() == [2]


def test_truncation_cuts_text_and_keeps_mask_and_prompts():
    template = [TEXT, PROMPT_BASE, PROMPT_BASE - 1, MASK]
    batch = _apply([[CLS] + list(range(10, 40)) + [SEP]], template, max_length=10)
    row = batch.input_ids[0].tolist()
    assert len(row) == 10 and row == [CLS, 10, 11, 12, 13, 14, PAD, PAD, MSK, SEP]
    assert row[batch.mask_positions[0]] == MSK and (batch.prompt_index[0] >= 0).sum() == 2


def test_pairs_and_longest_first_truncation():
    template = [-2, MASK, -3]  # {text_a} {mask} {text_b}
    batch = _apply([[CLS, 10, 11, 12, 13, 14, 15, SEP, 20, 21, SEP]], template, max_length=8)
    assert batch.input_ids[0].tolist() == [CLS, 10, 11, 12, MSK, 20, 21, SEP]


def test_inputs_without_special_tokens_are_refused():
    with pytest.raises(MethodError, match="special tokens"):
        _apply([[10, 11, 12]], [TEXT, MASK])


def test_template_leaving_no_room_is_refused():
    with pytest.raises(MethodError, match="no room"):
        _apply([[CLS, 10, SEP]], [TEXT] + [PROMPT_BASE - i for i in range(8)] + [MASK], max_length=8)


@pytest.mark.parametrize(
    ("template", "n", "message"),
    [
        ("{text} {prompt}", 2, "exactly one {mask}"),
        ("{text} {mask} {mask}", 0, "exactly one {mask}"),
        ("{prompt} {mask}", 2, "no {text}"),
        ("{text} {mask}", 3, "no {prompt}"),
        ("{text} {prompt} {mask}", 0, "num_prompt_tokens is 0"),
        ("{text} {label} {mask}", 0, "unknown placeholder"),
        ("{text} {text_b} {mask}", 0, "either {text} or"),
    ],
)
def test_bad_templates_are_explained(template, n, message):
    with pytest.raises(MethodError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_template(template, n)

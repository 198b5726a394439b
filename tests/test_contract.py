"""The contract kit (plmkit.core.testing.contract) on every installed method."""

import pytest
import torch

from plmkit.core.testing.contract import (
    ContractCase,
    check_ddp,
    check_default_learns,
    check_export,
    check_half_precision_checkpoint,
    check_resume,
    check_save_reload,
    contract_cases,
    ddp_applies,
)

CASES = contract_cases()
IDS = [case.id for case in CASES]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_reload_and_export(case, tmp_path):
    run = check_save_reload(case, tmp_path)
    check_export(case, run, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_resume_equals_an_uninterrupted_run(case, tmp_path):
    check_resume(case, tmp_path)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_half_precision_checkpoints_train(case, dtype, tmp_path):
    check_half_precision_checkpoint(case, tmp_path, dtype)


@pytest.mark.ddp
@pytest.mark.parametrize("case", [c for c in CASES if c.extra_passes], ids=[c.id for c in CASES if c.extra_passes])
def test_two_processes_match_one(case, tmp_path):
    if not ddp_applies(case):
        pytest.skip(f"task {case.task}: each process draws its own training masks, so 2 processes cannot match 1")
    check_ddp(case, tmp_path)


METHODS = sorted({case.method for case in CASES if case.task == "classification" and case.trec_defaults})


@pytest.mark.slow
@pytest.mark.defaults
@pytest.mark.parametrize("method", METHODS)
def test_default_options_learn_trec(method, tmp_path):
    check_default_learns(next(c for c in CASES if c.method == method), tmp_path)


def test_an_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"does not know task 'no_such_task'; it runs classification, masked_lm"):
        check_resume(ContractCase("finetune", task="no_such_task"), tmp_path)


def test_a_case_on_a_task_that_is_not_installed_is_left_out(monkeypatch):
    """A method that also runs on another package's task (capt on image_text) keeps its other cases when that
    package is absent."""
    from plmkit.core.training import METHODS

    capt = METHODS.get("capt")
    monkeypatch.setattr(capt, "contract", [*capt.contract, ContractCase("capt", {"pooling": "mean"}, task="no_such_task")])
    cases = [c for c in contract_cases() if c.method == "capt"]
    assert {c.task for c in cases} == {"masked_lm", "image_text"}

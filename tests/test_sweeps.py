"""The resumable sweep helper (tools/bench/sweep.py), the two sweeps built on it (CP-Tuning / UPT-Single on trec,
Child-Tuning_D) end to end in their --smoke form, and their README blocks."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from plmkit.core.testing import load_script

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from sweep import SweepError, logged_curve, logged_losses, plmkit_train, run_sweep  # noqa: E402

CP_SWEEP = ROOT / "packages" / "prompt_tuning" / "benchmarks" / "sweep_trec.py"
CT_SWEEP = ROOT / "packages" / "child_tuning" / "benchmarks" / "sweep.py"
CP_RENDER = ROOT / "packages" / "prompt_tuning" / "benchmarks" / "cp_tuning_render_table.py"
CT_RENDER = ROOT / "packages" / "child_tuning" / "benchmarks" / "render_table.py"


def test_logged_curve_keeps_the_entries_with_the_first_key(tmp_path):
    history = [{"step": 1, "loss": 0.71234, "loss/task": 0.69, "learning_rate": 1e-4}, {"step": 1, "eval_loss": 0.6},
               {"step": 2, "loss": 0.5, "grad_norm": 1.0}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert logged_curve(tmp_path, ("loss", "loss/task")) == [{"step": 1, "loss": 0.71234, "loss/task": 0.69},
                                                             {"step": 2, "loss": 0.5}]
    assert logged_curve(tmp_path, ("loss/task", "loss"), digits=2) == [{"step": 1, "loss/task": 0.69, "loss": 0.71}]
    assert logged_losses(tmp_path) == {"first": 0.71234, "last": 0.5}
    assert logged_curve(tmp_path, ("loss/capt",)) == []


def _key(r: dict) -> tuple:
    return r["lr"], r["seed"]


def test_run_sweep_records_each_job_and_resumes(tmp_path):
    path = tmp_path / "sweep.json"
    jobs = [{"lr": lr, "seed": s} for lr in (1e-4, 2e-4) for s in (1, 2, 3)]
    calls: list[tuple] = []
    lock = threading.Lock()

    def run_one(job: dict, fail: tuple | None = None) -> dict:
        with lock:
            calls.append(_key(job))
        if _key(job) == fail:
            raise RuntimeError("boom")
        return {"acc": job["seed"] / 10}

    with pytest.raises(SweepError, match=r"(?s)1 job\(s\) failed.*0.0002, 2\).*boom"):
        run_sweep(path, jobs, lambda j: run_one(j, fail=(2e-4, 2)), _key, parallel=2, settings={"model": "x"})
    data = json.loads(path.read_text())
    assert sorted(calls) == sorted(map(_key, jobs))
    assert len(data["runs"]) == 5 and (2e-4, 2) not in {_key(r) for r in data["runs"]}
    assert data["settings"] == {"model": "x"} and data["runs"][0]["acc"] == data["runs"][0]["seed"] / 10

    calls.clear()  # a rerun runs only the failed job; the settings stay when none are given
    data = run_sweep(path, jobs, run_one, _key, parallel=2)
    assert calls == [(2e-4, 2)] and len(data["runs"]) == 6 and data["settings"] == {"model": "x"}
    calls.clear()
    assert len(run_sweep(path, jobs, run_one, _key)["runs"]) == 6 and calls == []
    assert json.loads(path.read_text()) == data


def test_plmkit_train_raises_with_the_log_tail(tmp_path):
    with pytest.raises(SweepError, match="plmkit: error"):
        plmkit_train(["--method", "no_such_method", "--model_name_or_path", "tiny-bert"], tmp_path / "run")


@pytest.mark.parametrize("script", [CP_RENDER, CT_RENDER], ids=["cp_tuning", "child_tuning"])
def test_render_scripts_pass_check(script):
    result = subprocess.run([sys.executable, str(script), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_sweep_blocks_say_not_run_yet_without_their_json(tmp_path):
    assert "Not run yet" in load_script(CP_RENDER).render_sweep(tmp_path / "none.json")
    assert "Not run yet" in load_script(CT_RENDER).render_sweep(tmp_path / "none.json")


def _smoke(script: Path, tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / "sweep.json"
    argv = [sys.executable, str(script), "--smoke", "--parallel", "2", "--json", str(out), "--work", str(tmp_path)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(out.read_text()), out


@pytest.mark.slow
def test_cp_tuning_sweep_smoke(tmp_path):
    data, out = _smoke(CP_SWEEP, tmp_path)
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == {"cp_tuning", "finetune", "upt"} and data["settings"]["model"] == "tiny-bert"
    for r in runs.values():
        assert 0 <= r["test_accuracy"] <= 1 and r["cpu_s"] > 0 and (r["batch"], r["steps"], r["seed"]) == (8, 8, 13)
    cp = runs["cp_tuning"]
    assert 0 <= cp["test_accuracy_centroid"] <= 1 and 0 <= cp["eval_accuracy_centroid"] <= 1 and cp["layout"] == "4 x 2"
    table = load_script(CP_RENDER).render_sweep(out)
    assert "CP-Tuning, class centroid" in table and "UPT-Single" in table and "1 seed: no verdict" in table
    again = subprocess.run([sys.executable, str(CP_SWEEP), "--smoke", "--json", str(out)], cwd=ROOT,
                           capture_output=True, text=True)  # resumes: nothing left to run
    assert again.returncode == 0 and "3 of 3 jobs already done, 0 to run" in again.stdout


@pytest.mark.slow
def test_child_tuning_sweep_smoke(tmp_path):
    data, out = _smoke(CT_SWEEP, tmp_path)
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == {"vanilla", "CT-D"} and runs["CT-D"]["reserve_p"] == 0.3
    for r in runs.values():
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["val_accuracy"] <= 1 and r["task"] == "trec"
    table = load_script(CT_RENDER).render_sweep(out)
    assert "CT-D (p=0.3)" in table and "no verdict yet" in table


def test_cp_sweep_pairs_runs_within_one_precision(tmp_path):
    """Runs recorded without a precision are bf16; an fp32 configuration is labelled and compared with fine-tuning
    in fp32 only (a bf16 fine-tuning run of the same batch, steps and lr is not its baseline)."""
    runs = []
    for seed, shift in ((13, 0.0), (21, 0.1), (42, 0.2)):
        for precision in (None, "fp32"):
            for method, acc in (("finetune", 0.5), ("cp_tuning", 0.6 if precision else 0.4)):
                r = {"method": method, "batch": 48, "steps": 150, "lr": 2e-4, "mlm_weight": 0.0 if method == "cp_tuning"
                     else None, "seed": seed, "test_accuracy": acc + shift, "eval_accuracy": acc, "cpu_s": 10.0}
                if method == "cp_tuning":
                    r.update(test_accuracy_centroid=acc + shift, eval_accuracy_centroid=acc)
                runs.append(r if precision is None else {**r, "precision": precision,
                                                         "test_accuracy": r["test_accuracy"] + 0.3 * (method == "finetune")})
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"settings": {"model": "m", "k": 16, "max_length": 64, "test_examples": 538,
                                             "selection": "last step", "upt_start": "m"}, "runs": runs}))
    table = load_script(CP_RENDER).render_sweep(path)
    assert "bf16 autocast unless a configuration says fp32" in table
    lines = [line for line in table.splitlines() if line.startswith("| CP-Tuning, nearest anchor")]
    bf16, fp32 = (next(line for line in lines if ("fp32" in line) == want) for want in (False, True))
    assert "-10.0 +- 0.0 (3 seeds): contradicted" in bf16  # 0.4 against bf16 fine-tuning's 0.5
    assert "MLM 0, fp32" in fp32 and "-20.0 +- 0.0 (3 seeds): contradicted" in fp32  # 0.6 against fp32's 0.8


def test_child_tuning_sweep_flags_and_rows_follow_the_precision(tmp_path):
    sweep = load_script(CT_SWEEP)
    assert "--bf16" not in sweep.common_flags("m", 1e-4, 3, "fp32")
    bf16 = sweep.common_flags("m", 1e-4, 3, "bf16")
    assert bf16[bf16.index("--bf16") + 1] == "true"
    runs = [{"task": "trec", "method": method, "reserve_p": p, "lr": 2e-4, "epochs": 3, "seed": seed,
             "test_accuracy": acc + 0.01 * seed, "val_accuracy": acc, "cpu_s": 1.0, **extra}
            for seed in (1, 2, 3)
            for extra, shift in (({}, 0.0), ({"precision": "fp32"}, 0.1))
            for method, p, acc in (("vanilla", None, 0.5 + shift), ("CT-D", 0.3, 0.55))]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"settings": {"model": "m", "n_train": 1000, "eval": "full"}, "runs": runs}))
    table = load_script(CT_RENDER).render_sweep(path)
    assert "bf16 autocast unless a row says fp32" in table
    assert "| trec | CT-D (p=0.3), fp32 |" in table and "-5.0 +- 0.0 (3 seeds): contradicted" in table
    assert "+5.0 +- 0.0 (3 seeds): supported" in table  # the bf16 CT-D against the bf16 vanilla runs

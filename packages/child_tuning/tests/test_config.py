import pytest

from plmkit.child_tuning import ChildTuningConfig, ChildTuningMethod
from plmkit.core.cli import main
from plmkit.core.training import MethodError, build_method, get_method


def test_registered_through_entry_points():
    assert get_method("child_tuning") is ChildTuningMethod
    method = build_method("child_tuning", {"mode": "F", "reserve_p": 0.2})
    assert method.config == ChildTuningConfig(mode="F", reserve_p=0.2)


def test_reference_defaults_per_mode():
    d, f = ChildTuningConfig(mode="D"), ChildTuningConfig(mode="F")
    assert (d.pattern, d.rescales) == ("layer", False)
    assert (f.pattern, f.rescales) == ("", True)
    assert ChildTuningConfig(mode="D", rescale=True, param_pattern="encoder").rescales is True


@pytest.mark.parametrize(
    "options, message",
    [
        ({"reserve_p": 0.0}, "reserve_p must be in (0, 1]"),
        ({"reserve_p": 1.5}, "reserve_p must be in (0, 1]"),
        ({"reserve_p": -0.1}, "reserve_p must be in (0, 1]"),
        ({"mode": "X"}, "mode must be one of ['F', 'D'], got 'X'"),
        ({"mode": "f"}, "mode must be one of ['F', 'D'], got 'f'"),
        ({"fisher_grad_clip": -1.0}, "fisher_grad_clip must be >= 0"),
        ({"param_pattern": "layer("}, "is not a regex"),
    ],
)
def test_bad_options_raise_method_error(options, message):
    with pytest.raises(MethodError, match=__import__("re").escape(message)):
        ChildTuningConfig(**options)


def test_cli_reports_bad_option_in_one_line(capsys):
    rc = main(["train", "--model_name_or_path", "tiny-bert", "--method", "child_tuning", "--method.reserve_p", "2"])
    assert rc == 2
    assert "reserve_p must be in (0, 1], got 2.0" in capsys.readouterr().err


def test_cli_rejects_a_mode_outside_the_choices(capsys):
    try:
        rc = main(["train", "--model_name_or_path", "tiny-bert", "--method", "child_tuning", "--method.mode", "X"])
    except SystemExit as stop:  # the flag parser checks the choices before the config does (and exits)
        rc = stop.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "'X'" in err and "'F'" in err and "'D'" in err


def test_uses_only_the_v2_hooks():
    from plmkit.core.training import Method, option_choices

    method = ChildTuningMethod()
    assert not hasattr(method, "callbacks") and not hasattr(Method, "extra_loss")
    assert option_choices(ChildTuningConfig, "mode") == ("F", "D")


CONFIGS = sorted((__import__("pathlib").Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    from plmkit.core.config import parse_experiment

    cfg = parse_experiment([str(path)])
    assert cfg.method_name == "child_tuning"
    ChildTuningConfig(**cfg.method_options)


def test_dotted_flags_are_typed():
    from plmkit.core.config import parse_experiment

    cfg = parse_experiment([
        "--method", "child_tuning", "--method.mode", "F", "--method.rescale", "false", "--method.fisher_grad_clip",
        "0", "--method.param_pattern", "^(?!classifier)", "--method.per_example_fisher", "true", "--method.seed", "5",
    ])
    assert ChildTuningConfig(**cfg.method_options) == ChildTuningConfig(
        mode="F", rescale=False, fisher_grad_clip=0.0, param_pattern="^(?!classifier)", per_example_fisher=True, seed=5
    )

"""Cubic sparsity schedule (fractions and steps) and the Trainer callback that applies it."""

import itertools
from functools import partial

import pytest

from plmkit.core.sparsity import (
    SparsitySchedule,
    cubic_sparsity,
    cubic_sparsity_steps,
    mask_linears,
    masked_layers,
)
from plmkit.core.testing import tiny_model

# T = 100, s_f = 0.9, t_i = 0.1, t_f = 0.3: the cubic region is (10, 70], 60 steps long.
HAND_COMPUTED = [
    (0, 0.0),
    (10, 0.0),  # t = t_i T: still s_i
    (25, 0.9 - 0.9 * 0.75**3),  # progress 15/60: 0.5203125
    (40, 0.9 - 0.9 * 0.5**3),  # midpoint: 0.7875
    (70, 0.9),  # t = (1 - t_f) T: the cubic reaches s_f
    (71, 0.9),
    (100, 0.9),
]


@pytest.mark.parametrize("step, expected", HAND_COMPUTED)
def test_cubic_schedule_hand_computed(step, expected):
    assert cubic_sparsity(step, 100, 0.9) == pytest.approx(expected, abs=1e-12)


def test_cubic_schedule_with_initial_sparsity():
    assert cubic_sparsity(0, 100, 0.9, initial_sparsity=0.2) == 0.2
    assert cubic_sparsity(40, 100, 0.9, initial_sparsity=0.2) == pytest.approx(0.9 - 0.7 * 0.125)
    assert cubic_sparsity(100, 100, 0.9, initial_sparsity=0.2) == 0.9


def test_step_form_matches_fraction_form_and_cap_units():
    for step in range(0, 201, 7):
        assert cubic_sparsity(step, 200, 0.97, 0.0, 0.1, 0.3) == pytest.approx(
            cubic_sparsity_steps(step, 200, 0.97, 0.0, initial_warmup_steps=20, final_warmup_steps=60)
        )
    # CAP: warm-ups in multiples of warmup_steps W = 10 (initial 2 W, final 3 W), T = 100: cubic in (20, 70].
    cap = partial(
        cubic_sparsity_steps,
        total_steps=100,
        final_sparsity=0.9,
        initial_warmup_steps=20,
        final_warmup_steps=30,
    )
    assert cap(20) == 0.0
    assert cap(45) == pytest.approx(0.7875)
    assert cap(71) == 0.9


def test_schedule_is_monotone():
    values = [cubic_sparsity(t, 50, 0.9) for t in range(51)]
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_schedule_sets_sparsity_at_begin_step_and_resume():
    model, _ = tiny_model("bert")
    mask_linears(model, scorer="movement")
    schedule = SparsitySchedule(partial(cubic_sparsity, final_sparsity=0.9))
    layer = masked_layers(model)[0][1]

    schedule.apply(model, 0, 100)
    assert layer.num_pruned == 0
    schedule.apply(model, 40, 100)
    assert schedule.current == pytest.approx(0.7875)
    assert all(m.num_pruned == int(0.7875 * m.weight.numel()) for _, m in masked_layers(model))
    # Resuming: the Trainer restores global_step before on_train_begin, so the schedule picks up where it was.
    schedule.apply(model, 80, 100)
    assert layer.num_pruned == int(0.9 * layer.weight.numel())
    with pytest.raises(ValueError, match="quantity must be"):
        SparsitySchedule(schedule.schedule, quantity="rate")

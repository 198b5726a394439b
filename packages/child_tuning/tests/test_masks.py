import torch

from plmkit.child_tuning import ChildTuningMethod, FMaskSampler, apply_fixed_mask_
from plmkit.core.testing import tiny_model


def test_f_mask_keep_rate_and_rescaling():
    p, n = 0.3, 400_000
    sampler = FMaskSampler(p, seed=0)
    grad = torch.ones(n)
    sampler.mask_(grad)
    kept = grad != 0
    rate = kept.float().mean().item()
    assert abs(sampler.keep_p - p) <= 2**-17
    assert abs(rate - p) < 4 * (p * (1 - p) / n) ** 0.5  # 4 sigma
    assert torch.all(grad[kept] == 1 / sampler.keep_p)  # g * M / p
    # unbiased: E[g * M / p] = g
    many = torch.full((64, 5000), 2.0)
    sampler.mask_(many)
    assert abs(many.mean().item() - 2.0) < 0.02


def test_f_mask_is_fresh_every_step_reproducible_and_leaves_global_rng_alone():
    a, b = FMaskSampler(0.5, seed=1), FMaskSampler(0.5, seed=1)
    before = torch.random.get_rng_state()
    first, second, again = torch.ones(1000), torch.ones(1000), torch.ones(1000)
    a.mask_(first)
    a.mask_(second)
    b.mask_(again)
    assert not torch.equal(first, second)  # a new mask per step
    assert torch.equal(first, again)  # same seed, same stream
    assert torch.equal(before, torch.random.get_rng_state())


def test_f_without_rescaling_keeps_values_and_p_one_is_identity():
    grad = torch.randn(1000)
    masked = grad.clone()
    FMaskSampler(0.4, seed=0, rescale=False).mask_(masked)
    assert torch.all((masked == 0) | (masked == grad))
    same = grad.clone()
    FMaskSampler(1.0, seed=0).mask_(same)
    assert torch.equal(same, grad)


def _adamw_steps(method=None, steps=3):
    torch.manual_seed(0)
    model, tok = tiny_model("bert")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    batch = tok(["good movie", "bad film", "great fun", "terrible dull story"], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([0, 1, 0, 1])
    for _ in range(steps):
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if method is not None:
            method.before_optimizer_step(model)
        opt.step()
        opt.zero_grad()
    return model.state_dict()


def test_f_with_p_one_equals_plain_adamw_bitwise():
    plain = _adamw_steps()
    child = _adamw_steps(ChildTuningMethod(mode="F", reserve_p=1.0))
    assert all(torch.equal(plain[k], child[k]) for k in plain)


def test_f_masks_every_parameter_by_default_and_respects_param_pattern():
    model, tok = tiny_model("bert")
    batch = tok(["good movie", "bad film"], padding=True, return_tensors="pt")
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters()}
    ChildTuningMethod(mode="F", reserve_p=0.5, param_pattern="^classifier", seed=0).before_optimizer_step(model)
    for n, p in model.named_parameters():
        changed = not torch.equal(p.grad, full[n])
        assert changed == n.startswith("classifier"), n


def test_fixed_mask_zeroes_outside_child_and_optionally_rescales():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 3.0)
    mask = torch.tensor([True, False, True, False])
    apply_fixed_mask_([(p, mask)])
    assert p.grad.tolist() == [3.0, 0.0, 3.0, 0.0]
    apply_fixed_mask_([(p, mask)], scale=2.0)
    assert p.grad.tolist() == [6.0, 0.0, 6.0, 0.0]

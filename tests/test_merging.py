"""Merging: layouts at every granularity, equality with a manual state-dict merge, no mutation, streamed gradients."""

import pytest
import torch
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import Coefficients, TaskVectorBank
from taskvec_aesthetics.task_vectors.merging import (
    coefficient_layout,
    functional_forward,
    merge_parameters,
    streamed_coefficient_grad,
)

TASKS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def setup():
    base = tiny_model("clip")
    bank = TaskVectorBank.from_finetuned(base, {t: perturbed_copy(base, i) for i, t in enumerate(TASKS)})
    return base, bank


def _random_coefficients(base, bank, granularity, seed=0):
    layout = coefficient_layout(base.parameter_groups(), bank.parameter_names, granularity)
    values = torch.randn(layout.num_groups, len(TASKS), generator=torch.Generator().manual_seed(seed))
    return layout, Coefficients(values, list(layout.group_names), TASKS, granularity)


def test_layout_sizes(setup):
    base, bank = setup
    groups = base.parameter_groups()
    assert coefficient_layout(groups, bank.parameter_names, "task").group_names == ("all",)
    layer = coefficient_layout(groups, bank.parameter_names, "layer")
    assert layer.group_names == ("embeddings", "block.0", "block.1", "neck", "head")
    tensor = coefficient_layout(groups, bank.parameter_names, "tensor")
    assert tensor.num_groups == len(bank.parameter_names)
    with pytest.raises(ValueError, match="granularity"):
        coefficient_layout(groups, bank.parameter_names, "neuron")


@pytest.mark.parametrize("granularity", ["task", "layer", "tensor"])
def test_merge_equals_manual_state_dict_merge(setup, granularity):
    base, bank = setup
    layout, coefficients = _random_coefficients(base, bank, granularity)
    merged = base.with_coefficients(bank, coefficients)
    state = base.state_dict()
    for name, group in layout.group_of.items():
        expected = state[name] + sum(coefficients.values[group, t] * bank[task][name] for t, task in enumerate(TASKS))
        assert torch.allclose(merged.state_dict()[name], expected, atol=1e-6)


def test_zero_coefficients_give_the_base(setup):
    base, bank = setup
    zero = base.with_coefficients(bank, {"a": 0.0, "b": 0.0, "c": 0.0})
    x = pixels(3)
    assert torch.equal(zero(pixel_values=x).scores, base(pixel_values=x).scores)
    one = base.with_coefficients(bank, {"b": 1.0})
    assert torch.allclose(one(pixel_values=x).scores, bank["b"].apply_to(base)(pixel_values=x).scores, atol=1e-6)


def test_with_coefficients_accepts_tensor_and_rejects_bad_input(setup):
    base, bank = setup
    layout, coefficients = _random_coefficients(base, bank, "layer")
    from_tensor = base.with_coefficients(bank, coefficients.values)
    assert from_tensor.personalization.coefficients.granularity == "layer"
    with pytest.raises(ValueError, match="fits no granularity"):
        base.with_coefficients(bank, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must be finite"):
        base.with_coefficients(bank, torch.full((1, 3), float("nan")))
    with pytest.raises(ValueError, match="unknown tasks"):
        base.with_coefficients(bank, {"z": 1.0})
    with pytest.raises(ValueError, match="shape"):
        Coefficients(torch.zeros(2, 2), ["all"], TASKS, "task")
    with pytest.raises(TypeError, match="coefficients must be"):
        base.with_coefficients(bank, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="already personalized"):
        from_tensor.with_coefficients(bank, coefficients)


def test_functional_forward_never_mutates(setup):
    base, bank = setup
    layout, coefficients = _random_coefficients(base, bank, "layer")
    params = dict(base.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    merged = merge_parameters(params, bank.stacked(), coefficients.values, layout)
    x = pixels(2)
    functional = functional_forward(base, merged, pixel_values=x).scores
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    assert torch.allclose(functional, base.with_coefficients(bank, coefficients)(pixel_values=x).scores, atol=1e-6)


@pytest.mark.parametrize("granularity", ["task", "layer", "tensor"])
def test_streamed_gradient_equals_autograd(setup, granularity):
    base, bank = setup
    layout, coefficients = _random_coefficients(base, bank, granularity, seed=1)
    params = {n: p.detach() for n, p in base.named_parameters()}
    stacked = bank.stacked()
    x = pixels(4)
    values = coefficients.values.clone().requires_grad_(True)
    loss = functional_forward(base, merge_parameters(params, stacked, values, layout), pixel_values=x).scores.sum()
    loss.backward()
    merged = {
        n: t.detach().requires_grad_(True)
        for n, t in merge_parameters(params, stacked, coefficients.values, layout).items()
    }
    functional_forward(base, merged, pixel_values=x).scores.sum().backward()
    streamed = streamed_coefficient_grad(
        {n: t.grad for n, t in merged.items()}, lambda t: bank[TASKS[t]], len(TASKS), layout
    )
    assert torch.allclose(streamed, values.grad, atol=1e-5, rtol=1e-4)

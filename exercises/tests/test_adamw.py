"""Checks of exercises/adamw.py against torch.optim.AdamW (notebook 05)."""

import torch

from exercises.tests.checks import call, check_close, close, expect
from tinylm.model import GPT, GPTConfig

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call the library's optimizer: adapt them here if it changes.


def reference_optimizer(params, **settings):
    return torch.optim.AdamW(params, **settings)


# Wrong turns the messages recognise, each one step of a single tensor (diagnosis only).


def adam_without_bias_correction(param, grad, lr, betas, eps, weight_decay):
    beta1, beta2 = betas
    decayed = param * (1 - lr * weight_decay)
    return decayed - lr * (1 - beta1) * grad / (((1 - beta2) * grad**2).sqrt() + eps)


def adam_with_l2_penalty(param, grad, lr, betas, eps, weight_decay):
    grad = grad + weight_decay * param  # the decay passes through the moments: Adam + L2
    # After one step the bias-corrected moments are the gradient and its square themselves.
    return param - lr * grad / (grad.abs() + eps)


def tensors(seed=0, shapes=((4, 3), (5,), (2, 2, 2))):
    """A few parameters with reproducible values."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in shapes]


def gradients(params, seed):
    """Reproducible gradients of the parameters' shapes, one draw per step."""
    generator = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(p.shape, generator=generator) for p in params]


def run_both(exercise, steps, **settings):
    """(learner's parameters, PyTorch's parameters) after the same gradients for some steps."""
    mine, theirs = tensors(), tensors()
    optimizer = call(
        exercise.AdamW,
        mine,
        hint="AdamW(params, lr=..., betas=..., eps=..., weight_decay=...)",
        **settings,
    )
    reference = reference_optimizer(theirs, **settings)
    for step in range(steps):
        for a, b, grad in zip(mine, theirs, gradients(mine, step), strict=True):
            a.grad, b.grad = grad.clone(), grad.clone()
        call(optimizer.step, hint="step() updates each parameter in place from its .grad")
        reference.step()
    return mine, theirs


SETTINGS = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-8)

# --------------------------------------------------------------------------- the checks


def check_one_step(exercise, settings, wrong_turn, wrong_message, what, hint):
    """After one step: name the wrong turn if the weights match it, else compare with PyTorch."""
    __tracebackhide__ = True
    start = tensors()[0].detach().clone()
    mine, theirs = run_both(exercise, 1, **settings)
    guess = wrong_turn(start, gradients(tensors(), 0)[0], **settings)
    expect(not close(mine[0].detach(), guess) or close(guess, theirs[0].detach()), wrong_message)
    check_close(mine[0].detach(), theirs[0].detach(), what, hint=hint)


def test_adamw_first_step_equals_pytorchs(exercise):
    check_one_step(
        exercise,
        dict(SETTINGS, weight_decay=0.0),
        adam_without_bias_correction,
        "after one step the weights moved as if the moments were not bias-corrected: both "
        "start at zero, so after t steps divide the gradient mean by 1 − beta1^t and the mean "
        "square by 1 − beta2^t (the very first step then moves each weight by about lr)",
        "the first parameter after one step (weight_decay 0)",
        hint="one step: update the two running means, correct them for starting at zero, "
        "then subtract lr · mean / (root of the mean square + eps)",
    )


def test_adamw_follows_pytorch_for_five_steps(exercise):
    mine, theirs = run_both(exercise, 5, weight_decay=0.0, **SETTINGS)
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        check_close(
            a.detach(),
            b.detach(),
            f"parameter {i} after five steps",
            hint="the first step is right but later ones drift: keep the running means and the "
            "step count per parameter between calls (self.state), and bias-correct with this "
            "parameter's own step count",
        )


def test_adamw_decays_weights_apart_from_the_gradient(exercise):
    check_one_step(
        exercise,
        dict(SETTINGS, weight_decay=0.1),
        adam_with_l2_penalty,
        "the weight decay went through the gradient (Adam with an L2 penalty): AdamW shrinks "
        "the weight itself, by a factor 1 − lr · weight_decay, and leaves the gradient and the "
        "moment estimates alone",
        "the first parameter after one step (weight_decay 0.1)",
        hint="multiply the weight by (1 − lr · weight_decay) before the Adam update, as PyTorch "
        "does",
    )


def test_adamw_leaves_parameters_without_gradient_alone(exercise):
    params = tensors()
    before = [p.detach().clone() for p in params]
    optimizer = call(exercise.AdamW, params, hint="AdamW(params, ...)", lr=0.1, weight_decay=0.5)
    params[0].grad = torch.ones_like(params[0])
    call(optimizer.step, hint="skip parameters whose .grad is None")
    for i in (1, 2):
        check_close(
            params[i].detach(),
            before[i],
            f"parameter {i}, which has no gradient",
            hint="a parameter whose .grad is None must not move, not even by the weight decay",
        )


def test_adamw_trains_a_tiny_gpt_like_pytorch(exercise):
    config = GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    mine = GPT(config)
    theirs = GPT(config)
    theirs.load_state_dict(mine.state_dict())
    settings = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    optimizer = call(exercise.AdamW, list(mine.parameters()), hint="AdamW(params, ...)", **settings)
    reference = reference_optimizer(list(theirs.parameters()), **settings)
    generator = torch.Generator().manual_seed(5)
    for _ in range(4):
        x = torch.randint(0, 32, (4, 8), generator=generator)
        y = torch.randint(0, 32, (4, 8), generator=generator)
        for model, opt in ((mine, optimizer), (theirs, reference)):
            model.zero_grad(set_to_none=True)
            model(x, y)[1].backward()
            call(opt.step, hint="step() updates each parameter in place from its .grad")
    for (name, a), b in zip(mine.named_parameters(), theirs.parameters(), strict=True):
        check_close(
            a.detach(),
            b.detach(),
            f"the tiny GPT's {name} after four training steps",
            hint="the tensor checks above pass one by one; here the parameters have different "
            "shapes and some share storage (the tied embedding and output layer)",
            atol=1e-5,
        )

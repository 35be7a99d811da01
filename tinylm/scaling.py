"""Scaling laws: how parameters, tokens, compute, time and loss relate.

Training costs about 6 FLOPs per parameter per token (a multiply-add is 2 FLOPs; the forward
pass does one per weight, the backward pass two), so a run of N parameters on D tokens costs
C ≈ 6·N·D; `tinylm.model.flops_per_token` adds the attention term. Hoffmann et al. (2022,
"Chinchilla") fitted the loss of ~400 runs as L(N, D) = E + A/N^α + B/D^β: `PowerLaw` holds such
a law, `fit_power_law` fits one to measured losses (with bootstrap intervals, numpy only), and
`law_optimum` / `chinchilla_optimal` split a compute budget between N and D.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinylm import nanogpt_reference
from tinylm.hardware import PEAK_FLOPS, mfu
from tinylm.model import GPTConfig, count_parameters, flops_per_token, preset
from tinylm.runs import RUNS, TrainConfig, sweep_run

if TYPE_CHECKING:  # only a type: the scaling arithmetic does not need the training loop
    from tinylm.train import TrainResult

# Hoffmann et al. 2022, arXiv:2203.15556, Table 3: a compute-optimal model sees about 20 tokens per
# parameter (Chinchilla itself: 70B parameters, 1.4T tokens).
CHINCHILLA_TOKENS_PER_PARAM = 20
GPUS = ("A10G", "A100", "H100", "H200")  # the time table's GPUs; peaks from hardware.PEAK_FLOPS
# Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", arXiv:2305.16264, their
# fitted R*_D: the R-th repetition of the data is worth e^(-R / 15.4) of as many new tokens.
REPEAT_DECAY = 15.4
MIN_EXPONENT = 1e-3  # fitted exponents stay positive: loss never rises with N, D or C


# --------------------------------------------------------------------------- compute and time


def training_flops(n_params: float, tokens: float) -> float:
    """C = 6·N·D: training FLOPs of N parameters on D tokens (2N forward + 4N backward a token)."""
    _check_positive(n_params=n_params, tokens=tokens)
    return 6 * n_params * tokens


def run_flops(config: GPTConfig, tokens: float) -> float:
    """Training FLOPs of a model on D tokens, with the attention term (model.flops_per_token)."""
    _check_positive(tokens=tokens)
    return flops_per_token(config) * tokens


def peak(gpu: str) -> float:
    """Peak dense bf16 FLOP/s of a GPU named as in tinylm.hardware.PEAK_FLOPS (e.g. "A10G")."""
    if gpu not in PEAK_FLOPS:
        raise ValueError(
            f"unknown GPU {gpu!r}; known: {sorted(PEAK_FLOPS)} (tinylm.hardware."
            "PEAK_FLOPS holds their datasheet peaks)"
        )
    return PEAK_FLOPS[gpu]


def training_seconds(flops: float, gpu: str, mfu: float, n_gpus: int = 1) -> float:
    """Wall time of `flops` on n_gpus GPUs that each sustain mfu × their peak FLOP/s."""
    _check_positive(flops=flops, n_gpus=n_gpus)
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu is a fraction of the peak, in (0, 1]; got {mfu}")
    return flops / (peak(gpu) * mfu * n_gpus)


def implied_mfu(config: GPTConfig, tokens: float, seconds: float, gpu: str) -> float:
    """The MFU a run must have had: its FLOPs over its wall time, as a fraction of the peak."""
    _check_positive(tokens=tokens, seconds=seconds)
    return mfu(flops_per_token(config), tokens / seconds, peak(gpu))


def run_tokens(cfg: TrainConfig) -> int:
    """Tokens a single-process run trains on: batch × context × accumulation × steps."""
    block = cfg.block_size or preset(cfg.model).block_size
    return cfg.batch_size * block * cfg.grad_accum * cfg.max_steps


# --------------------------------------------------------------------------- the talk's runs


@dataclass(frozen=True)
class TalkRun:
    """One of the talk's nanoGPT runs (GPT-2 tokens, context 256) on one GPU, as it reports it."""

    name: str
    model: str  # a preset of tinylm.config.PRESETS
    tokens: int  # tokens trained on (not unique tokens: the corpus was repeated)
    minutes: float  # wall time reported in the talk
    epochs: float  # passes over the corpus, as the talk rounds them
    gpu: str = "A10G"

    @property
    def params(self) -> int:
        """N, as tinylm.model.count_parameters counts it (position embeddings left out)."""
        return count_parameters(preset(self.model))

    @property
    def flops(self) -> float:
        """Training FLOPs, with the attention term."""
        return run_flops(preset(self.model), self.tokens)

    @property
    def mfu(self) -> float:
        """The model FLOPs utilisation the reported wall time implies (the course's GPU peak)."""
        return self.mfu_at(peak(self.gpu))

    def mfu_at(self, peak_flops: float) -> float:
        """The implied MFU under a given peak FLOP/s, e.g. each of A10G_PEAKS."""
        _check_positive(peak_flops=peak_flops)
        return mfu(
            flops_per_token(preset(self.model)), self.tokens / (self.minutes * 60), peak_flops
        )

    @property
    def tokens_per_param(self) -> float:
        """D / N, to compare with Chinchilla's 20."""
        return self.tokens / self.params


# The talk's slides: "~30M size / 80M token / 16min / ~10 epochs", "~124M size / 80M tokens /
# 46min / ~10 epochs", "~757M size / 20M tokens / 77min / ~3 epochs", all on one A10G (g5.4xlarge).
# The 80M of the first two is tinylm.runs.RUNS' 4,900 steps of 64 × 256 tokens.
TALK_RUNS: dict[str, TalkRun] = {
    "talk-30m": TalkRun("talk-30m", "30m", run_tokens(RUNS["talk-30m"]), 16, 10),
    "talk-124m": TalkRun("talk-124m", "124m", run_tokens(RUNS["talk-124m"]), 46, 10),
    "talk-757m": TalkRun("talk-757m", "757m", 20_000_000, 77, 3),
}

# The A10G's dense bf16 tensor-core peak is on no NVIDIA or AWS datasheet. The course's code uses
# the A10 datasheet's 125 TFLOPS (hardware.PEAK_FLOPS["A10G"]: the same GA102 chip, an assumption);
# third-party comparisons report about 70 TFLOPS for the A10G, whose variant favours CUDA cores
# over tensor compute (e.g. Baseten, "NVIDIA A10 vs A10G for ML model inference", 2023).
# Notebooks 05 and 08 show the talk's implied MFU under both.
A10G_PEAKS: dict[str, float] = {
    "A10 datasheet, the course's assumption": PEAK_FLOPS["A10G"],
    "reported for the A10G by third parties": 70e12,
}

# (parameters, training tokens) of published models, for their tokens per parameter.
PUBLISHED_RUNS: dict[str, tuple[float, float]] = {
    "Chinchilla 70B": (70e9, 1.4e12),  # Hoffmann et al. 2022, arXiv:2203.15556
    "Llama 2 7B": (7e9, 2e12),  # Touvron et al. 2023, arXiv:2307.09288 (the talk's loss figure)
    "TinyLlama 1.1B": (1.1e9, 3e12),  # Zhang et al. 2024, arXiv:2401.02385 (~3 epochs of 1T)
    "Llama 3 8B": (8e9, 15e12),  # Meta, "Introducing Meta Llama 3", April 2024: "over 15T"
}


# nanoGPT's own train.py trained the talk's recipe on one H200 (tinylm.nanogpt_reference, with
# its provenance in data/reference/gpu-nanogpt-h200/README.md): its run of each GPT-2 shape of the
# talk. The 30M run stopped at the talk's 4,900 steps; the 124M one ran 5,000 steps at nanoGPT's
# learning rate for that size (6e-4, where the course's talk-124m keeps the 30M run's 1e-3).
NANOGPT_H200_RUNS: dict[str, str] = {"talk-30m": "gpt2_30m_4900it", "talk-124m": "gpt2_124m_5000it"}


@dataclass(frozen=True)
class ReferenceSpeed:
    """How fast nanoGPT trained one of the talk's shapes on an H200, from its recorded steps."""

    name: str  # the talk's run, a key of TALK_RUNS
    reference_run: str  # its key in nanogpt_reference.curves()
    gpu: str
    step_ms: float  # the median step time, steps that include an evaluation left out
    tokens_per_s: float  # at that step time
    mfu: float  # against the GPU's dense bf16 peak (nanogpt_reference.GPU_PEAK_FLOPS)
    steps: int
    wall_s: float  # the whole run as recorded: start-up, compiling and evaluations included

    @property
    def minutes(self) -> float:
        """The talk's tokens at the steady step time: no start-up, compiling or evaluations."""
        return TALK_RUNS[self.name].tokens / self.tokens_per_s / 60

    @property
    def end_to_end_tokens_per_s(self) -> float:
        """All the run's tokens over its whole wall time (start-up, compiling, evaluations)."""
        return self.steps * nanogpt_reference.TOKENS_PER_STEP / self.wall_s


def nanogpt_h200_speed(name: str, folder: Path | None = None) -> ReferenceSpeed:
    """The speed of nanoGPT's H200 run of a talk shape ("talk-30m" or "talk-124m")."""
    if name not in NANOGPT_H200_RUNS:
        raise ValueError(
            f"no nanoGPT H200 run of {name!r}; recorded: {sorted(NANOGPT_H200_RUNS)} "
            "(the talk's 757M run was not repeated)"
        )
    key = NANOGPT_H200_RUNS[name]
    run = nanogpt_reference.curves(folder)[key]
    return ReferenceSpeed(
        name=name,
        reference_run=key,
        gpu=nanogpt_reference.GPU_NAME,
        step_ms=nanogpt_reference.steady_step_ms(run),
        tokens_per_s=nanogpt_reference.tokens_per_s(run),
        mfu=nanogpt_reference.mfu(key, run),
        steps=run["shape"]["max_iters"],
        wall_s=run["wall_s"],
    )


def effective_tokens(unique: float, epochs: float, decay: float = REPEAT_DECAY) -> float:
    """Fresh-token equivalent of `epochs` passes over `unique` tokens (Muennighoff et al. 2023).

    D' = U + U·R*·(1 − e^(−R/R*)) with R = epochs − 1 repetitions: repeats are worth almost as
    much as new text for a few epochs, and beyond a few times R* (= decay) add almost nothing.
    """
    _check_positive(unique=unique, epochs=epochs, decay=decay)
    if epochs <= 1:
        return unique * epochs
    return unique * (1 + decay * (1 - math.exp(-(epochs - 1) / decay)))


# --------------------------------------------------------------------------- laws


@dataclass(frozen=True)
class PowerLaw:
    """L(x₁, …, x_k) = E + Σᵢ Aᵢ·xᵢ^(−αᵢ): a loss floor E plus one power law per resource."""

    E: float
    A: tuple[float, ...]
    alpha: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.A or len(self.A) != len(self.alpha):
            raise ValueError(
                f"PowerLaw needs one A and one alpha per resource, got "
                f"A={self.A} and alpha={self.alpha}"
            )

    def __call__(self, *x: float | np.ndarray) -> float | np.ndarray:
        """The law's loss at x (scalars or arrays, one per resource: N, or N and D)."""
        if len(x) != len(self.A):
            raise ValueError(f"this law takes {len(self.A)} resource(s), got {len(x)}")
        return self.E + sum(
            a * np.asarray(v, dtype=float) ** -al
            for a, al, v in zip(self.A, self.alpha, x, strict=True)
        )


# Hoffmann et al. 2022, arXiv:2203.15556, section 3.3 (approach 3), eq. 10: the fit to their runs
# on MassiveText, loss in nats per token of a 32k SentencePiece vocabulary. A replication
# (Besiroglu et al. 2024, arXiv:2404.10102) refitted the same points and got other constants.
CHINCHILLA = PowerLaw(E=1.69, A=(406.4, 410.7), alpha=(0.34, 0.28))


def chinchilla_optimal(
    compute: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> tuple[float, float]:
    """(N, D) for a budget of C FLOPs by the rule D = 20·N: N = √(C / 120), D = 20·N."""
    _check_positive(compute=compute, tokens_per_param=tokens_per_param)
    n = math.sqrt(compute / (6 * tokens_per_param))
    return n, tokens_per_param * n


def law_optimum(law: PowerLaw, compute: float) -> tuple[float, float]:
    """(N, D) minimising a law L(N, D) under 6·N·D = C: N = G·(C/6)^a, a = β/(α+β) (their eq. 4).

    G = (αA / βB)^(1/(α+β)) and D = (C/6) / N.
    """
    _check_positive(compute=compute)
    if len(law.A) != 2:
        raise ValueError(f"law_optimum needs a law of N and D (two terms), got {len(law.A)}")
    (a_n, a_d), (alpha, beta) = law.A, law.alpha
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"law_optimum needs positive exponents, got {law.alpha}")
    g = (alpha * a_n / (beta * a_d)) ** (1 / (alpha + beta))
    n = g * (compute / 6) ** (beta / (alpha + beta))
    return n, compute / 6 / n


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class PowerLawFit:
    """A least-squares fit of a PowerLaw, and the laws refitted to bootstrap resamples."""

    law: PowerLaw
    samples: tuple[PowerLaw, ...]  # one per bootstrap resample of the points
    rms_log_error: float  # root mean square of log(fitted / measured) over the points

    def interval(self, *x: float | np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bootstrap quantiles of the predicted loss at x (a confidence band)."""
        predictions = np.stack([np.asarray(s(*x)) for s in self.samples])
        tail = (1 - level) / 2
        return np.quantile(predictions, tail, axis=0), np.quantile(predictions, 1 - tail, axis=0)

    def parameter_intervals(self, level: float = 0.9) -> dict[str, tuple[float, float]]:
        """Bootstrap interval of each parameter: E, A1, alpha1, (A2, alpha2, …)."""
        tail = (1 - level) / 2
        table = {"E": [s.E for s in self.samples]}
        for i in range(len(self.law.A)):
            table[f"A{i + 1}"] = [s.A[i] for s in self.samples]
            table[f"alpha{i + 1}"] = [s.alpha[i] for s in self.samples]
        return {
            k: (float(np.quantile(v, tail)), float(np.quantile(v, 1 - tail)))
            for k, v in table.items()
        }


def fit_power_law(
    loss: np.ndarray, *x: np.ndarray, n_boot: int = 200, seed: int = 0
) -> PowerLawFit:
    """Fit L = E + Σ Aᵢ·xᵢ^(−αᵢ) to measured losses (resources x: N, or N and D, or C).

    Chinchilla's approach 3 parametrisation, log L = logsumexp(e, aᵢ − αᵢ·log xᵢ) with E = eᵉ and
    Aᵢ = eᵃⁱ kept positive, but plain least squares on log L where they used a Huber loss: a grid
    over the exponents starts Levenberg-Marquardt. Bootstrap: refit to n_boot resamples of the
    points (drawn with replacement), each from the grid and from the best fit.
    """
    y, logx, scale = _fit_inputs(loss, x)
    theta = _best_fit(y, logx)
    law = _to_law(theta, scale)
    if not _is_finite(law):
        raise ValueError(f"the fit diverged ({law}); do the losses fall with every resource?")
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(y), len(y))
        sample = _to_law(_best_fit(y[pick], logx[:, pick], theta), scale)
        if _is_finite(sample):  # a degenerate resample can diverge: it is left out
            samples.append(sample)
    rms = float(np.sqrt(np.mean(_residuals(theta, y, logx) ** 2)))
    return PowerLawFit(law, tuple(samples), rms)


def _fit_inputs(
    loss: np.ndarray, x: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated log loss (m,), log of each resource over its geometric mean (k, m), the means."""
    y = np.asarray(loss, dtype=float).ravel()
    if not x:
        raise ValueError("fit_power_law needs at least one resource (N, D or C) besides the loss")
    sizes = [int(np.size(v)) for v in x]
    if any(size != y.size for size in sizes):
        raise ValueError(f"every resource needs one value per loss ({y.size}), got {sizes}")
    xs = np.stack([np.asarray(v, dtype=float).ravel() for v in x])  # (k, m)
    n_params = 1 + 2 * len(x)
    if y.size <= n_params:
        raise ValueError(
            f"fitting {n_params} parameters needs more than {n_params} points, got {y.size}"
        )
    if not (
        np.all(np.isfinite(y)) and np.all(y > 0) and np.all(np.isfinite(xs)) and np.all(xs > 0)
    ):
        raise ValueError("losses and resources must be finite and positive")
    logx = np.log(xs)
    centre = logx.mean(axis=1, keepdims=True)
    return np.log(y), logx - centre, np.exp(centre[:, 0])


def _best_fit(y: np.ndarray, logx: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Levenberg-Marquardt from the grid's start (and from `start`, if given): the lower cost."""
    fits = [
        _levenberg_marquardt(t, y, logx) for t in (_grid_start(y, logx), start) if t is not None
    ]
    return min(fits, key=lambda t: np.sum(_residuals(t, y, logx) ** 2))


def _terms(theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """(k+1, m) log of each term: e, then aᵢ − αᵢ·log xᵢ."""
    k = logx.shape[0]
    e, a, alpha = theta[0], theta[1 : 1 + k], theta[1 + k :]
    return np.vstack([np.full(logx.shape[1], e), a[:, None] - alpha[:, None] * logx])


def _residuals(theta: np.ndarray, y: np.ndarray, logx: np.ndarray) -> np.ndarray:
    terms = _terms(theta, logx)
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0)) - y


def _jacobian(theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """(m, 1+2k) derivatives of log L̂ by e, aᵢ, αᵢ: softmax weights of the terms."""
    terms = _terms(theta, logx)
    w = np.exp(terms - terms.max(axis=0))
    w /= w.sum(axis=0)
    return np.vstack([w, -w[1:] * logx]).T


def _levenberg_marquardt(
    theta: np.ndarray, y: np.ndarray, logx: np.ndarray, iterations: int = 200
) -> np.ndarray:
    """Gauss-Newton steps on the log residuals, damped (λ) whenever a step does not help.

    Exponents are kept at MIN_EXPONENT or above.
    """
    theta, lam = theta.copy(), 1e-3
    cost = np.sum(_residuals(theta, y, logx) ** 2)
    for _ in range(iterations):
        r, jac = _residuals(theta, y, logx), _jacobian(theta, logx)
        h, g = jac.T @ jac, jac.T @ r
        step = np.linalg.solve(h + lam * (np.diag(np.diag(h)) + 1e-12 * np.eye(len(theta))), -g)
        new = theta + step
        new[1 + len(logx) :] = np.maximum(new[1 + len(logx) :], MIN_EXPONENT)
        new_cost = np.sum(_residuals(new, y, logx) ** 2)
        if np.isfinite(new_cost) and new_cost < cost:
            done = cost - new_cost < 1e-15 * (1 + cost)
            theta, cost, lam = new, new_cost, max(lam / 3, 1e-9)
            if done:
                break
        else:
            lam *= 4
            if lam > 1e12:
                break
    return theta


def _grid_start(y: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """A starting point: for each exponent on a grid, E and A by linear least squares."""
    k = logx.shape[0]
    grid = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
    loss, best, best_cost = np.exp(y), None, np.inf
    for alphas in np.array(np.meshgrid(*[grid] * k)).reshape(k, -1).T:
        design = np.vstack([np.ones_like(loss), np.exp(-alphas[:, None] * logx)]).T
        coef = np.linalg.lstsq(design, loss, rcond=None)[0]
        coef = np.maximum(coef, 1e-3 * loss.min())  # keep E and A positive for the logs
        theta = np.concatenate([np.log(coef), alphas])
        cost = np.sum(_residuals(theta, y, logx) ** 2)
        if cost < best_cost:
            best, best_cost = theta, cost
    return best


def _to_law(theta: np.ndarray, scale: np.ndarray) -> PowerLaw:
    """Undo the centring: xᵢ was divided by scaleᵢ, so Aᵢ = eᵃⁱ·scaleᵢ^αᵢ."""
    k = len(scale)
    alpha = theta[1 + k :]
    with np.errstate(over="ignore"):  # a degenerate fit may overflow: its A becomes inf
        a = np.exp(theta[1 : 1 + k] + alpha * np.log(scale))
    return PowerLaw(float(np.exp(theta[0])), tuple(map(float, a)), tuple(map(float, alpha)))


# --------------------------------------------------------------------------- the sweep


def sweep_config(model: str, steps: int) -> TrainConfig:
    """One run of notebook 08's sweep, as `tinylm.runs.sweep_run` defines it."""
    return sweep_run(model, steps)


def sweep_point(result: TrainResult) -> tuple[int, int, float]:
    """(N, D, final validation loss) of a finished run: N parameters, D tokens trained on."""
    final = result.history[-1]
    if final["val_loss"] is None:
        raise ValueError(f"{result.out_dir} has no final evaluation: is the run finished?")
    return count_parameters(result.model.config), final["tokens"], final["val_loss"]


def _is_finite(law: PowerLaw) -> bool:
    return bool(np.all(np.isfinite([law.E, *law.A, *law.alpha])))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")

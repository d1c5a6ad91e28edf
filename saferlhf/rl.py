"""Pure torch RL maths for PPO-Lagrangian (algorithm-reference §2).

Shapes use B = batch (sequences), T = response tokens (the response slice, right-padded), so a
``mask [B, T]`` is a contiguous prefix of ones per row starting at position 0. ``T_b`` denotes the
index of the last real token of row b (the paper's T, "1[t=T]").

Sign convention (algorithm-reference §1): **cost > 0 means unsafe, cost <= 0 means safe.**

Everything here is a function of tensors except :class:`LagrangeMultiplier`, the small adaptive
controller for λ (algorithm-reference §2.7). Equations: docs/maths.md.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from saferlhf.batching import last_token_index

__all__ = [
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "sequence_token_mean",
    "kl_per_token",
    "token_rewards",
    "gae",
    "combine_advantages",
    "reward_end_score",
    "shaped_end_score",
    "reward_advantage",
    "lagrangian_advantage",
    "Algorithm",
    "ALGORITHMS",
    "pairwise_scores",
    "explained_variance",
    "log_lambda_step",
    "LambdaController",
    "GradientController",
    "PIDController",
    "FixedController",
    "CONTROLLERS",
    "pid_lambda",
    "LagrangeMultiplier",
    "RunningMeanStd",
    "LAMBDA_CEILING",
    "global_mean",
]


# --------------------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is true.

    x, mask: same shape (mask bool or 0/1). ``dim=None`` reduces everything to a 0-d tensor,
    otherwise reduces ``dim``. Masked-out entries never leak (``nan``/``inf`` there are ignored);
    an empty selection gives 0.
    """
    m = mask.bool()
    total = torch.where(m, x, torch.zeros_like(x))
    count = m.to(x.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp(min=1)
    return total.sum(dim) / count.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Variance of ``x`` over all masked positions (0-d tensor).

    Population variance mean((x - mean)²) by default; ``unbiased=True`` applies Bessel's
    correction n/(n-1) (needs n >= 2). An empty selection gives 0.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.bool().sum()
        if n < 2:
            raise ValueError(f"unbiased masked_var needs at least 2 masked entries, got {int(n)}")
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked positions; 0 where ``mask`` is false.

    With ``shift_mean=False`` the mean is added back (scale only). Statistics are global over the
    whole batch (population variance).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def sequence_token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence token mean: x [B, T], mask [B, T] -> [B]; rows with no tokens give 0."""
    return masked_mean(x, mask, dim=-1)


# --------------------------------------------------------------------------- rewards and GAE


def kl_per_token(logp_old: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """KL_t = log π_old(a_t) - log π_ref(a_t), shapes [B, T] (algorithm-reference §2.2)."""
    return logp_old - logp_ref


def token_rewards(
    kl: torch.Tensor,
    end_score: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    sign: int,
    clamp: float = 50.0,
) -> torch.Tensor:
    """Per-token reward or cost stream (algorithm-reference §2.3).

    kl [B, T] = KL_t, end_score [B] = R(x, y) or C(x, y), mask [B, T] -> [B, T]:

        sign = -1 (reward stream):  r_t = -β·KL_t + 1[t = T_b]·R(x, y)
        sign = +1 (cost stream):    c_t = +β·KL_t + 1[t = T_b]·C(x, y)

    T_b is each row's last ``mask == 1`` position (rows may have different lengths). The sum is
    clamped to ±``clamp`` AFTER the KL term is added, and the result is 0 where ``mask == 0``.
    A row with no tokens is all zeros (its end score has nowhere to go).
    """
    if sign not in (-1, 1):
        raise ValueError(f"sign must be -1 (reward stream) or +1 (cost stream), got {sign!r}")
    stream = sign * beta * kl
    last = last_token_index(mask)
    at_end = torch.arange(kl.shape[-1], device=kl.device).expand_as(kl) == last.unsqueeze(-1)
    stream = stream + at_end.to(stream.dtype) * end_score.to(stream.dtype).unsqueeze(-1)
    stream = stream.clamp(-clamp, clamp)
    return torch.where(mask.bool(), stream, torch.zeros_like(stream))


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (algorithm-reference §2.4).

    rewards r [B, T], values V [B, T], mask [B, T] (contiguous prefix of ones per row) ->
    (advantages A [B, T], returns G [B, T]):

        δ_t = r_t + γ·V_{t+1} - V_t,   A_t = δ_t + γ·λ_GAE·A_{t+1},   G_t = A_t + V_t

    with V and A after each row's end equal to 0, so rows of different lengths are exact.
    A and G are 0 where ``mask == 0``. One reverse loop over T, vectorised over B. Pass detached
    values (GAE targets carry no gradient by convention; autograd would still work).
    """
    m = mask.bool()
    zeros = torch.zeros_like(rewards[:, 0])
    next_value, next_adv = zeros, zeros
    columns: list[torch.Tensor] = []
    for t in reversed(range(rewards.shape[-1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = torch.where(m[:, t], delta + gamma * lam * next_adv, zeros)
        next_value = torch.where(m[:, t], values[:, t], zeros)
        next_adv = adv
        columns.append(adv)
    advantages = torch.stack(columns[::-1], dim=-1)
    returns = torch.where(m, advantages + values, torch.zeros_like(advantages))
    return advantages, returns


def combine_advantages(adv_r: torch.Tensor, adv_c: torch.Tensor, lam: float) -> torch.Tensor:
    """Ã_t = (A^r_t - λ·A^c_t) / (1 + λ), λ a detached float (algorithm-reference §2.5)."""
    return (adv_r - lam * adv_c) / (1.0 + lam)


# --------------------------------------------------------------------------- algorithms: one row each
# Every algorithm of `saferlhf ppo` is one row of `ALGORITHMS`: which end score feeds the reward stream,
# how the actor's advantage is formed, and which models and controllers it needs. The loop in
# `saferlhf.recipes.ppo` reads the row chosen at set-up and has no per-algorithm branches.


def reward_end_score(reward: torch.Tensor, cost: torch.Tensor | None, lam: float) -> torch.Tensor:
    """End score of the reward stream for PPO and PPO-Lag: R(x, y) [B] (the cost has its own stream)."""
    return reward


def shaped_end_score(reward: torch.Tensor, cost: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Reward shaping (the paper's baseline, §4.2.2): R'(x, y) = R(x, y) - λ·C(x, y) with a FIXED λ [B]."""
    if cost is None:
        raise ValueError("reward shaping needs the cost C(x, y)")
    return reward - lam * cost


def reward_advantage(adv_r: torch.Tensor, adv_c: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Actor advantage of PPO and reward shaping: Ã_t = A^r_t (one stream)."""
    return adv_r


def lagrangian_advantage(adv_r: torch.Tensor, adv_c: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Actor advantage of PPO-Lag: Ã_t = (A^r_t - λ·A^c_t) / (1 + λ) (`combine_advantages`)."""
    if adv_c is None:
        raise ValueError("PPO-Lag needs the cost advantages A^c")
    return combine_advantages(adv_r, adv_c, lam)


def pairwise_scores(reward: torch.Tensor, cost: torch.Tensor | None, lam: float, kl_seq: torch.Tensor, beta: float,
                    lagrangian: bool) -> torch.Tensor:
    """Pairwise PPO's trajectory scores [B] with the KL folded in: s = R − β·KL(y) (pairwise_ppo) or
    s = (R − λ·C)/(1 + λ) − β·KL(y) (pairwise_ppo_lag, the Lagrangian reward with PPO-Lag's normalisation);
    KL(y) = Σ_t (log π_old(a_t) − log π_ref(a_t)) over the response."""
    if lagrangian:
        if cost is None:
            raise ValueError("pairwise_ppo_lag needs the cost C(x, y)")
        return (reward - lam * cost) / (1.0 + lam) - beta * kl_seq
    return reward - beta * kl_seq


@dataclass(frozen=True)
class Algorithm:
    """One row of the algorithm table (see `ALGORITHMS`)."""

    name: str
    kl_coef: float          # default β (the paper's: 0.01 for PPO-Lag, 0.02 for PPO and reward shaping)
    needs_cost_model: bool  # a cost model is required (PPO only logs the cost when one is given)
    cost_critic: bool       # a cost stream with its own critic and GAE (A^c, G^c)
    adaptive_lambda: bool   # λ from `LagrangeMultiplier`; otherwise the fixed `shaping_lambda` (or none)
    end_score: Callable[[torch.Tensor, torch.Tensor | None, float], torch.Tensor]
    actor_advantage: Callable[[torch.Tensor, torch.Tensor | None, float], torch.Tensor]
    pairwise: bool = False  # two responses per prompt, trajectory-wise clipped objective, no critic (P3O)


ALGORITHMS: dict[str, Algorithm] = {
    "ppo_lag": Algorithm("ppo_lag", 0.01, True, True, True, reward_end_score, lagrangian_advantage),
    "ppo": Algorithm("ppo", 0.02, False, False, False, reward_end_score, reward_advantage),
    "reward_shaping": Algorithm("reward_shaping", 0.02, True, False, False, shaped_end_score, reward_advantage),
    "pairwise_ppo": Algorithm("pairwise_ppo", 0.02, False, False, False, reward_end_score, reward_advantage,
                              pairwise=True),
    "pairwise_ppo_lag": Algorithm("pairwise_ppo_lag", 0.01, True, False, True, reward_end_score,
                                  lagrangian_advantage, pairwise=True),
}
AlgorithmName = Literal[tuple(ALGORITHMS)]  # the config type of `saferlhf ppo --algorithm`: the table's rows


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[G - V] / Var[G] over the masked positions (population variances).

    1 = perfect critic, 0 = no better than a constant, < 0 = worse. Returns ``nan`` when Var[G]
    is 0 (e.g. constant returns or no masked entries): the ratio is undefined there.
    """
    var_g = masked_var(returns.detach().float(), mask)
    if var_g.item() == 0.0:
        return float("nan")
    var_err = masked_var((returns - values).detach().float(), mask)
    return float(1.0 - var_err / var_g)


# --------------------------------------------------------------------------- best-of-k under a constraint


def best_of_k_choice(reward: torch.Tensor, cost: torch.Tensor | None, threshold: float = 0.0,
                     eligible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of k candidates to keep per prompt: reward, cost [P, K] -> (index [P] long, feasible [P] bool).

    The highest reward among the candidates with cost ≤ d; when none is feasible, the lowest cost (ties: the
    first). Without a cost model (``cost`` None) the highest reward, every prompt feasible. ``eligible`` [P, K]
    bool (e.g. the answer ended rather than being cut off at the token limit): only eligible candidates count
    as feasible, so a prompt with none is infeasible."""
    ok = torch.ones_like(reward, dtype=torch.bool) if cost is None else cost <= threshold
    if eligible is not None:
        ok = ok & eligible
    feasible = ok.any(-1)
    masked = torch.where(ok, reward, torch.full_like(reward, -torch.inf))
    fallback = reward.argmax(-1) if cost is None else cost.argmin(-1)
    return torch.where(feasible, masked.argmax(-1), fallback), feasible


def best_of_k_bounds(k: int) -> dict[str, float]:
    """Beirami et al. 2024 (arXiv 2401.01879): KL(best-of-k ‖ π) ≤ log k − (k − 1)/k and the win rate of
    best-of-k over π ≤ k / (k + 1)."""
    return {"kl_upper_bound": math.log(k) - (k - 1) / k, "win_rate_upper_bound": k / (k + 1)}


def first_acceptable(cost: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cost-model classifier baseline (the paper's "CM"): costs [P, N] of up to N successive attempts ->
    (index [P] of the first attempt with cost ≤ d, accepted [P]); a prompt with none is refused."""
    ok = cost <= threshold
    accepted = ok.any(-1)
    return torch.where(accepted, ok.float().argmax(-1), torch.zeros_like(accepted, dtype=torch.long)), accepted


# --------------------------------------------------------------------------- score normalisation


class RunningMeanStd:
    """Running mean and standard deviation of every score seen so far (Chan et al.'s parallel update, float64):
    after ``update(x_1)``, ..., ``update(x_k)``, ``mean`` and ``std`` equal numpy's ``mean`` and ``std`` (ddof 0)
    of the concatenated batches. PPO's ``--normalize.*`` (the reference's optional score normaliser; OpenRLHF
    normalises rewards the same way): ``standardize(R) = (R - μ)/σ`` for rewards, ``scale(C) = C/σ`` for costs
    (no shift, so the safe / unsafe zero stays where it is). The caller updates with the current batch first,
    so the first batch is normalised by its own statistics. σ is floored at ``min_std`` and is 1 until two
    scores were seen. ``state_dict`` holds everything, so a resumed run continues exactly."""

    def __init__(self, min_std: float = 1e-6) -> None:
        self.min_std = min_std
        self.count, self.mean, self.m2 = 0, 0.0, 0.0  # m2: the sum of squared deviations from the mean

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of scores (any shape; flattened)."""
        values = x.detach().double().flatten().cpu()
        n = values.numel()
        if n == 0:
            return
        batch_mean = float(values.mean())
        batch_m2 = float(((values - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """The population standard deviation of every score seen (ddof 0), floored at ``min_std``; 1.0 before
        two scores were seen."""
        if self.count < 2:
            return 1.0
        return max(math.sqrt(self.m2 / self.count), self.min_std)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - μ) / σ, in ``x``'s dtype."""
        return ((x.double() - self.mean) / self.std).to(x.dtype)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """x / σ, in ``x``'s dtype (no shift)."""
        return (x.double() / self.std).to(x.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# --------------------------------------------------------------------------- Lagrange multiplier


LAMBDA_CEILING = 1e6  # upper bound of λ when no cap is configured: e^η never overflows
STALL_RATE = 1e-3  # `LagrangeMultiplier.stall_warning`: lr·|J_c - d|/σ_C below this ...
STALL_STEPS = 5    # ... for this many updates in a row: λ barely moves


def log_lambda_step(log_lambda: float, lr: float, violation: float, log_min: float, log_max: float) -> float:
    """One ascent step on η = log λ, bounded: η' = clamp(η + lr·e^η·(J_c - d), log λ_min, log λ_max).

    ``violation`` = J_c - d. Never overflows: η is within the bounds, so e^η <= λ_max is finite, and a
    step too large for a float (inf) is clamped like any other. Raises ``ValueError`` for a
    non-finite violation.
    """
    if not math.isfinite(violation):
        raise ValueError(f"the constraint violation J_c - d must be finite, got {violation}")
    step = lr * math.exp(log_lambda) * violation  # a float product: inf, never OverflowError
    return min(log_max, max(log_min, log_lambda + step))


class LambdaController(Protocol):
    """How λ moves (``LagrangeMultiplier`` keeps the cost window, the bounds, the delay and the warnings):
    ``step(log_lambda, violation, log_min, log_max) -> log λ'`` with ``violation`` = (J_c - d)/σ_C, the new η
    within [log_min, log_max]; ``state_dict`` / ``load_state_dict`` (exact resume) and ``metrics`` (fixed
    ``lagrange/<name>_*`` keys; the gradient controller has none)."""

    name: str

    def step(self, log_lambda: float, violation: float, log_min: float, log_max: float) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def metrics(self) -> dict[str, float]: ...


class GradientController:
    """The paper's (and the reference's) multiplier: gradient ascent on η = log λ, ``log_lambda_step``."""

    name = "gradient"

    def __init__(self, lr: float = 0.1) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the λ learning rate must be finite and > 0, got {lr}")
        self.lr = lr

    def step(self, log_lambda: float, violation: float, log_min: float, log_max: float) -> float:
        return log_lambda_step(log_lambda, self.lr, violation, log_min, log_max)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}


class FixedController:
    """λ never moves (reward shaping with the multiplier's bookkeeping: its window, metrics and warnings)."""

    name = "fixed"

    def step(self, log_lambda: float, violation: float, log_min: float, log_max: float) -> float:
        return log_lambda

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}


def pid_lambda(kp: float, ki: float, kd: float, violation: float, integral: float, rise: float) -> float:
    """The PID-Lagrangian multiplier (Stooke, Achiam & Abbeel 2020, "Responsive Safety in Reinforcement Learning
    by PID Lagrangian Methods", Alg. 2) before its bounds: (K_P·Δ + K_I·I + K_D·∂)_+, with Δ the violation, I its
    (non-negative) running sum and ∂ the (non-negative) rise of the episode cost since the last update."""
    return max(0.0, kp * violation + ki * integral + kd * rise)


class PIDController:
    """λ from the violation's proportional, integral and derivative terms (``pid_lambda``):

        Δ = (J_c - d)/σ_C,   I ← clamp(I + Δ, 0, λ_max / K_I),   ∂ = max(0, (J_c - J_c,prev)/σ_C),
        λ = clamp(K_P·Δ + K_I·I + K_D·∂, λ_min, λ_max)

    The integral is kept >= 0 (the paper: a negative integral would delay the response to the next violation) and,
    our addition, <= λ_max / K_I (anti-windup: while λ sits at its cap the integral stops growing, so λ leaves the
    cap as soon as the violation turns). I starts at init / K_I, so λ starts at ``init`` when Δ = 0 (K_I = 0: at 0
    and the proportional term alone). ``step`` is handed η and returns log λ."""

    name = "pid"

    def __init__(self, kp: float = 0.5, ki: float = 0.1, kd: float = 0.0, init: float = 1.0,
                 max_value: float | None = None) -> None:
        for key, v in (("kp", kp), ("ki", ki), ("kd", kd)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"the PID gain {key} must be finite and >= 0, got {v}")
        self.kp, self.ki, self.kd = kp, ki, kd
        self.cap = max_value if max_value is not None else LAMBDA_CEILING
        self.integral = init / ki if ki > 0 else 0.0
        self.prev_violation: float | None = None
        self.rise = 0.0

    def step(self, log_lambda: float, violation: float, log_min: float, log_max: float) -> float:
        if not math.isfinite(violation):
            raise ValueError(f"the constraint violation J_c - d must be finite, got {violation}")
        # violation - previous violation = the episode cost's change (d is fixed), in the same units
        self.rise = 0.0 if self.prev_violation is None else max(0.0, violation - self.prev_violation)
        self.prev_violation = violation
        top = self.cap / self.ki if self.ki > 0 else 0.0
        self.integral = min(top, max(0.0, self.integral + violation))
        lam = pid_lambda(self.kp, self.ki, self.kd, violation, self.integral, self.rise)
        return min(log_max, max(log_min, math.log(lam))) if lam > 0 else log_min

    def state_dict(self) -> dict[str, Any]:
        return {"integral": self.integral, "prev_violation": self.prev_violation, "rise": self.rise}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.integral = float(state["integral"])
        self.prev_violation = None if state.get("prev_violation") is None else float(state["prev_violation"])
        self.rise = float(state.get("rise", 0.0))

    def metrics(self) -> dict[str, float]:
        return {"lagrange/pid_integral": self.integral, "lagrange/pid_rise": self.rise}


CONTROLLERS = ("gradient", "pid", "fixed")


class LagrangeMultiplier:
    """λ >= 0 for max_θ J_R s.t. J_C + d <= 0, as in algorithm-reference §2.7.

    Parameterised as η = log λ, updated by plain gradient ascent on the Lagrangian (``log_lambda_step``):

        η ← clamp(η + lr·λ·(J_c - d), log λ_min, log λ_max),   λ = e^η

    where J_c is the mean of the last ``window`` sequence costs. λ_max = ``max_value`` (the reference
    script's 5.0 by default; ``None`` = no cap below ``LAMBDA_CEILING``). λ_min = ``min_value`` (1e-3):
    the update is multiplicative in λ, so a λ that reached 0.0 (one large step down underflows e^η)
    could never move again and would silently switch the constraint off; from λ_min it climbs back
    (1/λ falls by about lr·(J_c - d) per step). In distributed runs each rank keeps its own window;
    the caller averages ``episode_cost()`` across ranks (``global_mean``) and passes the result to
    ``update`` so that every rank computes the same λ. The first ``delay_steps`` calls of ``update``
    leave λ unchanged. ``state_dict`` holds η, the step count, the window and the range of the costs
    seen, so a resumed run continues exactly.

    ``threshold_side()`` tells whether d lies outside the range of every cost observed so far (below
    it: J_c > d whatever the policy does now, λ climbs to λ_max; above it: the constraint always holds,
    λ decays towards λ_min and the cost term fades out) — usually a mis-set threshold.

    ``update(J_c, cost_scale=σ_C)`` takes the violation in units of σ_C, (J_c - d)/σ_C (PPO's
    ``--normalize.cost``, σ_C the running std of the costs): J_c, d and every metric stay in the cost
    model's raw units, so d keeps its meaning and the constraint J_c <= d is the same; only λ's step is
    measured in cost standard deviations. ``stall_warning()`` says when lr·|J_c - d|/σ_C stayed below
    ``STALL_RATE`` for ``STALL_STEPS`` updates in a row: λ = 1 then moves by under 0.1 % a step.

    ``controller``: how λ moves once J_c is known (a ``LambdaController``): ``GradientController(lr)`` above (the
    default), ``PIDController`` (Stooke et al. 2020) or ``FixedController``; the stall warning belongs to the
    gradient controller.
    """

    def __init__(
        self,
        init: float = 1.0,
        lr: float = 0.1,
        max_value: float | None = 5.0,
        delay_steps: int = 0,
        threshold: float = 0.0,
        window: int = 128,
        min_value: float = 1e-3,
        controller: LambdaController | None = None,
    ) -> None:
        if not (math.isfinite(init) and init > 0):
            raise ValueError(f"initial λ must be finite and > 0 (it is parameterised as log λ), got {init}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the λ learning rate must be finite and > 0, got {lr}")
        if not (math.isfinite(min_value) and min_value > 0):
            raise ValueError(f"min_value must be finite and > 0, got {min_value}")
        if max_value is not None and not (math.isfinite(max_value) and max_value > min_value):
            raise ValueError(f"max_value must be finite and > min_value = {min_value} (or None), got {max_value}")
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold d must be finite, got {threshold}")
        self.lr, self.max_value, self.min_value = lr, max_value, min_value
        self.delay_steps, self.threshold = delay_steps, threshold
        self.log_min = math.log(min_value)
        self.log_max = math.log(max_value if max_value is not None else max(LAMBDA_CEILING, 2 * min_value))
        self.log_lambda = self._bounded(math.log(init))
        self.step = 0
        self.costs: deque[float] = deque(maxlen=window)
        self.cost_min, self.cost_max = math.inf, -math.inf  # range of every cost observed
        self._last_episode_cost: float | None = None
        self.cost_scale = 1.0  # σ_C of the last update (1: raw units)
        self.small_steps = 0  # updates in a row with lr·|J_c - d|/σ_C < STALL_RATE
        self.controller = controller if controller is not None else GradientController(lr)

    def _bounded(self, eta: float) -> float:
        return min(self.log_max, max(self.log_min, eta))

    @property
    def lam(self) -> float:
        """λ = e^η as a python float (detached by construction; λ_min <= λ <= λ_max)."""
        return math.exp(self.log_lambda)

    def observe(self, costs: torch.Tensor) -> None:
        """Append sequence costs C(x, y), shape [B], to the window (oldest dropped beyond it)."""
        values = costs.detach().float().flatten().cpu().tolist()
        self.costs.extend(values)
        if values:
            self.cost_min, self.cost_max = min(self.cost_min, *values), max(self.cost_max, *values)

    def episode_cost(self) -> float:
        """Local J_c: mean of this rank's window (``nan`` when nothing was observed yet)."""
        return sum(self.costs) / len(self.costs) if self.costs else float("nan")

    def update(self, global_episode_cost: float | None = None, cost_scale: float = 1.0) -> float:
        """One ascent step on η with J_c = ``global_episode_cost`` (or the local window mean) and the
        violation (J_c - d)/``cost_scale``.

        Counts the step; does nothing to η while step < ``delay_steps``. Returns the new λ.
        """
        if not (math.isfinite(cost_scale) and cost_scale > 0):
            raise ValueError(f"cost_scale must be finite and > 0, got {cost_scale}")
        jc = self.episode_cost() if global_episode_cost is None else float(global_episode_cost)
        self._last_episode_cost, self.cost_scale = jc, cost_scale
        if self.step >= self.delay_steps:
            if not math.isfinite(jc):
                raise ValueError(f"episode cost J_c must be finite to update λ, got {jc} (observe costs first)")
            violation = jc - self.threshold
            if cost_scale != 1.0:  # raw units stay bit-identical
                violation = violation / cost_scale
            gradient = self.controller.name == "gradient"
            self.small_steps = self.small_steps + 1 if gradient and self.lr * abs(violation) < STALL_RATE else 0
            self.log_lambda = self.controller.step(self.log_lambda, violation, self.log_min, self.log_max)
        self.step += 1
        return self.lam

    def stall_warning(self) -> str | None:
        """One line when λ barely moves (``small_steps`` >= ``STALL_STEPS``), or None."""
        if self.small_steps < STALL_STEPS or self._last_episode_cost is None:
            return None
        jc = self._last_episode_cost
        rate = self.lr * abs(jc - self.threshold) / self.cost_scale
        units = "" if self.cost_scale == 1.0 else f" / σ_C = {self.cost_scale:.3g}"
        return (f"λ barely moves: lr·|J_c - d|{units} = {rate:.2g} < {STALL_RATE:g} for {self.small_steps} updates "
                f"(J_c = {jc:.4g}, d = {self.threshold:g}), so λ = 1 would move by under 0.1 % a step. Unless J_c "
                "already sits at d, the costs are small for this lr: scale them (ppo --normalize.cost true: steps "
                "in cost standard deviations) or raise lagrange.lr")

    def threshold_side(self) -> int:
        """-1 when d is below every cost observed so far, +1 when above every one, 0 otherwise (or none seen)."""
        if self.cost_min > self.cost_max:  # nothing observed
            return 0
        return -1 if self.threshold < self.cost_min else (1 if self.threshold > self.cost_max else 0)

    def threshold_warning(self) -> str | None:
        """One line saying what a threshold outside the observed cost range does, or None."""
        side = self.threshold_side()
        if side == 0:
            return None
        seen = f"[{self.cost_min:.4g}, {self.cost_max:.4g}]"
        if side < 0:
            return (f"the cost threshold d = {self.threshold:g} is below every episode cost seen so far {seen}: "
                    f"J_c > d whatever the policy does now, so λ will climb to its cap "
                    f"{self.max_value if self.max_value is not None else LAMBDA_CEILING:g}")
        return (f"the cost threshold d = {self.threshold:g} is above every episode cost seen so far {seen}: the "
                f"constraint always holds, so λ will decay to min_value = {self.min_value:g} and the cost term "
                "fades out")

    def metrics(self) -> dict[str, float]:
        """``lagrange/*`` metrics; episode cost is the J_c of the last ``update`` (else local).

        ``lagrange/threshold_outside_costs`` is ``threshold_side()``: -1 / 0 / +1."""
        jc = self._last_episode_cost if self._last_episode_cost is not None else self.episode_cost()
        return {
            "lagrange/lambda": self.lam,
            "lagrange/log_lambda": self.log_lambda,
            "lagrange/episode_cost": jc,
            "lagrange/threshold": self.threshold,
            "lagrange/violation": jc - self.threshold,
            "lagrange/threshold_outside_costs": float(self.threshold_side()),
        } | self.controller.metrics()

    def state_dict(self) -> dict[str, Any]:
        """η, step, window contents, observed cost range (and the J_c last used) — everything to resume."""
        return {
            "log_lambda": self.log_lambda,
            "step": self.step,
            "costs": list(self.costs),
            "cost_range": [self.cost_min, self.cost_max],
            "last_episode_cost": self._last_episode_cost,
            "cost_scale": self.cost_scale,
            "small_steps": self.small_steps,
        } | ({"controller": self.controller.state_dict()} if self.controller.name != "gradient" else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; hyper-parameters (lr, bounds, delay, d, window) stay this object's
        (η is clamped into this object's bounds)."""
        self.log_lambda = self._bounded(float(state["log_lambda"]))
        self.step = int(state["step"])
        self.costs.clear()
        self.costs.extend(float(c) for c in state["costs"])
        self.cost_min, self.cost_max = (float(v) for v in state.get("cost_range", (math.inf, -math.inf)))
        self._last_episode_cost = state.get("last_episode_cost")
        self.cost_scale = float(state.get("cost_scale", 1.0))
        self.small_steps = int(state.get("small_steps", 0))
        if "controller" in state:
            self.controller.load_state_dict(state["controller"])


def global_mean(value: float, accelerator: Any = None) -> float:
    """Mean of a python scalar across processes (identity on one process or without accelerate).

    ``accelerator``: an ``accelerate.Accelerator``; with ``num_processes > 1`` uses
    ``accelerator.reduce(tensor, "mean")`` so every rank gets the same value.
    """
    if accelerator is None or getattr(accelerator, "num_processes", 1) <= 1:
        return float(value)
    tensor = torch.tensor(float(value), dtype=torch.float32, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="mean").item())


def global_means(metrics: dict[str, Any], accelerator: Any = None) -> dict[str, Any]:
    """``metrics`` with every number averaged across processes (one all-reduce; identity on one process).

    Metrics are computed on each rank's share of the batch; logging rank 0's alone reports a noisier,
    biased-by-shard value. Booleans and strings pass through; every rank must call this (a collective)."""
    if accelerator is None or getattr(accelerator, "num_processes", 1) <= 1:
        return metrics
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(values, reduction="mean").tolist()
    return metrics | dict(zip(keys, reduced))

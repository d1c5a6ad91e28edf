"""Pure torch objectives of Safe RLHF (algorithm-reference §1, §2, §4). Equations: docs/maths.md.

Every loss returns ``(loss, diagnostics)``: ``loss`` a 0-d tensor carrying gradients,
``diagnostics`` a ``dict[str, float]`` of detached python floats (metric names without namespace;
the recipe prefixes ``reward/``, ``cost/``, ``train/``...).

Shapes: B batch, T sequence (or response) length, V vocabulary. Masks are bool or 0/1.

Sign convention (algorithm-reference §1): **cost > 0 means unsafe, cost <= 0 means safe.**

Soft targets (``annotate export --aggregation soft``; docs/annotate.md, "Aggregation and disagreement"): when
annotators disagree a pair carries p = P(chosen ≻ rejected), the vote share, and each response's safety label a
confidence w = the share of labels agreeing with it. `soft_reward_loss` / `soft_cost_loss` (and
`mixed_score_loss` given them) use the Bradley-Terry loss with target p, -[p·log σ(Δ) + (1 - p)·log σ(-Δ)], and
weight each cost sign term by its w; p = 1 and w = 1 give exactly `reward_loss` / `cost_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saferlhf.rl import masked_mean, sequence_token_mean

__all__ = [
    "reward_loss",
    "cost_loss",
    "soft_reward_loss",
    "soft_cost_loss",
    "mixed_score_loss",
    "safedpo_loss",
    "sft_loss",
    "sequence_logprobs",
    "summed_response_logprobs",
    "dpo_loss",
    "ppo_actor_loss",
    "pairwise_ppo_loss",
    "critic_loss",
    "actor_ptx_objective",
    "entropy_from_logits",
]

Diagnostics = dict[str, float]


def _f(x: torch.Tensor) -> float:
    return float(x.detach().float().mean().item()) if x.numel() else float("nan")


def _sequence_then_batch_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over sequences (with >= 1 token) of the per-sequence token mean: [B, T] -> 0-d."""
    has_tokens = mask.bool().any(dim=-1)
    return masked_mean(sequence_token_mean(x, mask), has_tokens)


# --------------------------------------------------------------------------- score models


def reward_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, l2_coef: float = 0.001, *,
                target: torch.Tensor | None = None) -> tuple[torch.Tensor, Diagnostics]:
    """Bradley-Terry reward loss (algorithm-reference §1).

    r_chosen = r_w [B], r_rejected = r_l [B] (end scores of the better / worse response):

        L_R = -mean_b log σ(r_w - r_l) + μ·mean_b (r_w² + r_l²) / 2,   μ = ``l2_coef``

    ``target`` p [B] (soft labels, `soft_reward_loss`): log σ(r_w - r_l) becomes `soft_bt_loglik`.

    Diagnostics: loss, accuracy = P(r_w > r_l), reward_chosen, reward_rejected, margin = mean(r_w - r_l)
    (and target_mean with a target).
    """
    margin = r_chosen - r_rejected
    loglik = F.logsigmoid(margin) if target is None else soft_bt_loglik(margin, target)
    loss = -loglik.mean() + l2_coef * (r_chosen**2 + r_rejected**2).mean() / 2
    diagnostics = {
        "loss": _f(loss),
        "accuracy": _f((margin > 0).float()),
        "reward_chosen": _f(r_chosen),
        "reward_rejected": _f(r_rejected),
        "margin": _f(margin),
    }
    return loss, diagnostics if target is None else diagnostics | {"target_mean": _f(target)}


def cost_loss(
    c_safer: torch.Tensor,
    c_unsafer: torch.Tensor,
    safer_is_safe: torch.Tensor | None,
    unsafer_is_safe: torch.Tensor | None,
    l2_coef: float = 0.001,
    has_labels: torch.Tensor | None = None,
    *,
    target: torch.Tensor | None = None,
    safer_conf: torch.Tensor | None = None,
    unsafer_conf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Diagnostics]:
    """Cost-model loss with ranking and sign terms (algorithm-reference §1).

    c_safer = c_s [B], c_unsafer = c_u [B]; safer_is_safe, unsafer_is_safe [B] bool (or None);
    ξ = +1 if the response is labelled unsafe, -1 if safe; m_b = ``has_labels`` [B] (default: all
    labelled when labels are given). Per example

        ℓ_b = log σ(c_u - c_s) + m_b·[log σ(ξ_s·c_s) + log σ(ξ_u·c_u)]
        L_C = -mean_b ℓ_b + μ·mean_b (c_s² + c_u²) / 2

    i.e. the L2 term averages c² over all 2B scores. With labels None (e.g. HH-RLHF) the sign terms
    are dropped (ranking only). The sign terms push cost > 0 for unsafe and cost < 0 for safe.

    Soft labels (`soft_cost_loss`): ``target`` p [B] turns the ranking term into `soft_bt_loglik`, and
    ``safer_conf`` / ``unsafer_conf`` w [B] weight the two sign terms (None: the hard term).

    Diagnostics: loss, accuracy = P(c_u > c_s), sign_accuracy = share of labelled responses with
    (cost > 0) == unsafe (``nan`` when none is labelled), cost_safer, cost_unsafer (and target_mean with a
    target).
    """
    if (safer_is_safe is None) != (unsafer_is_safe is None):
        raise ValueError("give both safety labels or neither")
    margin = c_unsafer - c_safer
    per_example = F.logsigmoid(margin) if target is None else soft_bt_loglik(margin, target)
    sign_accuracy = float("nan")
    if safer_is_safe is not None and unsafer_is_safe is not None:
        labelled = torch.ones_like(c_safer, dtype=torch.bool) if has_labels is None else has_labels.bool()
        sign_terms = (_weighted_sign_terms(c_safer, safer_is_safe, safer_conf)
                      + _weighted_sign_terms(c_unsafer, unsafer_is_safe, unsafer_conf))
        per_example = per_example + torch.where(labelled, sign_terms, torch.zeros_like(sign_terms))
        if labelled.any():
            correct_s = (c_safer > 0) == ~safer_is_safe.bool()
            correct_u = (c_unsafer > 0) == ~unsafer_is_safe.bool()
            sign_accuracy = _f(torch.cat([correct_s[labelled], correct_u[labelled]]).float())
    loss = -per_example.mean() + l2_coef * (c_safer**2 + c_unsafer**2).mean() / 2
    diagnostics = {
        "loss": _f(loss),
        "accuracy": _f((margin > 0).float()),
        "sign_accuracy": sign_accuracy,
        "cost_safer": _f(c_safer),
        "cost_unsafer": _f(c_unsafer),
    }
    return loss, diagnostics if target is None else diagnostics | {"target_mean": _f(target)}


def soft_bt_loglik(margin: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example Bradley-Terry log-likelihood with a soft target: margin Δ [B], target p [B] in [0, 1] ->
    p·log σ(Δ) + (1 - p)·log σ(-Δ) [B] (p = 1: exactly log σ(Δ))."""
    p = target.to(margin.dtype)
    return p * F.logsigmoid(margin) + (1.0 - p) * F.logsigmoid(-margin)


def soft_reward_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, target: torch.Tensor,
                     l2_coef: float = 0.001) -> tuple[torch.Tensor, Diagnostics]:
    """`reward_loss` with soft targets: r_chosen = r_w [B], r_rejected = r_l [B], target p_b = P(w ≻ l) [B]:

        L_R = -mean_b [p_b·log σ(r_w - r_l) + (1 - p_b)·log σ(r_l - r_w)] + μ·mean_b (r_w² + r_l²) / 2

    Minimised at σ(r_w - r_l) = p_b. p = 1 everywhere gives `reward_loss` bit for bit. Diagnostics: those of
    `reward_loss` plus target_mean.
    """
    return reward_loss(r_chosen, r_rejected, l2_coef, target=target)


def _weighted_sign_terms(c: torch.Tensor, is_safe: torch.Tensor, conf: torch.Tensor | None) -> torch.Tensor:
    """w·log σ(ξ·c) [B], ξ = +1 unsafe, -1 safe; w = ``conf`` (None: 1, the unweighted term)."""
    term = F.logsigmoid((1.0 - 2.0 * is_safe.to(c.dtype)) * c)
    return term if conf is None else conf.to(c.dtype) * term


def soft_cost_loss(
    c_safer: torch.Tensor,
    c_unsafer: torch.Tensor,
    safer_is_safe: torch.Tensor | None,
    unsafer_is_safe: torch.Tensor | None,
    target: torch.Tensor,
    safer_conf: torch.Tensor | None = None,
    unsafer_conf: torch.Tensor | None = None,
    l2_coef: float = 0.001,
    has_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Diagnostics]:
    """`cost_loss` with soft targets: target p_b = P(s ≻ u) [B] (s the response named safer), and the
    confidences w_s, w_u [B] of the two safety labels (None: 1). Per example

        ℓ_b = p_b·log σ(c_u - c_s) + (1 - p_b)·log σ(c_s - c_u) + m_b·[w_s·log σ(ξ_s·c_s) + w_u·log σ(ξ_u·c_u)]
        L_C = -mean_b ℓ_b + μ·mean_b (c_s² + c_u²) / 2

    p = 1 and w = 1 give `cost_loss` bit for bit. Diagnostics: those of `cost_loss` plus target_mean.
    """
    return cost_loss(c_safer, c_unsafer, safer_is_safe, unsafer_is_safe, l2_coef, has_labels, target=target,
                     safer_conf=safer_conf, unsafer_conf=unsafer_conf)


def mixed_score_loss(
    kind: str,
    s_chosen: torch.Tensor,
    s_rejected: torch.Tensor,
    pair_weight: torch.Tensor,
    c_single: torch.Tensor,
    single_unsafe: torch.Tensor,
    single_weight: torch.Tensor,
    l2_coef: float = 0.001,
    chosen_is_safe: torch.Tensor | None = None,
    rejected_is_safe: torch.Tensor | None = None,
    has_labels: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    chosen_conf: torch.Tensor | None = None,
    rejected_conf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Diagnostics]:
    """Score-model loss over a MIX of ranked pairs [B] and single labelled responses [S], with per-example
    weights (a source's weight, `saferlhf score-model --sources`).

    Pair b (chosen = better / safer): reward ℓ_b = -log σ(r_w - r_l); cost ℓ_b = -[log σ(c_u - c_s)
    + m_b·(log σ(ξ_s c_s) + log σ(ξ_u c_u))] as `cost_loss`. Single response i (cost only: a per-response
    safety label, the paper's classification term alone): ℓ_i = -log σ(ξ_i c_i), ξ = +1 unsafe, -1 safe.

        L = (Σ_b w_b ℓ_b + Σ_i w_i ℓ_i) / (Σ_b w_b + Σ_i w_i) + μ·mean(every score²)

    With singles absent and all weights 1 this is exactly `reward_loss` / `cost_loss` (the L2 mean over the 2B
    scores is mean_b (s_w² + s_l²) / 2). Soft targets (``target`` p [B], ``chosen_conf`` / ``rejected_conf`` w [B],
    None = hard labels): the pair terms of `soft_reward_loss` / `soft_cost_loss`. Diagnostics: loss, accuracy (pairs; NaN without pairs),
    sign_accuracy (cost: labelled responses of pairs and singles), pairs, singles.
    """
    n_pairs, n_single = s_chosen.numel(), c_single.numel()
    if kind != "cost" and n_single:
        raise ValueError("single labelled responses train cost models only")
    terms, weights, signs = [], [], []
    if n_pairs:
        margin = (s_rejected - s_chosen) if kind == "cost" else (s_chosen - s_rejected)
        per_pair = F.logsigmoid(margin) if target is None else soft_bt_loglik(margin, target)
        if kind == "cost" and chosen_is_safe is not None and rejected_is_safe is not None:
            labelled = torch.ones_like(s_chosen, dtype=torch.bool) if has_labels is None else has_labels.bool()
            sign_terms = (_weighted_sign_terms(s_chosen, chosen_is_safe, chosen_conf)
                          + _weighted_sign_terms(s_rejected, rejected_is_safe, rejected_conf))
            per_pair = per_pair + torch.where(labelled, sign_terms, torch.zeros_like(sign_terms))
            signs += [((s_chosen > 0) == ~chosen_is_safe.bool())[labelled],
                      ((s_rejected > 0) == ~rejected_is_safe.bool())[labelled]]
        terms.append(-per_pair)
        weights.append(pair_weight.to(s_chosen.dtype))
    if n_single:
        xi = 2.0 * single_unsafe.to(c_single.dtype) - 1.0
        terms.append(-F.logsigmoid(xi * c_single))
        weights.append(single_weight.to(c_single.dtype))
        signs.append((c_single > 0) == single_unsafe.bool())
    if not terms:
        raise ValueError("mixed_score_loss: an empty batch")
    loss_terms, w = torch.cat(terms), torch.cat(weights)
    scores = torch.cat([s_chosen, s_rejected, c_single])
    loss = (w * loss_terms).sum() / w.sum() + l2_coef * (scores ** 2).mean()
    sign = torch.cat(signs) if signs else torch.zeros(0, dtype=torch.bool)
    return loss, {
        "loss": _f(loss),
        "accuracy": _f(((s_rejected > s_chosen) if kind == "cost" else (s_chosen > s_rejected)).float())
        if n_pairs else float("nan"),
        "sign_accuracy": _f(sign.float()) if sign.numel() else float("nan"),
        "pairs": float(n_pairs),
        "singles": float(n_single),
    }


# --------------------------------------------------------------------------- language modelling


def sft_loss(logits: torch.Tensor, labels: torch.Tensor,
             positions: torch.Tensor | None = None) -> tuple[torch.Tensor, Diagnostics]:
    """Token-mean next-token cross-entropy with the causal shift.

    logits [B, T, V] predict labels [B, T] one step ahead (position t predicts labels[t + 1]);
    label -100 is ignored. L = -Σ_valid log π(y_{t+1} | y_≤t) / n_tokens (0 when n_tokens = 0).
    With ``positions`` ([B, T] bool, `saferlhf.batching.label_positions`: the positions whose logits were
    computed), logits are [K, V] for the K True positions in row-major order, and the k-th predicts the label
    one step after the k-th True position: the same loss when every labelled position is among them.
    Diagnostics: loss, n_tokens.
    """
    if positions is None:
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    else:
        shift_logits, shift_labels = logits, labels[:, 1:][positions[:, :-1]]
    shift_logits = shift_logits.float().reshape(-1, logits.shape[-1])
    shift_labels = shift_labels.reshape(-1)
    n_tokens = (shift_labels != -100).sum()
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    loss = total / n_tokens.clamp(min=1)
    return loss, {"loss": _f(loss), "n_tokens": float(n_tokens.item())}


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log π(input_ids[:, t+1] | input_ids[:, ≤t]): logits [B, T, V], input_ids [B, T] -> [B, T-1].

    Computed in float32 as gather(logits) - logsumexp(logits) (= log_softmax then gather).
    """
    shifted = logits[:, :-1].float()
    targets = input_ids[:, 1:].unsqueeze(-1)
    return shifted.gather(-1, targets).squeeze(-1) - torch.logsumexp(shifted, dim=-1)


def summed_response_logprobs(logp: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """log π(y | x) = Σ_t over response tokens of log π(y_t): logp [B, T-1], response_mask [B, T-1] -> [B].

    ``response_mask`` is aligned with ``logp`` (i.e. with input_ids[:, 1:]): 1 where the predicted
    token is a response token (every one of them, the first included), 0 for prompt and padding.
    """
    return torch.where(response_mask.bool(), logp, torch.zeros_like(logp)).sum(dim=-1)


def dpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Diagnostics]:
    """DPO (algorithm-reference §4); all inputs [B] summed response log-probs.

        r̂_w = β·(log π(y_w) - log π_ref(y_w)),   r̂_l = β·(log π(y_l) - log π_ref(y_l))
        L = -mean_b log σ(r̂_w - r̂_l)

    ``target`` p [B] (soft labels: the share of annotators preferring y_w): log σ(m) becomes `soft_bt_loglik`,
    p·log σ(m) + (1 - p)·log σ(-m) (conservative DPO's loss with a per-pair p). Without it the hard loss above.
    Diagnostics: loss, accuracy = P(r̂_w > r̂_l), chosen_reward, rejected_reward, margin (and target_mean).
    """
    chosen = beta * (policy_chosen_logp - ref_chosen_logp)
    rejected = beta * (policy_rejected_logp - ref_rejected_logp)
    margin = chosen - rejected
    loss = -(F.logsigmoid(margin) if target is None else soft_bt_loglik(margin, target)).mean()
    diagnostics = _dpo_diagnostics(loss, chosen, rejected)
    return loss, diagnostics if target is None else diagnostics | {"target_mean": _f(target)}


def _dpo_diagnostics(loss: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> Diagnostics:
    margin = chosen - rejected
    return {"loss": _f(loss), "accuracy": _f((margin > 0).float()), "chosen_reward": _f(chosen),
            "rejected_reward": _f(rejected), "margin": _f(margin)}


def safedpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    chosen_unsafe: torch.Tensor,
    rejected_unsafe: torch.Tensor,
    beta: float = 0.1,
    delta: float = 2.0,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Diagnostics]:
    """SafeDPO (Kim et al. 2025, arXiv 2505.20065) on pairs already in safety-aware order (`safedpo_order`);
    log-probs [B] as for `dpo_loss`, ``*_unsafe`` [B] bool (h = 1[c(x, y) > 0]):

        m = β·[(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))]
        L = -mean_b log σ(m - Δ·(h_l - h_w))

    Δ is the safety margin: a safe winner over an unsafe loser must win by Δ more. Δ = 0 is DPO on the
    reordered pairs. ``target`` p [B]: soft labels as in `dpo_loss` (on m - Δ·(h_l - h_w)).
    Diagnostics: those of `dpo_loss` plus the share of pairs with the offset.
    """
    chosen = beta * (policy_chosen_logp - ref_chosen_logp)
    rejected = beta * (policy_rejected_logp - ref_rejected_logp)
    offset = delta * (rejected_unsafe.float() - chosen_unsafe.float())
    shifted = chosen - rejected - offset
    loss = -(F.logsigmoid(shifted) if target is None else soft_bt_loglik(shifted, target)).mean()
    diagnostics = _dpo_diagnostics(loss, chosen, rejected) | {"offset_share": _f((offset != 0).float())}
    return loss, diagnostics if target is None else diagnostics | {"target_mean": _f(target)}


# --------------------------------------------------------------------------- PPO


def ppo_actor_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, Diagnostics]:
    """PPO clipped surrogate (algorithm-reference §2.5); all inputs [B, T] over response tokens.

        ρ_t = exp(log π_θ(a_t) - log π_old(a_t))
        ℓ_t = -min(ρ_t·Ã_t, clip(ρ_t, 1-ε, 1+ε)·Ã_t)
        L   = mean over sequences of (token mean of ℓ_t over the sequence's valid tokens)

    (sequences without valid tokens are left out of the outer mean). Pass Ã already combined
    (``rl.combine_advantages``) and detached. Diagnostics (token means over all valid tokens):
    loss; clip_frac = share where the clipped term binds (clip(ρ)Ã < ρÃ, i.e. ρ > 1+ε with Ã > 0
    or ρ < 1-ε with Ã < 0); approx_kl = mean((ρ-1) - log ρ) (k3 estimate of KL(π_old‖π_θ));
    ratio_mean = mean ρ.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = _sequence_then_batch_mean(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        diagnostics = {
            "loss": _f(loss),
            "clip_frac": _f(masked_mean((clipped < unclipped).float(), mask)),
            "approx_kl": _f(masked_mean((ratio - 1.0) - log_ratio, mask)),
            "ratio_mean": _f(masked_mean(ratio, mask)),
        }
    return loss, diagnostics


def pairwise_ppo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    scores: torch.Tensor,
    clip_eps: float = 0.2,
    joint_clip: bool = False,
) -> tuple[torch.Tensor, Diagnostics]:
    """Pairwise PPO (P3O, Wu et al. 2023, arXiv 2310.00212): inputs [B, 2], two responses per prompt, with
    log π(y_i|x) summed over each response (trajectory-wise), and KL-regularised scores s_i (see
    ``rl.pairwise_scores``). Trajectory ratios ρ_i = π_θ(y_i|x) / π_old(y_i|x), the difference Δ = s_1 - s_2.

        separate clip:  L = -mean_b Σ_i min(ρ_i·A_i, clip(ρ_i, 1±ε)·A_i),  A_1 = Δ/2, A_2 = -Δ/2
        joint clip:     L = -mean_b min(ρ·Δ, clip(ρ, 1±ε)·Δ) / 2,          ρ = ρ_1 / ρ_2

    At ρ = 1 both give the policy gradient E[Δ·∇(log π(y_1) - log π(y_2)) / 2], which is invariant to adding
    a prompt-dependent constant to the scores (no critic, no baseline needed). Diagnostics: loss, clip_frac
    (share of the terms where the clip binds), ratio_mean, score_gap = mean |Δ|.
    """
    delta = scores[:, 0] - scores[:, 1]
    log_ratio = logp - old_logp
    if joint_clip:
        ratio = torch.exp(log_ratio[:, 0] - log_ratio[:, 1])
        unclipped, clipped = ratio * delta, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * delta
        loss = -torch.min(unclipped, clipped).mean() / 2
    else:
        ratio = torch.exp(log_ratio)
        adv = torch.stack([delta, -delta], 1) / 2
        unclipped, clipped = ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
        loss = -torch.min(unclipped, clipped).sum(1).mean()
    with torch.no_grad():
        diagnostics = {"loss": _f(loss), "clip_frac": _f((clipped < unclipped).float()), "ratio_mean": _f(ratio),
                       "score_gap": _f(delta.abs())}
    return loss, diagnostics


def critic_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 5.0,
) -> tuple[torch.Tensor, Diagnostics]:
    """Clipped value loss (algorithm-reference §2.6); all inputs [B, T] over response tokens.

        V^clip_t = V_old,t + clip(V_t - V_old,t, -c, c)
        L = ½ · mean over sequences of token mean of max((V_t - G_t)², (V^clip_t - G_t)²)

    (same averaging as ``ppo_actor_loss``). Diagnostics: loss, value_clip_frac = share of valid
    tokens where the clipped error is the larger one (the active term).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err_unclipped = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * _sequence_then_batch_mean(torch.max(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        diagnostics = {
            "loss": _f(loss),
            "value_clip_frac": _f(masked_mean((err_clipped > err_unclipped).float(), mask)),
        }
    return loss, diagnostics


def actor_ptx_objective(rl_loss: torch.Tensor, ptx_loss: torch.Tensor, ptx_coef: float) -> torch.Tensor:
    """The actor's loss when a PTX (supervised) term is mixed in (algorithm-reference §2.8):

        L = (L_RL + c·L_PTX) / 2,   c = ``ptx_coef``

    as in the reference, where the RL backward and the PTX backward (of c·L_PTX) are two micro-steps
    of one DeepSpeed gradient-accumulation window of 2 (each scaled by 1/2, one clipped optimiser
    step). Without PTX the actor loss is L_RL alone (accumulation window 1).
    """
    return (rl_loss + ptx_coef * ptx_loss) / 2


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked token-mean entropy: logits [B, T, V], mask [B, T] -> 0-d tensor (keeps gradients).

    H_t = logsumexp(z_t) - Σ_v softmax(z_t)_v·z_t,v = -Σ_v p_v log p_v, averaged over all valid
    tokens of the batch (computed in float32; -inf logits, e.g. banned tokens, are allowed).
    """
    z = logits.float()
    probs = torch.softmax(z, dim=-1)
    z_finite = torch.where(torch.isneginf(z), torch.zeros_like(z), z)  # p = 0 there; avoids 0·(-inf)
    entropy = torch.logsumexp(z, dim=-1) - (probs * z_finite).sum(dim=-1)
    return masked_mean(entropy, mask)

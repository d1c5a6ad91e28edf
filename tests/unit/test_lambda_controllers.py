"""λ controllers (issue 25 §2): the gradient controller is today's multiplier bit for bit, the PID-Lagrangian
(Stooke et al. 2020) against a hand-computed sequence and a naive loop, its integral clamp and anti-windup, fixed λ,
exact resume, and `ppo --lambda.controller pid` (an alias of --lagrange.*)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from saferlhf.rl import (FixedController, GradientController, LagrangeMultiplier, PIDController, log_lambda_step,
                         pid_lambda)


def _run(m: LagrangeMultiplier, costs: list[float]) -> list[float]:
    out = []
    for c in costs:
        m.observe(torch.tensor([c]))
        out.append(m.update(c))
    return out


def test_the_gradient_controller_is_the_old_update_bit_for_bit():
    rng = random.Random(0)
    costs = [rng.uniform(-2, 3) for _ in range(50)]
    eta, lams = math.log(1.0), []
    for c in costs:  # the old rule, by hand
        eta = log_lambda_step(eta, 0.1, c - 0.5, math.log(1e-3), math.log(5.0))
        lams.append(math.exp(eta))
    assert _run(LagrangeMultiplier(lr=0.1, threshold=0.5, window=1), costs) == lams
    assert _run(LagrangeMultiplier(lr=0.1, threshold=0.5, window=1, controller=GradientController(0.1)), costs) == lams
    m = LagrangeMultiplier(threshold=0.5, window=1)
    _run(m, costs[:3])
    assert "lagrange/pid_integral" not in m.metrics() and "controller" not in m.state_dict()  # nothing new logged


def test_pid_by_hand():
    """kp 0.5, ki 0.1, kd 1, init 1 (I0 = 10), d = 0, window 1: J_c = 2, 3, -1."""
    m = LagrangeMultiplier(threshold=0.0, window=1, max_value=5.0,
                           controller=PIDController(kp=0.5, ki=0.1, kd=1.0, init=1.0, max_value=5.0))
    lams = _run(m, [2.0, 3.0, -1.0])
    # step 1: Δ 2, I 12, ∂ 0 (no previous): 1 + 1.2 = 2.2; step 2: Δ 3, I 15, ∂ 1: 1.5 + 1.5 + 1 = 4.0
    # step 3: Δ -1, I 14, ∂ 0: -0.5 + 1.4 = 0.9
    assert lams == pytest.approx([2.2, 4.0, 0.9])
    assert m.metrics()["lagrange/pid_integral"] == pytest.approx(14.0)
    assert pid_lambda(0.5, 0.1, 1.0, -1.0, 14.0, 0.0) == pytest.approx(0.9)
    assert pid_lambda(1.0, 0.0, 0.0, -3.0, 0.0, 0.0) == 0.0  # (.)+


def test_pid_against_a_naive_loop_with_the_bounds():
    rng = random.Random(3)
    costs = [rng.uniform(-3, 4) for _ in range(200)]
    kp, ki, kd, d, lo, hi = 0.4, 0.2, 0.3, 0.5, 1e-3, 5.0
    integral, prev, want = 1.0 / ki, None, []
    for c in costs:
        v = c - d
        rise = 0.0 if prev is None else max(0.0, v - prev)
        prev = v
        integral = min(hi / ki, max(0.0, integral + v))
        lam = max(0.0, kp * v + ki * integral + kd * rise)
        want.append(min(hi, max(lo, lam)))
    m = LagrangeMultiplier(threshold=d, window=1, max_value=hi, controller=PIDController(kp, ki, kd, 1.0, hi))
    assert _run(m, costs) == pytest.approx(want, rel=1e-9)


def test_pid_integral_stays_non_negative_and_does_not_wind_up_at_the_cap():
    m = LagrangeMultiplier(threshold=0.0, window=1, max_value=5.0,
                           controller=PIDController(kp=0.0, ki=0.1, kd=0.0, init=1.0, max_value=5.0))
    _run(m, [10.0] * 100)  # a long violation: λ at the cap, the integral held at cap / ki
    assert m.lam == pytest.approx(5.0) and m.controller.integral == pytest.approx(50.0)
    lams = _run(m, [-1.0] * 3)  # the violation turns: λ leaves the cap at once
    assert lams[0] < 5.0 and lams == sorted(lams, reverse=True)
    _run(m, [-100.0] * 5)
    assert m.controller.integral == 0.0 and m.lam == pytest.approx(1e-3)  # floor, integral not negative


def test_fixed_keeps_lambda_and_every_controller_resumes_exactly():
    m = LagrangeMultiplier(init=2.0, window=4, controller=FixedController())
    assert _run(m, [5.0, -5.0, 9.0]) == pytest.approx([2.0, 2.0, 2.0])
    rng = random.Random(1)
    costs = [rng.uniform(-2, 3) for _ in range(40)]
    for make in (lambda: GradientController(0.1), lambda: PIDController(0.5, 0.1, 0.5, 1.0, 5.0), FixedController):
        whole = LagrangeMultiplier(window=8, controller=make())
        full = _run(whole, costs)
        first = LagrangeMultiplier(window=8, controller=make())
        _run(first, costs[:17])
        second = LagrangeMultiplier(window=8, controller=make())
        second.load_state_dict(first.state_dict())
        assert full[17:] == _run(second, costs[17:])


@pytest.mark.parametrize("bad", [{"kp": -1.0}, {"ki": float("nan")}, {"kd": float("inf")}])
def test_bad_gains_are_refused(bad):
    with pytest.raises(ValueError, match="PID gain"):
        PIDController(**({"kp": 0.5, "ki": 0.1, "kd": 0.0} | bad))


def test_ppo_takes_the_controller_under_lambda_or_lagrange(tmp_path):
    from saferlhf.config import parse
    from saferlhf.recipes.ppo import PPOConfig, lambda_controller

    cfg = parse(PPOConfig, ["--lambda.controller", "pid", "--lambda.kp", "0.2", "--lagrange.ki", "0.05"])
    assert (cfg.lagrange.controller, cfg.lagrange.kp, cfg.lagrange.ki) == ("pid", 0.2, 0.05)
    c = lambda_controller(cfg.lagrange)
    assert isinstance(c, PIDController) and (c.kp, c.ki, c.kd) == (0.2, 0.05, 0.0)
    assert isinstance(lambda_controller(parse(PPOConfig, []).lagrange), GradientController)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("lambda:\n  controller: fixed\n")
    assert parse(PPOConfig, ["--config", str(yaml_file)]).lagrange.controller == "fixed"

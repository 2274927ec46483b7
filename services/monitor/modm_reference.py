"""MoDM's two allocation rules, kept as references to compare against.

Both compute a target number of large GPUs from the window's rates and the pools' job times
(`PoolProfile`: a GPU serves `T = 60 B / lat` full runs a minute, B its batch capacity, `lat`
overhead + the model's own steps x seconds per step), then move towards it with the same PID
step:
`e = target - current`, `I += e`, `D = e - e_previous`, `u = 0.6 e + 0.05 I + 0.05 D`, the
current count moves by `u` rounded half away from zero, and the result is clipped to the range
(`[1, N]`, narrowed by the fleet's bounds). They know nothing of queues, switch cost or SLOs and
never ask the router to degrade: when the load exceeds the fleet they say so and go on.

What the rules read: `R` and `h` count only the requests that need a GPU. An exact repeat is
served from the cache with no GPU work, so it is neither a hit (it would size the small pool
for work that never reaches it) nor a miss; it leaves `R` as well, which keeps
`W_miss = (1 - h) R` the misses and `W_hit = h R kappa` the img2img hits. MoDM prices a hit at
kappa of a full run; with a fixed per-job overhead it costs `lat(kappa) / lat(1)` of one
(`PoolProfile.job_seconds`), which is kappa only when the overhead is zero.

Anti-windup: the integral is clamped to `INTEGRAL_LIMIT` and frozen while the scaler cannot
follow (not the leader, a pool paused or held after a hand scale, replicas still loading), so a
stall does not bank error that overshoots the target once the scaler moves again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from modm.services.monitor.observations import Allocation, Decision, Fleet, Window

KP, KI, KD = 0.6, 0.05, 0.05
DERATING = 0.9  # variant A keeps 10% of the spare capacity unused
# |KI * I| <= 0.45 < 0.5: at the target (e = 0, D = 0) the integral alone never moves a GPU.
INTEGRAL_LIMIT = 9.0


@dataclass(frozen=True)
class PidState:
    integral: float = 0.0
    previous_error: float = 0.0


def round_half_away(x: float) -> int:
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def pid_step(
    target: int, current: int, state: PidState, low: int, high: int, *, follows: bool = True
) -> tuple[int, PidState, float]:
    """One smoothing step towards `target`; returns the new count, the new state and `u`.

    While the scaler cannot follow (`follows` false) the integral keeps its value."""
    error = target - current
    integral = state.integral + error if follows else state.integral
    integral = min(INTEGRAL_LIMIT, max(-INTEGRAL_LIMIT, integral))
    u = KP * error + KI * integral + KD * (error - state.previous_error)
    return min(high, max(low, current + round_half_away(u))), PidState(integral, error), u


class Variant(StrEnum):
    QUALITY_FIRST = "modm-a"  # SLO experiments
    PROPORTIONAL = "modm-b"  # throughput experiments


def quality_first_target(window: Window, gpus: int) -> tuple[int, str]:
    """Variant A: enough large GPUs for the misses, then as many more as the derated spare
    capacity still covers the hits.

    With `A(n) = n T_L - W_miss + (N - n) T_S` the spare capacity of `n` large GPUs, MoDM's
    "increase n while 0.9 A(n) >= W_hit" is read as: keep the largest `n` (from
    `n0 = ceil(W_miss / T_L)`, clamped to [1, N]) whose derated spare still covers the hits. A
    literal `while` loop stops one higher, at the first `n` whose spare no longer covers them,
    which would leave the hits short of GPUs by construction.
    """
    large, small = window.large.profile, window.small.profile
    t_l, t_s = 60.0 / large.gpu_seconds(), 60.0 / small.gpu_seconds()
    rate, h = window.gpu_requests_per_min, window.gpu_hit_rate
    w_miss, w_hit = (1.0 - h) * rate, h * rate * small.job_seconds(window.kappa) / small.full_run_seconds

    def spare(n: int) -> float:
        return n * t_l - w_miss + (gpus - n) * t_s

    n = math.ceil(w_miss / t_l - 1e-12)
    if n > gpus:
        return gpus, f"misses {w_miss:.2f}/min need {n} large GPUs of {gpus}: overloaded (the research code stops)"
    n = max(1, n)
    while n < gpus and DERATING * spare(n + 1) >= w_hit:
        n += 1
    why = (
        f"misses {w_miss:.2f}/min, hits {w_hit:.2f} full-run-equivalents/min; "
        f"{n} large leave {DERATING} x {spare(n):.2f}/min spare for hits"
    )
    return n, why


def proportional_target(window: Window, gpus: int) -> tuple[int, str]:
    """Variant B: large GPUs in proportion to the misses' share of the GPU work (MoDM's
    `(1 - h) / ((1 - h) + h kappa lat_S / lat_L)` with each job priced by `PoolProfile`)."""
    h, kappa = window.gpu_hit_rate, window.kappa
    miss_s, hit_s = window.large.profile.gpu_seconds(), window.small.profile.gpu_seconds(kappa)
    denominator = (1.0 - h) * miss_s + h * hit_s
    share = (1.0 - h) * miss_s / denominator if denominator > 0 else 0.0
    n = round_half_away(share * gpus)
    why = (
        f"misses are {share:.3f} of the GPU time (h={h:.2f}, kappa={kappa:.2f}, "
        f"miss {miss_s:.1f} GPU-s, hit {hit_s:.1f} GPU-s)"
    )
    return max(1, min(gpus, n)), why


@dataclass(frozen=True)
class ModmPolicy:
    """MoDM's monitor: variant A or B target, PID-smoothed."""

    variant: Variant

    @property
    def name(self) -> str:
        return self.variant.value

    def initial_state(self) -> PidState:
        return PidState()

    def decide(
        self, window: Window, current: Allocation, fleet: Fleet, state: object, *, scaler_follows: bool = True
    ) -> Decision:
        pid = state if isinstance(state, PidState) else PidState()
        rule = quality_first_target if self.variant is Variant.QUALITY_FIRST else proportional_target
        target, why = rule(window, fleet.gpus)
        low, high = fleet.large_bounds(misses_arrive=True)
        low, high = max(1, low), max(1, high)
        target = min(high, max(low, target))
        large, pid, u = pid_step(target, current.large, pid, low, high, follows=scaler_follows)
        allocation = fleet.split(large)
        frozen = "" if scaler_follows else ", integral frozen: the scaler cannot follow"
        reason = f"{self.name}: target {target} large ({why}); PID u={u:+.2f}{frozen} -> {allocation}"
        return Decision(allocation, reason, state=pid)

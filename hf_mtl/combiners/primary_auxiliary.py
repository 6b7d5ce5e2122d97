"""Primary/auxiliary ("主次型") combination: main tasks learn, auxiliary tasks must not get worse.

Source: Su Jianlin 2022, "多任务学习漫谈（三）：分主次之序" ("Multi-task learning notes III: primary and
auxiliary"), blog post, https://kexue.fm/archives/8907 — "Su 2022 (III)" below; equation numbers are the post's.

One main task ``g_0`` and auxiliaries ``g_1..g_n``:

    max_u <u, g_0> - ½||u||²  s.t. <u, g_i> ≥ 0   ⇔   min_{λ ≥ 0} ||g_0 + Σ λ_i g_i||²,   u = g_0 + Σ λ_i g_i

(the dual by the minimax theorem, Su 2022 (III) eq. 6). With one auxiliary the closed form is
``λ = relu(-<g_0, g_1>) / ||g_1||²`` (Su 2022 (III) eq. 7). For several, the post's coordinate iteration
(``solver="coordinate"``) re-solves one ``λ_τ`` in closed form at a time,
``λ_τ ← relu(λ_τ - <g_τ, u>/||g_τ||²)``. The post picks ``τ = argmin_i <g_i, u>`` (the most violated
constraint); that rule never lowers a ``λ_i`` that has become too large once every constraint holds, so it can
stop short of the optimum. We pick the largest violation of the optimality conditions instead
(``-<g_i, u>`` where negative, or ``|<g_i, u>|`` where ``λ_i > 0``), which includes the post's choice, and
stop when every violation is below ``tol·||g_i||·||u||``.

Several main tasks (the mixed problem Su 2022 (III) poses and leaves open, eq. 11):
``min_{α ∈ simplex(main), λ ≥ 0 (aux)} ||Σ α_i g_i + Σ λ_j g_j||²`` with ``u`` the minimiser. Solved exactly
(``solver="active_set"``, the default for more than one auxiliary or more than one main task) by
non-negative least squares on the homogenised problem (:mod:`hf_mtl.combiners._min_norm`). At the optimum
``<u, g_i> ≥ ||u||²`` for every main task and ``<u, g_j> ≥ 0`` for every auxiliary. With one main task it is
the problem above; with no auxiliary it is MGDA.

Weights: 1 for a single main task (``α`` in the simplex for several) and ``λ_j`` for the auxiliaries. An
auxiliary with a zero gradient gets 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from hf_mtl.combiners._min_norm import ROUNDING, gram_scale, min_norm_active_set
from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner

Solver = Literal["auto", "active_set", "coordinate"]
SOLVERS = ("auto", "active_set", "coordinate")


def coordinate_descent(gram: np.ndarray, main: int, tol: float, max_iter: int) -> tuple[np.ndarray, dict]:
    """Article 003's coordinate iteration for one main task, on a Gram matrix with max diagonal 1."""
    num_tasks = gram.shape[0]
    diag = np.diag(gram)
    auxiliary = np.ones(num_tasks, dtype=bool)
    auxiliary[main] = False
    auxiliary &= diag > 0.0  # a zero auxiliary gradient never conflicts: its λ stays 0
    weights = np.zeros(num_tasks)
    weights[main] = 1.0
    products = gram[:, main].copy()  # <g_i, u>
    norms = np.sqrt(diag)
    iteration = 0
    while True:
        value = max(float(weights @ products), 0.0)
        violation = np.where(weights > 0.0, np.abs(products), np.maximum(-products, 0.0))
        violation = np.where(auxiliary, violation, 0.0)
        threshold = tol * norms * math.sqrt(value) + ROUNDING * num_tasks
        worst = int(np.argmax(violation - threshold))
        converged = violation[worst] <= threshold[worst]
        if converged or iteration >= max_iter:
            break
        iteration += 1
        new = max(0.0, weights[worst] - products[worst] / diag[worst])
        products += (new - weights[worst]) * gram[:, worst]
        weights[worst] = new
    return weights, {"iterations": iteration, "max_violation": float(violation.max()), "converged": bool(converged)}


@register_combiner
class PrimaryAuxiliary(Combiner):
    """Main task(s) descend; auxiliary tasks are constrained not to rise (``<u, g_aux> ≥ 0``)."""

    name = "primary_auxiliary"

    def __init__(
        self,
        primary: Sequence[int] = (0,),
        solver: Solver = "auto",
        tol: float = 1e-10,
        max_iter: int = 10000,
    ) -> None:
        super().__init__()
        self.primary = [int(i) for i in primary]
        if not self.primary:
            raise ValueError("primary_auxiliary: `primary` must name at least one main task index.")
        if len(set(self.primary)) != len(self.primary) or min(self.primary) < 0:
            raise ValueError(f"primary_auxiliary: `primary` must be distinct task indices ≥ 0, got {self.primary}.")
        if solver not in SOLVERS:
            raise ValueError(f"primary_auxiliary: unknown solver {solver!r}; choose one of {SOLVERS}.")
        if solver == "coordinate" and len(self.primary) > 1:
            raise ValueError(
                "primary_auxiliary: the coordinate iteration handles one main task; "
                f"use solver='active_set' for the {len(self.primary)} main tasks {self.primary}."
            )
        if not (math.isfinite(tol) and tol >= 0.0):
            raise ValueError(f"primary_auxiliary: tol must be a finite number ≥ 0, got {tol}.")
        if int(max_iter) < 1:
            raise ValueError(f"primary_auxiliary: max_iter must be ≥ 1, got {max_iter}.")
        self.solver = solver
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def restricted(self, active: Sequence[int]) -> PrimaryAuxiliary | None:
        """Main-task indices remapped to positions in ``active``; ``None`` when no main task is left."""
        position = {task: i for i, task in enumerate(active)}
        primary = [position[i] for i in self.primary if i in position]
        if not primary:
            return None
        return PrimaryAuxiliary(primary=primary, solver=self.solver, tol=self.tol, max_iter=self.max_iter)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        if max(self.primary) >= num_tasks:
            raise ValueError(
                f"primary_auxiliary: main task index {max(self.primary)} out of range for {num_tasks} tasks."
            )
        main = np.zeros(num_tasks, dtype=bool)
        main[self.primary] = True
        scale = gram_scale(gram)
        if scale <= 0.0:
            self.last_info = {"solver": "none", "zero_gradients": True}
            return main / main.sum()
        gram = gram / scale
        single = len(self.primary) == 1
        if single and num_tasks == 2 and self.solver != "active_set":
            first, second = self.primary[0], 1 - self.primary[0]
            weights = np.zeros(2)
            weights[first] = 1.0
            if gram[second, second] > 0.0:
                weights[second] = max(0.0, -gram[first, second]) / gram[second, second]
            self.last_info = {"solver": "closed_form"}
        elif single and self.solver == "coordinate":
            weights, info = coordinate_descent(gram, self.primary[0], self.tol, self.max_iter)
            self.last_info = {"solver": "coordinate", **info}
        else:
            weights = min_norm_active_set(gram, main)
            self.last_info = {"solver": "active_set"}
        products = gram @ weights
        self.last_info["norm_squared"] = float(weights @ products) * scale
        self.last_info["min_auxiliary_product"] = float(products[~main].min() * scale) if (~main).any() else 0.0
        return weights

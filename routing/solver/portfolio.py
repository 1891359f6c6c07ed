"""One entry point over both engines: ``solve``.

``engine="auto"`` picks per problem: PyVRP when it can express the problem
(measured better on VRPTW and CVRP benchmarks, see bench/results/), OR-Tools
otherwise (pairs, skills, breaks, several windows, hub synchronisation, pinned
stops). If PyVRP finds no feasible plan, OR-Tools gets the rest of the time
(and drops what cannot be served, with reasons).
"""

from __future__ import annotations

import time

from routing.solver.ortools_engine import solve_with_ortools
from routing.solver.problem import Problem, WarmStart, validate_problem
from routing.solver.progress import ProgressCallback, StopCheck
from routing.solver.pyvrp_engine import pyvrp_supports, solve_with_pyvrp
from routing.solver.solution import Solution

ENGINES = ("auto", "ortools", "pyvrp")
# PyVRP without a feasible plan by this fraction of the time hands over to
# OR-Tools, which drops what cannot be served instead of failing.
GIVE_UP_FRACTION = 0.5


class ProblemError(ValueError):
    """The problem is malformed (see validate_problem)."""


def choose_engine(problem: Problem, warm_start: WarmStart | None = None) -> str:
    if warm_start is not None and (warm_start.routes or warm_start.fixed_stop_counts):
        return "ortools"  # only OR-Tools pins done stops
    return "pyvrp" if pyvrp_supports(problem) else "ortools"


def solve(
    problem: Problem,
    *,
    time_limit_seconds: float,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    engine: str = "auto",
    warm_start: WarmStart | None = None,
    solution_limit: int | None = None,
) -> Solution:
    errors = validate_problem(problem)
    if errors:
        raise ProblemError("; ".join(errors))
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    if not problem.jobs or not problem.vehicles:
        return solve_with_ortools(problem, time_limit_seconds=0.01)
    chosen = choose_engine(problem, warm_start) if engine == "auto" else engine
    if chosen == "pyvrp":
        if not pyvrp_supports(problem):
            raise ProblemError("PyVRP cannot express this problem")
        started = time.monotonic()
        solution = solve_with_pyvrp(
            problem,
            time_limit_seconds=time_limit_seconds,
            give_up_fraction=1.0 if engine == "pyvrp" else GIVE_UP_FRACTION,
            seed=seed,
            on_progress=on_progress,
            should_stop=should_stop,
            max_iterations=solution_limit,
        )
        if solution is not None or engine == "pyvrp":
            if solution is None:
                return solve_with_ortools(problem, time_limit_seconds=0.01, solution_limit=1)
            return solution
        remaining = max(0.5, time_limit_seconds - (time.monotonic() - started))
        return solve_with_ortools(
            problem, time_limit_seconds=remaining, on_progress=on_progress, should_stop=should_stop
        )
    return solve_with_ortools(
        problem,
        time_limit_seconds=time_limit_seconds,
        solution_limit=solution_limit,
        warm_start=warm_start,
        on_progress=on_progress,
        should_stop=should_stop,
    )

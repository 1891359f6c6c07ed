"""Allmile's route optimiser: pure Python, no Django.

Entry points:
* ``solve(problem, time_limit_seconds=..., seed=..., on_progress=..., should_stop=..., engine="auto")``
* ``solve_decomposed(problem, ..., map_fn=map)`` for large problems
* ``check_solution(problem, solution)``: the independent checker
"""

from routing.solver.checker import Violation, check_solution
from routing.solver.decompose import solve_decomposed
from routing.solver.portfolio import ProblemError, choose_engine, solve
from routing.solver.problem import (
    Break,
    HubLink,
    Job,
    Location,
    Matrix,
    Problem,
    StopRef,
    TimeWindow,
    Vehicle,
    Visit,
    WarmStart,
)
from routing.solver.progress import Progress
from routing.solver.solution import Route, Solution, Stop, UnassignedJob

__all__ = [
    "Break", "HubLink", "Job", "Location", "Matrix", "Problem", "ProblemError", "Progress", "Route",
    "Solution", "Stop", "StopRef", "TimeWindow", "UnassignedJob", "Vehicle", "Violation", "Visit",
    "WarmStart", "check_solution", "choose_engine", "solve", "solve_decomposed",
]

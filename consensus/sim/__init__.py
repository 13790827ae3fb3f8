"""A deterministic simulator for the consensus core (see :mod:`.simulator` and :mod:`.scenarios`)."""

from .scenarios import SCENARIOS, Spec, make_spec
from .simulator import Result, Simulator, run_seed, sim_config

__all__ = ["SCENARIOS", "Result", "Simulator", "Spec", "make_spec", "run_seed", "sim_config"]

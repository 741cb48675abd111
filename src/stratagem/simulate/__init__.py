"""The simulated backend: a seeded latent-skill model for fast sweeps and for validating the
analysis against planted effects. Everything it produces is labelled as simulation.

* :class:`SimulatedModel` answers calls behind the normal client interface, so real graphs run
  on it (thousands of runs in seconds to minutes);
* ``latent_runs`` draws run-level results directly from planted effects, for checking that the
  attribution recovers them.
"""

from __future__ import annotations

from stratagem.simulate._backend import SimEffects, SimTask, SimulatedModel, sim_tasks
from stratagem.simulate._latent import (
    DEFAULT_WASTE_RATES,
    LatentEffects,
    latent_runs,
    planted_shares,
)

__all__ = [
    "DEFAULT_WASTE_RATES",
    "LatentEffects",
    "SimEffects",
    "SimTask",
    "SimulatedModel",
    "latent_runs",
    "planted_shares",
    "sim_tasks",
]

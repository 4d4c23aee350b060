"""One run of any level: ``run_one`` is the one entry point (``dyn simulate``,
``dyn theory``); it picks the run function from the level's kind
(``dynamics.levels.LEVEL``), the integrator and whether patch data are given.

    kind     gd                              flow (times, inf = the limit)
    paper    dynamics.run.simulate           dynamics.run.simulate_flow
    family   dynamics.general.simulate_general        (GD only)
    network  fullsim.simulate_full           fullsim.network.simulate_full_flow
             (with patch data: fullsim.patches.simulate_full_patches)

Every result follows the trajectory protocol (``layout``, ``label_names``,
``source``, ``compared_variables()``, ``patch_preactivations()``).  The
paired runs of ``dyn compare`` (a reduced level and the network on one
realisation) are ``compare.verify.run_pair``.
"""
from __future__ import annotations

from dynamics.levels import FAMILY, NETWORK, validate
from dynamics.params import Params, ParamError


def run_one(params: Params, level: str = "exact", sampler: str = "wishart", *,
            record_every: int = 1, integrator: str = "gd", times=None, patches=None):
    """Train one configuration at ``level``: GD recorded every ``record_every``
    steps, or the normalised flow recorded at ``times`` (GD steps; default
    params.steps; inf: the certified limit where a program exists);
    ``patches`` (``PatchData``): the family's data, for levels general and
    full.  What the level cannot run is refused first (``levels.validate``)."""
    if integrator == "flow":
        times = [params.steps] if times is None else list(times)
    kind = validate(params, level, integrator=integrator,
                    times=times if integrator == "flow" else None).kind
    if patches is not None or kind == FAMILY:
        if integrator != "gd":
            raise ParamError("integrator", integrator, "the family's runs (level general, "
                             "data files) are GD")
        if kind == NETWORK:
            from fullsim.patches import simulate_full_patches
            return simulate_full_patches(params, patches, "data", record_every)
        from dynamics.general import simulate_general
        return simulate_general(params, patches, sampler, record_every)
    if kind == NETWORK:
        if integrator == "flow":
            from fullsim.network import simulate_full_flow
            return simulate_full_flow(params, times)
        from fullsim import simulate_full
        return simulate_full(params, record_every=record_every)
    if integrator == "flow":
        from dynamics.run import simulate_flow
        return simulate_flow(params, level, sampler, times=times)
    from dynamics.run import simulate
    return simulate(params, level, sampler, record_every=record_every)

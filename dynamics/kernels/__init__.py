"""Numba kernels of the reduced coefficient recursion (docs/theory.md: exact
recursion, test error, training time), split by path:

  types       KStats, KConfig, FlowConfig, work buffers, divergence reasons, group sizes
  primitives  sigma, sigma', loss, l', Gram row products, theta += u (shared with general)
  step1       the depth-1 step as docs/theory.md#exact-recursion writes it
  deep        depth L >= 2 (docs/theory.md#depth)
  step        one step at any depth (dispatch on ``U is None``), momentum
  measure     test outputs, test error, ||theta||^2, margin, checkpoint values
  loop1       the fused one-job GD loop at depth 1 (second copy of step1)
  flow        the loss-normalised scheme (long times, the flow)
  job         one job of a batch: GD and normalised segments, checkpoints
  group_step  the step of a configuration group (second copy of step1)
  groups      configuration groups: jobs of one seed stepped together
  entry       compiled entry points, chosen per path in Python
  threads     run_chunks: nogil entries over chunks of jobs on Numba's thread count

Kernels are pure module-level ``@njit(cache=True)`` functions of plain
arrays, scalars and NamedTuples; randomness stays in the Python wrappers.
The cache folder is keyed by every source of ``dynamics`` (``numba_cache``),
so kernels call across these modules safely.
"""
from .entry import batch_kernel, clean_error_kernel, flow_kernel, group_kernel, outputs_kernel, \
    pattern_kernel, run_kernel, test_outputs, theta_norm_sq
from .flow import normalised_dt, normalised_gd
from .types import DIVERGENCE_REASONS, GROUP_MAX, GROUP_MAX_F32, GROUP_MIN, GROUP_TEST_MAX, \
    LOSS_UNDERFLOW, TEST_CHUNK, FlowConfig, Groups, JobOutputs, Jobs, KConfig, KStats, \
    PatternLeg, Records, Schedule, State, records

__all__ = ["DIVERGENCE_REASONS", "GROUP_MAX", "GROUP_MAX_F32", "GROUP_MIN", "GROUP_TEST_MAX",
           "LOSS_UNDERFLOW", "TEST_CHUNK", "FlowConfig", "JobOutputs", "Jobs", "KConfig",
           "KStats", "Groups", "PatternLeg", "Records", "Schedule", "State", "records", "batch_kernel",
           "clean_error_kernel", "flow_kernel", "group_kernel", "normalised_dt",
           "normalised_gd", "outputs_kernel", "pattern_kernel", "run_kernel", "test_outputs",
           "theta_norm_sq"]

"""Weight-space simulation of the two-layer ReLU CNN (the real network)."""
from .batch import full_evaluator, run_full_batch
from .layers import gradients, gradients_deep
from .network import simulate_full

__all__ = ["full_evaluator", "gradients", "gradients_deep", "run_full_batch", "simulate_full"]

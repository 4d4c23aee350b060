"""Weight-space simulation of the two-layer ReLU CNN (the real network)."""
from .network import gradients, simulate_full

__all__ = ["gradients", "simulate_full"]

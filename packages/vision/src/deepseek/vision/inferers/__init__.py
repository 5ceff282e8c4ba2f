"""Inference helpers: sliding-window inference with Gaussian blending."""

from deepseek.vision.inferers.sliding_window import (
    dense_window_starts,
    importance_map,
    sliding_window_inference,
)

__all__ = ["dense_window_starts", "importance_map", "sliding_window_inference"]

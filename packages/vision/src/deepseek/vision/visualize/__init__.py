"""PNG export of slices with prediction and label overlays (matplotlib, Agg backend)."""

from deepseek.vision.visualize.overlay import pick_slice, save_overlay_png

__all__ = ["pick_slice", "save_overlay_png"]

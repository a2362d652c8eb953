"""Semi-supervised training methods and the pieces they share (costs, ramps, EMA)."""

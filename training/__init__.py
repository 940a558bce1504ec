"""Training: the loop, the DGR regulariser and the multi-task methods (`repeval.training`)."""

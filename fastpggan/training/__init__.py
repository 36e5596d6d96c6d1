"""Progressive training: schedule, loop, checkpoints, logging."""

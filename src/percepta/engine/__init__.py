"""Task-agnostic training engine: the loop, checkpoints, distributed setup and logging."""

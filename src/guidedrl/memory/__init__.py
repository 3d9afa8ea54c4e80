"""Memory at scale: the estimate of what a run holds per process, before the run."""

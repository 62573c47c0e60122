"""Training: the loop, optimizers and schedules, Muon, Lookahead, the weight EMA, and the runtime (DDP,
RNG state, clean stops)."""

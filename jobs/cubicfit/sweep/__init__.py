"""Parameter sweeps: grid specs, plans, shards, batched execution and reports."""

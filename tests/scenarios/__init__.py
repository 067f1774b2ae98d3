"""End to end, as an adversary: faults, attacks, evidence, takeover, signals, adoption, flat."""

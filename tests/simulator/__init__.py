"""worker/simulator: the built-in simulator's answers, over real loopback HTTP."""

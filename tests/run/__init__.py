"""worker/run: a whole run's stages: plan, schedule (the close window), fan-out, report."""

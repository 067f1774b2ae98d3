"""worker/closing: one target's life: its transitions, client ids, evidence, close modes."""

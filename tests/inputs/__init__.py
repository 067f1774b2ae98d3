"""worker/inputs: targets and settings, and the clear error each bad input gets."""

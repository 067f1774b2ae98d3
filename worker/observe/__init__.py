"""Events and the log pipeline: what every layer may use to say what happened."""

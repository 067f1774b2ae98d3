"""worker/cli: the commands as an operator runs them, as whole processes."""

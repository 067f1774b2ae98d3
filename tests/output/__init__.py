"""worker/output: events, exit codes, and secrets kept out of every output."""

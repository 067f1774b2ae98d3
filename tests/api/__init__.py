"""worker/api: the HTTP client, its envelope and errors, pacing, the retry policy, paged reads."""

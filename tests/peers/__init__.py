"""Real peers for integration tests: each starts a real program, waits until it answers, and stops it by process id."""

"""Real peers for integration tests: each starts a real program, waits until it answers, and stops it by process id.

The process helpers live in vprod.procs (benchmarks start the same peers); they are re-exported here."""

from vprod.procs import clean_env, kill_pid, stop_pid  # noqa: F401

"""Run logs: our append-only format, and readers for the original's."""

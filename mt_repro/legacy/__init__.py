"""Compatibility with the original code: its command line, and later its files."""

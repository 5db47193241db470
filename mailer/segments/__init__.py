"""Audiences as SQL: the segment compiler and the runner."""

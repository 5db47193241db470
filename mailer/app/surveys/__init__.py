"""Surveys: what customers answered (`mailer responses`; the monthly review builds on it)."""

"""`python -m mailer.cli`."""

from mailer.cli import run

run()

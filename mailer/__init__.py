"""mailer: an email-marketing and newsletter automation engine for online stores."""

__version__ = "0.1.0"

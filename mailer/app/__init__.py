"""One use case per command, called by cli/."""

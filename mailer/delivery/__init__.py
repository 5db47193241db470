"""Getting messages to a server: outcomes, transport, rate limit, the sending loop."""

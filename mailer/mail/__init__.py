"""One message from a campaign version: compile once, render, track, MIME, DKIM."""

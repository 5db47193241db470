"""The workspace's files as typed values: the YAML loader, settings, campaigns, segments."""

"""mailer run: leadership, sweeps and hot reload."""

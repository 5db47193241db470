"""The console's application layer: the figures it shows that cost more than a query."""

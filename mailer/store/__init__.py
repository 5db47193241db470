"""Every table's SQL, the schema and its migrations, and the store's import."""

"""The store in real time (issue 20): platform webhooks mapped onto import records
(`shapes`, pure) and written through the importer (`apply`)."""

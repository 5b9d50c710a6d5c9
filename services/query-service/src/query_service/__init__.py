"""Query service: answers queries from the read views in MongoDB."""

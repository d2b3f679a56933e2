"""The configuration: its schema (the one source of its docs), loading and validation, lane keys, edits."""

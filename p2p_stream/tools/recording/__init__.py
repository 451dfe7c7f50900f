"""The recorder: estimates into SQLite, and reading them back."""

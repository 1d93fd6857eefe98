"""The `postgres` sink: readings as rows of a PostgreSQL table (README.md)."""

"""Persistence: SQL tables and repositories, the content-addressed blob store, and the outage spool."""

"""Committed, rendered examples of what creed produces (checked by tests against a fresh render)."""

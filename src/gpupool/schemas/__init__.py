"""The wire contract of the REST API (pydantic; unknown fields are rejected everywhere)."""

"""Persistence: SQLModel tables, repositories and artifact files. Never imports torch or core."""

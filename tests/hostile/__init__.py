"""Hostile input and fault tests (issue 14). A package, so its test modules may share a name with one
elsewhere (tests/serving/test_endpoints.py)."""

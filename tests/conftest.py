"""Shared test configuration."""

pytest_plugins = ["clamd_server"]

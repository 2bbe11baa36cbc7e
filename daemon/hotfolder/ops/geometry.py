"""Geometry operations."""

"""Coordination graphs: state and reducers, topologies, durable run and resume."""

from __future__ import annotations

__all__: list[str] = []

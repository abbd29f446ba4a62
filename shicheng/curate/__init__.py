"""Curation: a master's raw materials -> clean cases and corpus -> the five stage datasets
(docs/architecture.md, "Layers")."""

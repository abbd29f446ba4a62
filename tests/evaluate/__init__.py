"""Tests of shicheng.evaluate."""

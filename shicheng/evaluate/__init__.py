"""Evaluation: predictions, deterministic metrics (`shicheng.metrics`), statistics over cases
(`stats`), style fidelity (`style`), the LLM judge, the report, and the stage comparison (`compare`)."""

"""Evaluation: predictions, deterministic metrics (`shicheng.metrics`), statistics over cases
(`stats`), style fidelity (`style`), the LLM judge and the report."""

"""TCM knowledge shipped as versioned data files: herbs, formulas, merged names, safety rules, units."""

from shicheng.knowledge.lexicon import Knowledge, Resolved, load_knowledge
from shicheng.knowledge.loader import DATA_DIR, KnowledgeError

__all__ = ["DATA_DIR", "Knowledge", "KnowledgeError", "Resolved", "load_knowledge"]

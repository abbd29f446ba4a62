"""The prescriptions written in records, read so that a parser failure costs one prescription, never a run.

Curation reads thousands of prescriptions written by hand, and a consultation reads whatever a clinician
pasted; one text that trips the parser must cost that case (rejected with the reason) or that
prescription (kept as text only). The reason names the exception, not the text, which stays in the
materials at the case's file and line.
"""

from __future__ import annotations

from shicheng import prescription
from shicheng.domain import Prescription
from shicheng.knowledge import Knowledge, load_knowledge
from shicheng.prescription import ParsedPrescription, apply_to_previous, refers_to_previous


class UnreadablePrescription(ValueError):
    """The parser failed on a prescription text; the message says how, without the text."""


def read_prescription(text: str, kb: Knowledge | None = None) -> ParsedPrescription:
    """`shicheng.prescription.parse_prescription`, raising UnreadablePrescription for any parser failure."""
    try:
        return prescription.parse_prescription(text, kb)  # looked up at call time: tests make it fail
    except Exception as e:  # IndexError and the like: a parser bug, reported per prescription
        raise UnreadablePrescription(f"prescription parser failed ({type(e).__name__}: {str(e)[:120]})") from e


class PrescriptionReader:
    """read_prescription when the herb lexicon loads; otherwise prescriptions stay text (with one warning)."""

    def __init__(self) -> None:
        self._kb: Knowledge | None = None
        self.error: str | None = None
        self.warnings: list[str] = []
        try:
            self._kb = load_knowledge()
        except (OSError, ValueError) as e:  # KnowledgeError is a ValueError; a missing data file an OSError
            self.error = f"prescriptions kept as text only: herb lexicon not loadable ({str(e)[:200]})"

    def parse(self, text: str | None, previous: Prescription | None = None, where: str = "") -> Prescription | None:
        """The herbs of a visit; a follow-up written as 上方去X加Y becomes the previous list changed, and
        without a previous prescription to change it stays text only (its herb list would be wrong).
        A text the parser fails on stays text only too, with a warning naming `where` (file:line)."""
        if not text or self._kb is None:
            return None
        try:
            parsed = read_prescription(text, self._kb)
        except UnreadablePrescription as e:
            self.warnings.append(f"{where or 'a visit'}: prescription kept as text only: {e}")
            return None
        if refers_to_previous(text):
            return apply_to_previous(previous, parsed) if previous is not None else None
        rx = parsed.prescription
        return rx if rx.herbs or rx.formula_name else None


__all__ = ["PrescriptionReader", "UnreadablePrescription", "read_prescription"]

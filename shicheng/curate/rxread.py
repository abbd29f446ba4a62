"""The prescription parser as curation calls it: a parser failure becomes a reason, never a crash.

Curation reads thousands of prescriptions written by hand; one text that trips the parser must cost that
case (rejected with the reason) or that prescription (kept as text only), never the whole run. The reason
names the exception, not the text, which stays in the materials at the case's file and line.
"""

from __future__ import annotations

from shicheng import prescription


class UnreadablePrescription(ValueError):
    """The parser failed on a prescription text; the message says how, without the text."""


def read_prescription(text: str, kb=None):
    """`shicheng.prescription.parse_prescription`, raising UnreadablePrescription for any parser failure."""
    try:
        return prescription.parse_prescription(text, kb)
    except Exception as e:  # IndexError and the like: a parser bug, reported per prescription
        raise UnreadablePrescription(f"prescription parser failed ({type(e).__name__}: {str(e)[:120]})") from e

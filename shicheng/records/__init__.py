"""A clinician's text -> Case: the counterpart, for case records, of what prescription.py is for prescriptions.

Ground floor (no curate/agent/serve imports): plain functions over text, used by curation's importers,
the consultation agent and the server alike.

- reader: case records (医案) with headings, visits (初诊/二诊/复诊) and header lines -> Cases (`read_records`).
- headings: the heading words records write, and the target each field goes to.
- values: field values (初诊, 女, 45岁, 孕12周) -> the domain's types.
- tidy: field text joined, tongue and pulse moved into their own fields.
- build: named fields -> Visit and Patient; prescriptions: a visit's prescription read without crashing.
- facts: sex, age, pregnancy and a previous prescription found anywhere in running text.
Reading bytes in an unknown encoding and normalising text are shicheng.text.
"""

from shicheng.records.facts import (
    FactField,
    FactSource,
    PatientFact,
    TextSpan,
    find_patient_facts,
    find_previous_prescription,
    pick_facts,
)
from shicheng.records.reader import RecordsRead, looks_like_case_records, read_records

__all__ = ["FactField", "FactSource", "PatientFact", "RecordsRead", "TextSpan", "find_patient_facts",
           "find_previous_prescription", "looks_like_case_records", "pick_facts", "read_records"]

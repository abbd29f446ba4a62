"""The floor and the ceiling of every report: a retrieval baseline and the gold answers, as "systems".

Retrieval: for a visit asked as master M, the nearest visit among M's TRAINING cases by findings, and
that visit's answer copied, rendered for the task exactly as training renders gold answers
(`gold_text`). "Nearest" is the cosine of character n-gram TF-IDF vectors (1- to 3-grams, sublinear tf,
smoothed idf, L2-normalised) over the findings: chief complaint, present illness, history, tongue, pulse
and other findings. Character n-grams need no word segmenter, and Chinese clinical phrases (舌淡胖,
脉沉细) are short enough that 2- and 3-grams carry them. A model that does not beat this has learnt
nothing beyond looking up a similar record.

Only training visits that have an answer for the task are candidates; a visit asked with no master
draws from the training cases without a master (all of them when there are none). Ties go to the
first candidate in (case id, visit) order, so the baseline is deterministic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from shicheng.domain import Answer, Case, Task, Visit
from shicheng.prescription import format_herbs, refers_to_previous
from shicheng.prompts import messages, modification_text
from shicheng.template import render_answer

FINDINGS = ("chief_complaint", "present_illness", "history", "tongue", "pulse", "other_findings")
NGRAMS = (1, 3)


def findings_text(visit: Visit) -> str:
    """What a clinician sees before answering, without the patient's sex and age (not findings)."""
    return "\n".join(v for k in FINDINGS if (v := getattr(visit, k)))


def gold_text(case: Case, visit_index: int, task: Task) -> str | None:
    """The gold answer of a visit for `task`, rendered as the stage datasets render it; when the visit lacks
    a section training requires, the sections it has (the reasoning only where there is one). None when
    the visit has nothing for the task."""
    think = task is Task.full_chain
    rendered = messages(case, visit_index, task, None, think=think)
    if rendered is not None:
        return rendered[-1]["content"]
    visit = case.visits[visit_index]
    if task is Task.modification:
        if visit_index == 0:
            return None
        text = modification_text(case.visits[visit_index - 1], visit) or (
            visit.answer.modifications if visit.answer else None)
        return render_answer(Answer(modifications=text), sections=("modifications",), think=False) if text else None
    answer = _with_prescription(visit)
    keys = tuple(k for k in task.sections if k != "reasoning")
    if answer is None or not any(getattr(answer, k) for k in keys):
        return None
    return render_answer(answer, sections=keys, think=think and bool(answer.reasoning))


def _with_prescription(visit: Visit) -> Answer | None:
    """The visit's answer, its 处方 taken from the structured prescription where the text is missing."""
    rx = visit.prescription
    rx_text = format_herbs(rx.herbs) if rx and rx.herbs else None
    if visit.answer is None:
        return Answer(prescription=rx_text) if rx_text else None
    if not visit.answer.prescription and rx_text:
        return visit.answer.model_copy(update={"prescription": rx_text})
    return visit.answer


def standalone(case: Case, visit_index: int) -> Case:
    """The case with visit `visit_index`'s 处方 written out in full when it is written as changes to the
    previous visit (上方去…加…): copied into another patient's answer, the changes would be applied to
    that patient's previous prescription instead."""
    visit = case.visits[visit_index]
    text = visit.answer.prescription if visit.answer else None
    if not (text and visit_index > 0 and refers_to_previous(text) and visit.prescription and visit.prescription.herbs):
        return case
    rx = visit.prescription
    full = format_herbs(rx.herbs) + (f"，{rx.administration}" if rx.administration else "")
    visits = list(case.visits)
    visits[visit_index] = visit.model_copy(update={"answer": visit.answer.model_copy(update={"prescription": full})})
    return case.model_copy(update={"visits": visits})


def char_ngrams(text: str, ngrams: tuple[int, int] = NGRAMS) -> Counter:
    """Character n-grams of each line (n-grams do not span a line break: two fields are not one phrase)."""
    lo, hi = ngrams
    grams: Counter = Counter()
    for line in text.split("\n"):
        line = "".join(line.split())
        for n in range(lo, hi + 1):
            grams.update(line[i:i + n] for i in range(len(line) - n + 1))
    return grams


class CharTfidf:
    """Character n-gram TF-IDF fitted on a list of texts; `transform` maps texts to L2-normalised rows."""

    def __init__(self, texts: Sequence[str], ngrams: tuple[int, int] = NGRAMS):
        self.ngrams = ngrams
        counts = [char_ngrams(t, ngrams) for t in texts]
        df: Counter = Counter()
        for c in counts:
            df.update(c.keys())
        self.vocab = {g: i for i, g in enumerate(sorted(df))}
        n = len(texts)
        self.idf = np.array([math.log((1 + n) / (1 + df[g])) + 1.0 for g in sorted(df)])
        self.matrix = self._rows(counts)

    def _rows(self, counts: Sequence[Counter]) -> sparse.csr_matrix:
        data, cols, ptr = [], [], [0]
        for c in counts:
            for g, k in c.items():
                j = self.vocab.get(g)
                if j is not None:
                    cols.append(j)
                    data.append((1.0 + math.log(k)) * self.idf[j])
            ptr.append(len(cols))
        m = sparse.csr_matrix((np.array(data, dtype=float), np.array(cols, dtype=np.int64), np.array(ptr)),
                              shape=(len(counts), len(self.vocab)))
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sparse.diags(1.0 / norms) @ m

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self._rows([char_ngrams(t, self.ngrams) for t in texts])


@dataclass(frozen=True)
class Retrieved:
    case_id: str
    visit: int  # 1-based, as prediction rows count visits
    similarity: float
    text: str  # the copied answer, rendered for the task


class RetrievalBaseline:
    """Nearest training visit of the same master by findings; see the module docstring."""

    def __init__(self, train_cases: Iterable[Case], ngrams: tuple[int, int] = NGRAMS):
        self.cases = sorted(train_cases, key=lambda c: c.id)
        if not self.cases:
            raise ValueError("the retrieval baseline needs training cases; none were given")
        self.ids = {c.id for c in self.cases}
        self.docs = [(ci, vi) for ci, c in enumerate(self.cases) for vi in range(len(c.visits))]
        self.tfidf = CharTfidf([findings_text(self.cases[ci].visits[vi]) for ci, vi in self.docs], ngrams)
        self._answers: dict[tuple[int, Task], str | None] = {}
        self._pools: dict[tuple[str | None, Task], np.ndarray] = {}

    def _answer(self, doc: int, task: Task) -> str | None:
        key = (doc, task)
        if key not in self._answers:
            ci, vi = self.docs[doc]
            self._answers[key] = gold_text(standalone(self.cases[ci], vi), vi, task)
        return self._answers[key]

    def pool(self, master: str | None, task: Task) -> np.ndarray:
        """Indices of the candidate visits for a master and task (see the module docstring)."""
        key = (master, task)
        if key not in self._pools:
            with_answer = [d for d in range(len(self.docs)) if self._answer(d, task) is not None]
            owned = [d for d in with_answer if self.cases[self.docs[d][0]].master_id == master]
            if master is None and not owned:
                owned = with_answer
            self._pools[key] = np.array(owned, dtype=np.int64)
        return self._pools[key]

    def masters(self) -> list[str]:
        return sorted({c.master_id for c in self.cases if c.master_id})

    def nearest(self, case: Case, visit_index: int, task: Task, master: str | None) -> Retrieved:
        """The retrieved answer for one query; ValueError when no training visit of the master has one."""
        if case.id in self.ids:
            raise ValueError(f"case '{case.id}' is among the training cases: retrieving it would copy its own "
                             "gold answer; evaluate on a held-out split")
        pool = self.pool(master, task)
        if not len(pool):
            who = f"master '{master}'" if master else "no master"
            raise ValueError(f"no training visit of {who} has an answer for task {task.value} "
                             f"(training masters: {', '.join(self.masters()) or 'none'})")
        query = self.tfidf.transform([findings_text(case.visits[visit_index])])
        sims = np.asarray((self.tfidf.matrix[pool] @ query.T).todense()).ravel()
        best = int(np.argmax(sims))  # the first of equals: pool is in (case id, visit) order
        doc = int(pool[best])
        ci, vi = self.docs[doc]
        return Retrieved(case_id=self.cases[ci].id, visit=vi + 1, similarity=float(sims[best]),
                         text=self._answer(doc, task))


__all__ = ["FINDINGS", "CharTfidf", "RetrievalBaseline", "Retrieved", "char_ngrams", "findings_text", "gold_text",
           "standalone"]

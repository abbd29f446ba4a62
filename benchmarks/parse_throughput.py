"""Prescriptions parsed and safety-checked per second on one core; prints JSON.

    .venv/bin/python benchmarks/parse_throughput.py [--n 5000]

Compares the full `check-prescription` path (parse + safety) with the plain alternative a user might
write first: a regex alternation over every lexicon name (no aliases resolution of unknown spans, no
各, no notes), so the cost of doing it properly is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time

from shicheng.domain import Patient
from shicheng.knowledge import load_knowledge
from shicheng.prescription import parse_prescription
from shicheng.safety import check_safety

TYPICAL = [
    "柴胡12g 黄芩9g 法半夏9g 党参15g 炙甘草6g 生姜3片 大枣4枚，7剂，水煎服，日一剂",
    "黄芪30g 党参15g 炒白术12g 当归10g 陈皮6g 升麻6g 柴胡6g 炙甘草6g",
    "法半夏10黄连5黄芩10干姜6党参15炙甘草6大枣10",
    "生熟地各15g 山萸肉12g 淮山药15g 丹皮10g 云苓15g 泽泻10g 枸杞子15g 菊花10g",
    "银花15 连翘15 薄荷6(后下) 牛蒡子10 桔梗10 芦根30 竹叶10 荆芥10 淡豆豉10 生甘草6",
    "桃仁10g 红花10g 当归12g 川芎10g 赤芍12g 生地黄15g 柴胡6g 枳壳10g 牛膝15g 桔梗6g 甘草6g",
    "制附子15g(先煎) 干姜10g 肉桂3g(后下) 茯苓15g 白术12g 白芍10g 生姜3片",
    "桂枝汤加葛根15g 羌活10g",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    kb = load_knowledge()
    rng = random.Random(0)
    batch = [rng.choice(TYPICAL) for _ in range(args.n)]
    patient = Patient(sex="female", pregnant=True)
    for text in TYPICAL:  # warm caches
        check_safety(parse_prescription(text, kb).prescription, patient, kb)

    t0 = time.perf_counter()
    herbs = 0
    for text in batch:
        parsed = parse_prescription(text, kb)
        check_safety(parsed.prescription, patient, kb)
        herbs += len(parsed.herbs)
    full = time.perf_counter() - t0

    names = sorted(kb.surfaces, key=len, reverse=True)
    plain = re.compile("|".join(map(re.escape, names)))
    t0 = time.perf_counter()
    for text in batch:
        plain.findall(text)
    naive = time.perf_counter() - t0

    print(json.dumps({
        "benchmark": "prescription_parse_and_check",
        "n": args.n,
        "herbs_per_prescription": round(herbs / args.n, 2),
        "shicheng_per_s": round(args.n / full, 1),
        "shicheng_us_per_prescription": round(full / args.n * 1e6, 1),
        "plain_regex_per_s": round(args.n / naive, 1),
        "lexicon_surfaces": len(kb.surfaces),
        "goal_per_s": 5000,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()

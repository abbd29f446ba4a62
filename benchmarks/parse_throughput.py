"""Prescriptions parsed and safety-checked per second on one core; prints JSON.

    .venv/bin/python benchmarks/parse_throughput.py [--n 5000]

Compares the full `check-prescription` path (parse + safety) with the plain alternative a user might
write first: a regex alternation over every lexicon name (no aliases resolution of unknown spans, no
各, no notes), so the cost of doing it properly is visible. Runs pinned to one core where the OS allows;
`shicheng_cpu_per_s` counts CPU time only, so a busy machine does not hide a slow parser (or a fast one).
`case_record_per_s` is the same path on whole case records (a prescription inside narrative).
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

RECORDS = [
    "患者女，45岁。主诉：胃脘胀痛3月。2022年胃镜示慢性浅表性胃炎，BP 130/80mmHg，长期服知柏地黄丸、丹参滴丸。"
    "舌红花剥苔，脉弦。处方：柴胡10g 白芍12g 枳壳10g 香附10g 川芎6g 陈皮6g 炙甘草5g 延胡索10g，7剂，水煎服。",
    "患者男，67岁。冠心病史5年，2018年行PCI术，胸闷时含服复方丹参滴丸10粒，尿蛋白及潜血阳性。舌暗，苔薄白，脉涩。"
    "方用：丹参15g、川芎10g、赤芍10g、红花6g、降香6g(后下)、黄芪30g。",
]
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
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    kb = load_knowledge()
    rng = random.Random(0)
    batch = [rng.choice(TYPICAL) for _ in range(args.n)]
    patient = Patient(sex="female", pregnant=True)
    for text in TYPICAL:  # warm caches
        check_safety(parse_prescription(text, kb).prescription, patient, kb)

    t0, c0 = time.perf_counter(), time.process_time()
    herbs = 0
    for text in batch:
        parsed = parse_prescription(text, kb)
        check_safety(parsed.prescription, patient, kb)
        herbs += len(parsed.herbs)
    full, cpu = time.perf_counter() - t0, time.process_time() - c0

    records = [rng.choice(RECORDS) for _ in range(max(1, args.n // 5))]
    t0 = time.perf_counter()
    for text in records:
        check_safety(parse_prescription(text, kb).prescription, patient, kb)
    record_s = time.perf_counter() - t0

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
        "shicheng_cpu_per_s": round(args.n / cpu, 1),
        "case_record_per_s": round(len(records) / record_s, 1),
        "plain_regex_per_s": round(args.n / naive, 1),
        "lexicon_surfaces": len(kb.surfaces),
        "goal_per_s": 5000,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()

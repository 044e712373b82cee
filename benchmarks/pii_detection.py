"""Personal-data detection on the development split of presidio-research's synthetic data set:
LLMasOS's detector against Presidio's default analyzer (same spaCy model), in one run.

Span-level scoring as presidio-research does it: a detected span counts as a true positive when it
overlaps a true span of the same type; a true span is recalled when a detection of its type overlaps
it. Precision, recall and F2 (recall weighted four times precision) per entity type and overall
(micro-averaged over every span), and the detection cost in milliseconds per 1,000 characters.

    python benchmarks/pii_detection.py [--data PATH] [--errors TYPE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmasos.privacy.detector import LABELS, SPACY_MODEL, PiiDetector
from llmasos.privacy.entities import ENTITY_TYPES, Detection

DEFAULT_DATA = Path("/work/shared/data/pii-dev.json")
#: Recall goals of issue 27 (the checksum and pattern types), and the overall F2 margin over Presidio.
RECALL_GOALS = ("CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "US_SSN", "IP_ADDRESS")
F2_MARGIN = 0.05


class Scores:
    def __init__(self) -> None:
        self.tp, self.fp, self.fn, self.recalled = Counter(), Counter(), Counter(), Counter()

    def add(self, truth: list[dict], found: list[Detection]) -> None:
        for span in truth:
            kind = span["entity_type"]
            hit = any(d.entity_type == kind and _overlap(d, span) for d in found)
            (self.recalled if hit else self.fn)[kind] += 1
        for d in found:
            hit = any(d.entity_type == s["entity_type"] and _overlap(d, s) for s in truth)
            (self.tp if hit else self.fp)[d.entity_type] += 1

    def row(self, kind: str | None = None) -> dict:
        pick = (lambda c: c[kind]) if kind else (lambda c: sum(c.values()))
        tp, fp, recalled, fn = pick(self.tp), pick(self.fp), pick(self.recalled), pick(self.fn)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = recalled / (recalled + fn) if recalled + fn else 0.0
        f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f2": f2, "true": recalled + fn, "found": tp + fp}


def _overlap(d: Detection, span: dict) -> bool:
    return d.start < span["end_position"] and span["start_position"] < d.end


def presidio_default():
    """Presidio's AnalyzerEngine as it comes, on the same spaCy model; its labels mapped to ours."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from llmasos.privacy.detector import _offline_public_suffixes

    _offline_public_suffixes()
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine())

    def detect(text: str) -> list[Detection]:
        return [
            Detection(LABELS.get(r.entity_type, r.entity_type), r.start, r.end, r.score)
            for r in analyzer.analyze(text, language="en")
        ]

    return detect


def run(name: str, detect, items: list[dict], errors: str | None) -> tuple[Scores, tuple[float, float]]:
    detect(items[0]["full_text"])  # warm up (first call builds lazily held state)
    scores = Scores()
    elapsed = cpu = 0.0
    for item in items:
        text = item["full_text"]
        started, started_cpu = time.perf_counter(), time.process_time()
        found = detect(text)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        scores.add(item["spans"], found)
        if errors:
            _print_errors(name, text, item["spans"], found, errors)
    chars = sum(len(i["full_text"]) for i in items)
    return scores, (elapsed / chars * 1e6, cpu / chars * 1e6)  # ms per 1,000 characters: wall, CPU


def _print_errors(name: str, text: str, truth: list[dict], found: list[Detection], kind: str) -> None:
    missed = [s["entity_value"] for s in truth if s["entity_type"] == kind and not any(
        d.entity_type == kind and _overlap(d, s) for d in found)]  # fmt: skip
    wrong = [text[d.start : d.end] for d in found if d.entity_type == kind and not any(
        s["entity_type"] == kind and _overlap(d, s) for s in truth)]  # fmt: skip
    if missed or wrong:
        print(f"[{name}] {text[:120]!r}\n    missed={missed} wrong={wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--errors", help="print the misses and false detections of one type")
    parser.add_argument("--only-ours", action="store_true", help="skip Presidio's default analyzer")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    items = json.loads(args.data.read_text())

    started = time.perf_counter()
    ours = PiiDetector()
    load_s = time.perf_counter() - started
    print(f"load average while running: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})")
    results = {"llmasos": run("llmasos", ours.detect, items, args.errors)}
    if not args.only_ours:
        results["presidio"] = run("presidio", presidio_default(), items, args.errors)

    report = {"items": len(items), "detector_load_s": load_s, "engines": {}}
    header = f"{'type':18} {'n':>4} " + " ".join(f"{name + ' P/R/F2':>24}" for name in results)
    print(f"{len(items)} sentences of {args.data.name}; detector load {load_s:.2f} s\n{header}")
    for kind in [*ENTITY_TYPES, None]:
        rows = {name: scores.row(kind) for name, (scores, _) in results.items()}
        n = next(iter(rows.values()))["true"]
        cells = " ".join(f"{r['precision']:>8.2f}{r['recall']:>8.2f}{r['f2']:>8.2f}" for r in rows.values())
        print(f"{kind or 'OVERALL':18} {n:>4} {cells}")
        for name, r in rows.items():
            report["engines"].setdefault(name, {})[kind or "OVERALL"] = r
    for name, (_, (wall_ms, cpu_ms)) in results.items():
        # CPU time is the cost on a shared machine; wall time also counts waiting for a core.
        print(f"{name}: {wall_ms:.1f} ms wall, {cpu_ms:.1f} ms CPU per 1,000 characters")
        report["engines"][name]["ms_per_1000_chars"] = {"wall": wall_ms, "cpu": cpu_ms}
    _print_goals(report["engines"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _print_goals(engines: dict) -> None:
    ours = engines["llmasos"]
    for kind in RECALL_GOALS:
        recall = ours[kind]["recall"]
        print(f"goal recall >= 0.95 on {kind}: {recall:.2f} {'met' if recall >= 0.95 else 'NOT met'}")
    if "presidio" in engines:
        margin = ours["OVERALL"]["f2"] - engines["presidio"]["OVERALL"]["f2"]
        verdict = "met" if margin >= F2_MARGIN else "NOT met"
        print(f"goal F2 >= Presidio's + {F2_MARGIN}: +{margin:.3f} {verdict}")


if __name__ == "__main__":
    main()

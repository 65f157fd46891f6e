"""The paper's protocol rehearsed end to end on a stand-in suite (scripts/rehearsal.py is the command).

Stages, each a child process whose wall time and peak RSS (wait4's ru_maxrss) are recorded:
generate (kalm_eval/testing/standin.py) -> plan (kalm-eval-plan, its own cache so the run pays its own costs) ->
run (`workers` job-array tasks: `kalm-eval ... worker=i workers=N`, what each array task of
hydra/launcher=local_workers or slurm_gpu runs; `kalm-eval-status` polled meanwhile) -> one task killed with
kill -9 once `kill_at` of the planned units are written, and started again (the resume) -> a closing pass with
one worker (finds every record done, writes the suite summary) -> kalm-eval-report.

Then: disk per cache kind, wall and timed stages per dataset (from the records), the plan's figures beside the
counted ones, and, given a reference results tree of the same suite (an uninterrupted run), a byte comparison of
every record's run files, scores, per-query values and metric values."""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kalm_eval.rerank.settings import RerankSettings
from kalm_eval.result import RECORD_FILE, find_record_dirs
from kalm_eval.storage import write_json_atomic

COMPARED_FILES = ("run.first_stage.trec.gz", "run.reranked.trec.gz", "scores.reranked.tsv.gz", "per_query.tsv")


@dataclass
class Stage:
    name: str
    wall_s: float
    peak_rss_mb: float | None
    returncode: int
    note: str = ""
    cpu_s: float | None = None  # user + system (the wall on a machine shared with other jobs says less)


@dataclass
class Rehearsal:
    suite: str
    scale: float
    work: Path
    workers: int = 2
    compression: str = "[1,4,32]"
    kill_at: float = 0.4
    calibrate: str | None = None
    reference: str | None = None
    status_every_s: float = 60.0
    stages: list[Stage] = field(default_factory=list)
    status_samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    # ---- paths and commands -----------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    @property
    def results(self) -> Path:
        return self.work / "results"

    def overrides(self) -> list[str]:
        return [f"benchmark={self.suite}", f"data_dir={self.data}", "retriever=trec_run",
                f'retriever.path="{self.data}/runs/{{dataset}}.trec.gz"', "reranker=kalm", "model=tiny",
                f"compression={self.compression}", f"cache_dir={self.cache}", f"results_dir={self.results}",
                "progress=false"]

    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        self.events.append(line)
        print(line, file=sys.stderr, flush=True)

    # ---- child processes ----------------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, float, Any]:
        out = open(self.work / "logs" / f"{name}.log", "w")
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.work), time.perf_counter(), out

    def finish(self, name: str, proc: subprocess.Popen, started: float, out: Any, note: str = "",
               waited: tuple[int, Any] | None = None) -> Stage:
        """Reap the child (or take what `reaped` found) and record its wall time and peak RSS (ru_maxrss)."""
        status, usage = waited if waited is not None else os.wait4(proc.pid, 0)[1:]
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.close()
        stage = Stage(name, time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode, note,
                      usage.ru_utime + usage.ru_stime)
        self.stages.append(stage)
        self.log(f"{name}: exit {proc.returncode}, {stage.wall_s:.1f} s, peak RSS {stage.peak_rss_mb:.0f} MB {note}")
        return stage

    def stage(self, name: str, argv: list[str], note: str = "") -> Stage:
        proc, started, out = self.start(name, argv)
        stage = self.finish(name, proc, started, out, note)
        if stage.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {stage.returncode}); see {self.work / 'logs' / (name + '.log')}")
        return stage

    def status(self, tag: str) -> None:
        started = time.perf_counter()
        done = subprocess.run(["kalm-eval-status", *self.overrides()], capture_output=True, text=True, cwd=self.work)
        seconds = time.perf_counter() - started
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
        self.status_samples.append({"at": tag, "seconds": round(seconds, 2), "summary": summary})
        (self.work / "logs" / "status.log").open("a").write(f"--- {tag} ({seconds:.1f} s)\n{done.stdout}\n")
        self.log(f"status ({seconds:.1f} s): {summary}")

    # ---- the rehearsal ------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.stage("generate", [sys.executable, "-c", "import sys; from kalm_eval.testing.standin import write_standin; "
                                f"write_standin({self.suite!r}, {str(self.data)!r}, scale={self.scale})"])
        plan_file = self.work / "plan.json"
        plan_args = ["kalm-eval-plan", *[o for o in self.overrides() if not o.startswith("cache_dir=")],
                     f"cache_dir={self.work / 'plan-cache'}", f"plan.output={plan_file}", f"plan.workers={self.workers}"]
        if self.calibrate:
            plan_args.append(f"plan.calibrate={self.calibrate}")
        self.stage("plan", plan_args)
        plan = json.loads(plan_file.read_text())
        chunk = next(f.default for f in fields(RerankSettings) if f.name == "chunk_passages")  # not overridden here
        planned_units = sum(math.ceil(u["figures"]["unique_passages"]["value"] / chunk) for u in plan["units"].values())
        kill_after = max(1, int(planned_units * self.kill_at)) if self.kill_at > 0 else None
        self.log(f"plan: {planned_units} units in all; " + (f"worker {self.workers - 1} is killed once {kill_after} "
                 "are written" if kill_after else "no kill (an uninterrupted run)"))

        run_started = time.perf_counter()
        procs = {i: self.start(f"worker{i}", ["kalm-eval", *self.overrides(), f"worker={i}", f"workers={self.workers}"])
                 for i in range(self.workers)}
        victim = self.workers - 1
        killed = kill_after is None  # nothing to kill
        next_status = time.perf_counter() + 5
        while procs:
            time.sleep(0.5)
            if not killed and _units_written(self.cache) >= kill_after and victim in procs:
                proc, started, out = procs.pop(victim)
                os.kill(proc.pid, signal.SIGKILL)
                self.finish(f"worker{victim}-killed", proc, started, out, f"(kill -9 after {_units_written(self.cache)} units)")
                self.status("after kill -9")
                procs[victim] = self.start(f"worker{victim}-resumed", ["kalm-eval", *self.overrides(),
                                                                        f"worker={victim}", f"workers={self.workers}"])
                killed = True
                self.log(f"worker {victim} started again (resume)")
            for i, (proc, started, out) in list(procs.items()):
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # never Popen.poll: it reaps without rusage
                if pid == 0:
                    continue
                del procs[i]
                name = f"worker{i}" + ("-resumed" if kill_after and i == victim else "")
                self.finish(name, proc, started, out, waited=(status, usage))
            if procs and time.perf_counter() >= next_status:
                self.status(f"{time.perf_counter() - run_started:.0f} s into the run")
                next_status = time.perf_counter() + self.status_every_s
        run_wall = time.perf_counter() - run_started
        self.stage("closing pass (1 worker)", ["kalm-eval", *self.overrides()])
        self.status("after the closing pass")
        self.stage("report", ["kalm-eval-report", f"results={self.results}", f"output_dir={self.work / 'report'}",
                              "paper_row=KaLM-Reranker-V1-Nano", "plots=false"])
        total = time.perf_counter() - t0
        return self.summary(plan, run_wall, total)

    # ---- what it measured ---------------------------------------------------------------------------------------
    def summary(self, plan: dict[str, Any], run_wall: float, total: float) -> dict[str, Any]:
        datasets = per_dataset(self.results)
        comparison = plan_vs_actual(plan, datasets)
        suite_summary = next(self.results.glob("suite__*/*/summary.json"), None)
        listed = sorted(json.loads(suite_summary.read_text()).get("units", {})) if suite_summary else []
        report_md = sorted((self.work / "report").rglob("*.md"))
        out = {
            "suite": self.suite, "scale": self.scale, "workers": self.workers, "compression": self.compression,
            "model": "tiny", "work": str(self.work), "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "command_overrides": self.overrides(), "calibrated_from": self.calibrate,
            "stages": [vars(s) for s in self.stages], "run_wall_s": run_wall, "total_wall_s": total,
            "status_samples": self.status_samples, "events": self.events,
            "disk_bytes": disk_by_kind(self.work),
            "datasets": datasets, "plan_vs_actual": comparison,
            "plan_total": plan.get("total"), "plan_calibration": plan.get("calibration"),
            "suite_summary": str(suite_summary) if suite_summary else None, "suite_summary_units": listed,
            "report_files": [str(p) for p in report_md],
            "report_lists_datasets": _report_lists(report_md, [d for d in datasets]),
            "timed_stage_sum_s": sum(d["timed_s"] for d in datasets.values()),
        }
        out.update(harness_share(out))
        if self.reference:
            out["identical_to_reference"] = compare_trees(self.results, Path(self.reference))
        return out


def harness_share(summary: dict[str, Any]) -> dict[str, Any]:
    """The harness's own cost: the workers' wall seconds (every worker process, the killed one included) over the
    timed stages of the records (first stage, model load, encode, score: every unit's encode and score seconds,
    whichever worker computed it). With one uninterrupted worker this is the suite's wall / its timed stages.
    Where the rest goes: the records' own parts (HARNESS_PARTS), and what no record times (record commits, process
    start-up, config, the suite summary; with several workers also each worker's per-dataset model loads and data
    reads that the merging worker's record does not hold, and a killed worker's lost unit)."""
    worker_s = sum(stage["wall_s"] for stage in summary["stages"] if stage["name"].startswith("worker"))
    timed = summary["timed_stage_sum_s"]
    datasets = summary["datasets"].values()
    parts = {k: sum(d.get(k) or 0.0 for d in datasets) for k in HARNESS_PARTS}
    parts["untimed rest"] = worker_s - timed - sum(parts.values())
    return {"worker_wall_sum_s": worker_s, "harness_ratio": worker_s / timed if timed else None,
            "harness_parts_s": parts}


def _units_written(cache: Path) -> int:
    root = cache / "rerank_units"
    return sum(1 for _ in root.rglob("*.npz")) if root.exists() else 0


def _report_lists(files: list[Path], datasets: list[str]) -> dict[str, bool]:
    text = "\n".join(p.read_text(errors="replace") for p in files)
    return {d: d.split("/")[-1] in text for d in datasets}


def disk_by_kind(work: Path) -> dict[str, int]:
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0

    cache = work / "cache"
    kinds = {kind: size(cache / kind) for kind in ("first_stage", "docstore", "rerank_units", "runs", "logs")}
    kinds["records"] = size(work / "results")
    kinds["stand-in data"] = size(work / "data")
    kinds["plan cache"] = size(work / "plan-cache")
    return kinds


HARNESS_PARTS = ("data_load_s", "job_build_s", "merge_s", "metrics_s", "latency_probe_s")  # per dataset, untimed stages


def per_dataset(results: Path) -> dict[str, dict[str, Any]]:
    """Per dataset, from its records: counts, the run's timed stages, the harness's own parts (data load and corpus
    index, rerank job build, unit merge, metrics, latency probes) and its wall so far (total_s)."""
    out: dict[str, dict[str, Any]] = {}
    for directory in find_record_dirs(results):
        raw = json.loads((directory / RECORD_FILE).read_text())
        timings, counts = raw.get("timings") or {}, raw.get("counts") or {}
        if timings.get("encode_s") is None:
            continue
        row = out.setdefault(raw["dataset"], {"records": 0, "pairs": counts.get("pairs"),
                                              "unique_passages": counts.get("unique_passages"),
                                              "encoder_tokens": counts.get("tokens_encoded"), "decoder_tokens": 0,
                                              "first_stage_s": timings.get("first_stage_s"),
                                              "model_load_s": timings.get("model_load_s"),
                                              "encode_s": timings.get("encode_s"), "score_s": 0.0, "total_s": 0.0,
                                              "units": (timings.get("units") or {}).get("total"),
                                              **{k: timings.get(k) for k in ("data_load_s", "job_build_s", "merge_s")},
                                              "metrics_s": 0.0, "latency_probe_s": 0.0})
        row["records"] += 1
        latency = timings.get("latency") or {}
        probe = timings.get("latency_probe_s")
        if probe is None:  # records written before it was timed: its batches x ms/pair p50
            probe = ((latency.get("timed_batches", 0) + latency.get("warmup_batches", 0))
                     * latency.get("pairs_per_batch", 0) * latency.get("ms_per_pair_p50", 0.0) / 1000)
        row["latency_probe_s"] += probe
        row["metrics_s"] += timings.get("metrics_s") or 0.0
        row["decoder_tokens"] += counts.get("prompt_tokens", 0)
        row["score_s"] += timings.get("score_s") or 0.0
        row["total_s"] = max(row["total_s"], timings.get("total_s") or 0.0)
    for row in out.values():
        row["timed_s"] = sum(row[k] or 0.0 for k in ("first_stage_s", "model_load_s", "encode_s", "score_s"))
    return dict(sorted(out.items()))


def plan_vs_actual(plan: dict[str, Any], datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows, totals = {}, {}
    for name, unit in plan["units"].items():
        actual = datasets.get(name)
        if actual is None:
            rows[name] = {"missing": True}
            continue
        row = {}
        for figure in ("pairs", "unique_passages", "encoder_tokens", "decoder_tokens"):
            planned = (unit["figures"].get(figure) or {})
            row[figure] = {"plan": planned.get("value"), "basis": planned.get("basis"), "actual": actual[figure],
                           "ratio": (planned["value"] / actual[figure]) if planned.get("value") and actual[figure] else None}
            totals.setdefault(figure, [0, 0])
            totals[figure][0] += planned.get("value") or 0
            totals[figure][1] += actual[figure] or 0
        wall = unit["figures"].get("wall_s")
        row["wall_s"] = {"plan": wall["value"] if wall else None, "actual_run_total_s": actual["total_s"]}
        rows[name] = row
    return {"per_dataset": rows, "total": {k: {"plan": p, "actual": a, "ratio": p / a if a else None}
                                           for k, (p, a) in totals.items()}}


def _gunzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def compare_trees(ours: Path, reference: Path) -> dict[str, Any]:
    """Every record of `ours` against the reference record of the same dataset and compression (signatures differ
    when the data sits elsewhere: a given run file's path is part of its identity): the files' bytes (gzip files
    also decompressed) and the metric values (metrics.json `stages`)."""
    def by_variant(root: Path) -> dict[tuple[str, Any], Path]:
        out = {}
        for d in find_record_dirs(root):
            raw = json.loads((d / RECORD_FILE).read_text())
            reranker = (raw.get("protocol") or {}).get("reranker") or {}
            if reranker:
                out[(raw["dataset"], reranker.get("compression"))] = d
        return out

    mine, theirs = by_variant(ours), by_variant(reference)
    result = {"records": len(mine), "matched": 0, "identical_bytes": 0, "identical_content": 0,
              "identical_metrics": 0, "differences": []}
    for key, directory in sorted(mine.items(), key=lambda kv: str(kv[0])):
        other = theirs.get(key)
        if other is None:
            result["differences"].append(f"{directory}: no reference record for {key}")
            continue
        result["matched"] += 1
        same_bytes = same_content = True
        for name in COMPARED_FILES:
            a, b = directory / name, other / name
            if not a.exists() and not b.exists():
                continue
            if not (a.exists() and b.exists()):
                same_bytes = same_content = False
                result["differences"].append(f"{a}: present in one tree only")
                continue
            if a.read_bytes() != b.read_bytes():
                same_bytes = False
                if _gunzip(a) != _gunzip(b):
                    same_content = False
                    result["differences"].append(f"{a}: content differs from {b}")
        metrics_a = json.loads((directory / RECORD_FILE).read_text())["stages"]
        metrics_b = json.loads((other / RECORD_FILE).read_text())["stages"]
        result["identical_bytes"] += same_bytes  # records whose four files are byte-identical
        result["identical_content"] += same_content
        if metrics_a == metrics_b:
            result["identical_metrics"] += 1
        else:
            result["differences"].append(f"{directory}: metric values differ")
    return result


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Rehearsal: {summary['suite']} stand-in at scale {summary['scale']}, model=tiny, "
             f"compression={summary['compression']}, {summary['workers']} workers", "",
             f"load average at the end {tuple(round(x, 2) for x in summary['load_average'])} on {summary['cpus']} CPUs; "
             f"run wall {summary['run_wall_s']:.0f} s, rehearsal wall {summary['total_wall_s']:.0f} s; "
             f"calibrated from {summary['calibrated_from'] or 'nothing (no time figures)'}; planned wall for "
             f"{summary['workers']} workers {_planned_wall(summary)}; timed stages of all datasets "
             f"{summary['timed_stage_sum_s']:.0f} s", "",
             "| stage | wall s | CPU s | peak RSS MB | exit | note |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {s['name']} | {s['wall_s']:.1f} | {_cpu(s)} | {s['peak_rss_mb']:.0f} | {s['returncode']} | {s['note']} |"
              for s in summary["stages"]]
    lines += ["", "| dataset | pairs (plan / actual) | unique passages | encoder tokens | decoder tokens | "
              "wall s (plan / run total_s) | timed stages s |", "|---|---|---|---|---|---|---:|"]
    for name, row in summary["plan_vs_actual"]["per_dataset"].items():
        if row.get("missing"):
            lines.append(f"| {name} | missing | | | | | |")
            continue
        cell = lambda f: f"{row[f]['plan']:,} / {row[f]['actual']:,} ({row[f]['basis']})"  # noqa: E731
        wall = row["wall_s"]
        planned = f"{wall['plan']:.1f}" if wall["plan"] is not None else "—"
        lines.append(f"| {name} | {cell('pairs')} | {cell('unique_passages')} | {cell('encoder_tokens')} | "
                     f"{cell('decoder_tokens')} | {planned} / {wall['actual_run_total_s']:.1f} | "
                     f"{summary['datasets'][name]['timed_s']:.1f} |")
    lines += ["", f"harness: workers' wall seconds (all processes) {summary['worker_wall_sum_s']:.1f} s = "
                  f"**{summary['harness_ratio']:.3f}x** the timed stages (first stage, model load, encode, score: "
                  f"{summary['timed_stage_sum_s']:.1f} s, summed over datasets as recorded by the worker that wrote "
                  "each record); the rest:", "", "| part | s | share of the workers' wall |", "|---|---:|---:|"]
    lines += [f"| {part} | {seconds:.1f} | {100 * seconds / summary['worker_wall_sum_s']:.1f} % |"
              for part, seconds in summary["harness_parts_s"].items()]
    lines += ["", "| total | plan | actual | plan / actual |", "|---|---:|---:|---:|"]
    for figure, row in summary["plan_vs_actual"]["total"].items():
        lines.append(f"| {figure} | {row['plan']:,} | {row['actual']:,} | {row['ratio']:.4f} |")
    lines += ["", "| disk | bytes |", "|---|---:|"]
    lines += [f"| {kind} | {n:,} |" for kind, n in summary["disk_bytes"].items()]
    if "identical_to_reference" in summary:
        ident = summary["identical_to_reference"]
        lines += ["", f"reference comparison: {ident['matched']}/{ident['records']} records matched by signature, "
                      f"{ident['identical_bytes']} with all four files byte-identical, {ident['identical_content']} identical after "
                      f"gunzip, {ident['identical_metrics']} identical metric values; differences: "
                      f"{ident['differences'][:5] or 'none'}"]
    lines += ["", f"suite summary lists {len(summary['suite_summary_units'])} units; report names "
                  f"{sum(summary['report_lists_datasets'].values())}/{len(summary['report_lists_datasets'])} datasets", ""]
    return "\n".join(lines)


def _cpu(stage: dict[str, Any]) -> str:
    return "—" if stage.get("cpu_s") is None else f"{stage['cpu_s']:.1f}"


def _planned_wall(summary: dict[str, Any]) -> str:
    wall = (summary.get("plan_total") or {}).get("wall_s")
    if not wall:
        return "— (not calibrated)"
    return f"{wall['value']:.0f} s (run {100 * (summary['run_wall_s'] / wall['value'] - 1):+.1f} %)"


def write(summary: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(f"{out}.json"), summary)  # not with_suffix: names like beir-0.05 hold a dot
    Path(f"{out}.md").write_text(markdown(summary))

"""Regression gate: paired tests checked against hand-computed and independent references, Holm against a hand example,
planted effects, protocol refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from kalm_eval.report.compare import PASS, REFUSED, REGRESSION, CompareOptions, compare_records
from kalm_eval.report.compare_render import to_markdown
from kalm_eval.report.protocol import protocol_differences
from kalm_eval.report.stats import bootstrap_ci, bootstrap_test, holm, randomization_test, stratified_test
from kalm_eval.result import discover

from .conftest import synthetic_values, write_record


def records(path):
    return discover(path).records


def _scipy_paired_p(x, y, n_resamples, seed=0):
    res = stats.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples",
                                 vectorized=True, n_resamples=n_resamples, alternative="two-sided", rng=seed)
    return res.pvalue


def test_randomization_p_equals_scipy_exact():
    # a fixed example small enough for exact enumeration (2**12 sign patterns); dyadic values keep sums exact
    base = np.array([0.5, 0.25, 1.0, 0.75, 0.0, 0.5, 0.625, 0.125, 1.0, 0.375, 0.875, 0.25])
    cand = np.array([0.375, 0.25, 0.875, 0.5, 0.0, 0.25, 0.75, 0.0, 1.0, 0.25, 0.75, 0.125])
    ours = randomization_test(cand - base, n_resamples=10000)
    theirs = _scipy_paired_p(cand, base, n_resamples=10000)
    assert ours == pytest.approx(theirs, abs=1e-12)
    # by hand: 9 non-zero differences, magnitudes 7 x 0.125 + 2 x 0.25 (one +0.125), sum -1.125; sign patterns with
    # sum <= -1.125 = no positive (1) or a single positive 0.125 (7): 8 of 2**9, times 2**3 for the 3 zero differences
    # -> one-sided 64 / 4096; two-sided (scipy: 2 x the smaller tail) = 0.03125
    d = cand - base
    assert np.count_nonzero(d == 0) == 3 and d.sum() == -1.125
    assert ours == pytest.approx(2 * 64 / 4096, abs=1e-12)


def _hand_sign_flip_p(d, n_resamples, seed):
    """An independent Monte Carlo sign-flip test: the two-sided p as scipy defines it (+1 for random resamples)."""
    rng = np.random.default_rng(seed)
    null = (rng.choice([-1.0, 1.0], size=(n_resamples, d.size)) * d).mean(axis=1)
    obs = d.mean()
    less = (np.count_nonzero(null <= obs) + 1) / (n_resamples + 1)
    greater = (np.count_nonzero(null >= obs) + 1) / (n_resamples + 1)
    return min(1.0, 2 * min(less, greater))


def test_randomization_p_agrees_within_monte_carlo_error():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 300)
    cand = np.clip(base + rng.normal(-0.01, 0.1, 300), 0, 1)
    ours = randomization_test(cand - base, n_resamples=20000, seed=0)
    theirs = _hand_sign_flip_p(cand - base, n_resamples=20000, seed=1)
    mc_error = 4 * np.sqrt(ours * (1 - ours) / 20000)  # 4 standard errors of a Monte Carlo p at B = 20000
    assert abs(ours - theirs) < 2 * mc_error, (ours, theirs, mc_error)
    assert 0.01 < ours < 0.9  # a genuinely intermediate example
    assert ours == randomization_test(cand - base, n_resamples=20000, seed=0)  # seeded: reproducible


def test_bootstrap_ci_and_p():
    rng = np.random.default_rng(5)
    d = rng.normal(-0.02, 0.08, 300)
    lo, hi = bootstrap_ci(d, n_resamples=20000, seed=0)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)  # the normal-theory interval the percentile CI approximates
    assert lo < d.mean() < hi
    assert abs((hi - lo) / 2 - half) < 0.1 * half and abs((lo + hi) / 2 - d.mean()) < 0.2 * half
    assert bootstrap_test(d, 10000) < 0.001
    assert bootstrap_test(np.zeros(300)) == 1.0 and randomization_test(np.zeros(300)) == 1.0
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)
    # a mean difference of about one standard error: p near the normal-theory 0.32, within Monte Carlo error
    e = rng.normal(0, 1, 400)
    e = (e - e.mean()) / e.std(ddof=1) + 1.0 / np.sqrt(400) * 1.0
    p = bootstrap_test(e / 10, 20000, seed=2)
    assert abs(p - 0.317) < 0.03, p


def test_stratified_test_reduces_to_the_single_dataset_test():
    rng = np.random.default_rng(8)
    d = rng.normal(-0.01, 0.1, 200)
    single = randomization_test(d, n_resamples=20000, seed=0)
    strat = stratified_test([d], "randomization", n_resamples=20000, seed=0)
    assert abs(single - strat) < 4 * np.sqrt(single * (1 - single) / 20000) * 2
    assert stratified_test([np.zeros(5), np.zeros(7)], "bootstrap") == 1.0
    assert np.isnan(stratified_test([], "bootstrap"))


def test_holm_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4 0.02, x3 0.03, x2 0.06, x1 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5]
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])
    out = holm([0.01, float("nan")])
    assert out[0] == 0.01 and np.isnan(out[1])


def planted(n=300, drop=0.02, noise=0.15, seed=0):
    """Baseline per-query values and a candidate whose mean is lower by exactly `drop` (bounded per-query noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n)
    eps = rng.uniform(-noise, noise, n)
    eps -= eps.mean()
    return base, base - drop + eps


def _gate(tmp_path, base_vals, cand_vals, *, opts=None, **kw):
    b = write_record(tmp_path / "base", values=base_vals, n_queries=len(base_vals), **kw)
    c = write_record(tmp_path / "cand", values=cand_vals, n_queries=len(cand_vals), **kw)
    return compare_records(records(b), records(c), opts or CompareOptions())


def test_planted_drop_is_flagged_and_identical_rerun_passes(tmp_path):
    base, cand = planted()
    assert cand.mean() - base.mean() == pytest.approx(-0.02)
    res = _gate(tmp_path / "drop", base, cand)
    (row,) = res.rows
    assert row.n == 300 and row.delta == pytest.approx(-0.02) and row.p_holm < 0.001 and row.regression
    assert row.ci[1] < -0.01
    assert res.exit_code == REGRESSION and res.verdict.startswith("FAIL")

    same = _gate(tmp_path / "same", base, base.copy())
    assert same.exit_code == PASS and same.rows[0].delta == 0 and same.rows[0].p == 1.0

    # bootstrap agrees
    assert _gate(tmp_path / "boot", base, cand, opts=CompareOptions(test="bootstrap")).exit_code == REGRESSION


def test_small_or_noisy_drops_pass(tmp_path):
    base, cand = planted(drop=0.005, noise=0.02)  # significant but under the margin
    res = _gate(tmp_path / "small", base, cand)
    assert res.rows[0].p < 0.001 and res.exit_code == PASS
    base, cand = planted(drop=0.02, noise=0.15, n=30, seed=1)  # over the margin but not significant
    res = _gate(tmp_path / "noisy", base, cand)
    assert res.rows[0].delta < -0.01 and res.rows[0].p_holm > 0.05 and res.exit_code == PASS
    # an improvement never fails
    base, cand = planted(drop=-0.05)
    assert _gate(tmp_path / "up", base, cand).exit_code == PASS


def test_holm_across_datasets_flags_only_the_planted_one(tmp_path):
    base_dir, cand_dir = tmp_path / "b", tmp_path / "c"
    for i, ds in enumerate(["beir/scifact", "beir/nfcorpus", "beir/arguana"]):
        base, cand = planted(drop=0.02 if ds == "beir/nfcorpus" else 0.0, seed=i)
        write_record(base_dir / ds.replace("/", "__"), dataset=ds, values=base)
        write_record(cand_dir / ds.replace("/", "__"), dataset=ds, values=cand)
    res = compare_records(records(base_dir), records(cand_dir), CompareOptions())
    flagged = {r.dataset for r in res.rows if r.regression}
    assert flagged == {"beir/nfcorpus"} and res.exit_code == REGRESSION
    assert all(r.p_holm >= r.p for r in res.rows)
    (avg,) = res.averages
    assert avg.delta == pytest.approx(-0.02 / 3) and not avg.regression


def test_average_gate_catches_a_spread_out_drop(tmp_path):
    """Each dataset drops 0.012 with p ~ 0.03 (not significant after Holm over 4), but the macro average is clear."""
    base_dir, cand_dir = tmp_path / "b", tmp_path / "c"
    for i in range(4):
        rng = np.random.default_rng(10 + i)
        base = rng.uniform(0.3, 0.7, 300)
        eps = rng.normal(0, 1, 300)
        eps = (eps - eps.mean()) / eps.std() * 0.095
        write_record(base_dir / f"d{i}", dataset=f"beir/d{i}", values=base)
        write_record(cand_dir / f"d{i}", dataset=f"beir/d{i}", values=base - 0.012 + eps)
    res = compare_records(records(base_dir), records(cand_dir), CompareOptions())
    assert not any(r.regression for r in res.rows), [(r.p, r.p_holm) for r in res.rows]
    (avg,) = res.averages
    assert avg.delta == pytest.approx(-0.012) and avg.p < 0.01 and avg.regression
    assert res.exit_code == REGRESSION


@pytest.mark.parametrize("change, named", [
    ({"ratio": 8}, "reranker.compression: baseline 4, candidate 8"),
    ({"depth": 50}, "reranker.depth"),
    ({"instruction": "Given a query, retrieve documents that answer the query."}, "reranker.instruction"),
    ({"first_stage": {"kind": "dense", "model": "m"}}, "first_stage.source.kind"),
    ({"files": {"corpus": "d" * 64, "queries": "q" * 64, "qrels": "r" * 64}}, "dataset.files.corpus"),
    ({"model": None}, "reranker: candidate is first stage only"),
])
def test_protocol_mismatch_is_refused_and_named(tmp_path, change, named):
    base, _ = planted()
    b = write_record(tmp_path / "b", values=base)
    kw = {"values": base, **change}
    c = write_record(tmp_path / "c", **kw)
    res = compare_records(records(b), records(c), CompareOptions())
    assert res.exit_code == REFUSED and not res.rows
    assert named in "\n".join(res.refused)
    assert "Refused" in to_markdown(res, [str(b)], [str(c)])


def test_different_model_is_allowed_and_ratio_diff_can_be_allowed(tmp_path):
    base, cand = planted(drop=0.0)
    b = write_record(tmp_path / "b", model="nano", values=base)
    c = write_record(tmp_path / "c", model="mycheckpoint", values=cand)
    assert compare_records(records(b), records(c), CompareOptions()).exit_code == PASS
    c8 = write_record(tmp_path / "c8", model="nano", ratio=8, values=cand)
    opts = CompareOptions(allow_protocol_diff=("reranker.compression",))
    assert compare_records(records(b), records(c8), opts).exit_code == PASS


def test_missing_datasets_warn_or_refuse(tmp_path):
    base, cand = planted(drop=0.0)
    for ds in ("beir/scifact", "beir/nfcorpus"):
        write_record(tmp_path / "b" / ds.replace("/", "__"), dataset=ds, values=base)
    write_record(tmp_path / "c" / "scifact", dataset="beir/scifact", values=cand)
    b, c = records(tmp_path / "b"), records(tmp_path / "c")
    res = compare_records(b, c, CompareOptions())
    assert res.exit_code == PASS and res.warnings == ["beir/nfcorpus: only in baseline, not compared"]
    res = compare_records(b, c, CompareOptions(require_all=True))
    assert res.exit_code == REFUSED and "require_all" in res.refused[0]


def test_query_sets_must_match(tmp_path):
    b = write_record(tmp_path / "b", n_queries=10, values=np.full(10, 0.5))
    c = write_record(tmp_path / "c", query_ids=[f"x{i}" for i in range(10)], values=np.full(10, 0.5))
    res = compare_records(records(b), records(c), CompareOptions())
    assert res.exit_code == REFUSED and "query sets differ" in res.refused[0]


def test_sweeps_pair_by_protocol(tmp_path):
    for side in ("b", "c"):
        for r in (1, 4, 32):
            vals = synthetic_values(300, 0.6, r)
            if side == "c" and r == 32:
                vals = vals - 0.03
            write_record(tmp_path / side / f"r{r}", model="nano", ratio=r, values=vals)
    res = compare_records(records(tmp_path / "b"), records(tmp_path / "c"), CompareOptions())
    assert sorted(r.label for r in res.rows) == ["beir/scifact r=1", "beir/scifact r=32", "beir/scifact r=4"]
    assert {r.label for r in res.rows if r.regression} == {"beir/scifact r=32"}
    # a ratio with no partner on the other side is refused, naming the closest record's difference
    write_record(tmp_path / "b" / "r8", model="nano", ratio=8)
    res = compare_records(records(tmp_path / "b"), records(tmp_path / "c"), CompareOptions())
    assert res.exit_code == REFUSED and "reranker.compression" in res.refused[0]


def test_protocol_differences_ignores_model_and_harness_version():
    a = {"harness_version": "0.1.0", "reranker": {"model": {"checkpoint": "x"}, "compression": 4}}
    b = {"harness_version": "0.2.0", "reranker": {"model": {"checkpoint": "y"}, "compression": 4}}
    assert protocol_differences(a, b) == []
    assert protocol_differences(a, {**b, "reranker": {"compression": 8}}) == ["reranker.compression: baseline 4, candidate 8"]


def test_options_are_validated():
    with pytest.raises(ValueError):
        CompareOptions(test="t-test")
    with pytest.raises(ValueError):
        CompareOptions(alpha=1.5)


def test_the_gate_refuses_checkpoints_fed_other_inputs(tmp_path):
    """Two checkpoints may differ in everything that identifies them, not in what they are fed: a candidate run at
    8,192 document tokens against a baseline at 1,024 compares two protocols (issue 24); allowed when named."""
    import copy

    from kalm_eval.report.protocol import protocol_differences

    base = {"dataset": {"name": "beir/scifact"}, "reranker": {"name": "kalm", "compression": 4, "model": {
        "checkpoint": {"checkpoint": "KaLM-Embedding/KaLM-Reranker-V1-Nano", "revision": "a" * 40}, "doc_max_len": 1024,
        "query_max_len": 512, "pooling_rule": "mep-v1"}}}
    other_checkpoint = copy.deepcopy(base)
    other_checkpoint["reranker"]["model"]["checkpoint"] = {"checkpoint": "KaLM-Embedding/KaLM-Reranker-V1-Nano-R2",
                                                      "revision": "b" * 40}
    assert protocol_differences(base, other_checkpoint) == []
    longer = copy.deepcopy(other_checkpoint)
    longer["reranker"]["model"]["doc_max_len"] = 8192
    assert protocol_differences(base, longer) == ["reranker.model.doc_max_len: baseline 1024, candidate 8192"]
    assert protocol_differences(base, longer, ["reranker.model.doc_max_len"]) == []

"""Sweeps: sharded runs merge to the unsharded table row for row; a resume with other settings
(or another pair of the same name) is refused with what differs; diverged runs are flagged and
counted, never dropped silently."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from reindir_nb import evaluate, phantom
from reindir_nb.data.preprocess import prepare
from reindir_nb.evaluation.results import TIMING_COLUMNS

REG = dict(points_per_step=300, prealign="none")
KW = dict(seeds=[0, 1], iterations=[0, 2], progress=False, **REG)


@pytest.fixture(scope="module")
def pairs():
    return [prepare(phantom.make_pair(s, "nlst", "smoke", n_landmarks=20), "smoke") for s in range(2)]


def _numbers(table: pd.DataFrame) -> pd.DataFrame:
    """The table without its wall-clock columns (the only ones that differ between runs)."""
    return table.drop(columns=TIMING_COLUMNS).reset_index(drop=True)


def test_two_shards_merge_to_the_unsharded_table(tmp_path, pairs):
    full = evaluate.sweep(pairs, {"ccIDIR": "random"}, results_path=tmp_path / "full.csv", **KW)
    base = tmp_path / "sharded" / "sweep.csv"
    parts = [evaluate.sweep(pairs, {"ccIDIR": "random"}, results_path=base, shard=(i, 2), **KW) for i in range(2)]
    assert [p.attrs["shard"] for p in parts] == [(0, 2), (1, 2)]
    # round robin over the 4 sorted (pair, method, seed) cells: 2 runs each, disjoint
    cells = [set(map(tuple, p[["pair", "seed"]].drop_duplicates().to_numpy().tolist())) for p in parts]
    assert len(cells[0]) == len(cells[1]) == 2 and not cells[0] & cells[1]
    paths = evaluate.shard_tables(base)
    assert [p.name for p in paths] == ["sweep.shard-0-of-2.csv", "sweep.shard-1-of-2.csv"]
    merged = evaluate.merge_results(paths)
    pd.testing.assert_frame_equal(_numbers(merged), _numbers(evaluate.load_results(tmp_path / "full.csv")),
                                  check_exact=False, rtol=1e-6)
    assert len(merged) == len(full) == 2 * 2 * 2


def test_merge_refuses_a_missing_shard_and_a_duplicated_run(tmp_path, pairs):
    base = tmp_path / "sweep.csv"
    evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=base, shard="0/2", **KW)
    with pytest.raises(ValueError, match="missing shard table"):
        evaluate.merge_results(evaluate.shard_tables(base))
    evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=base, shard="1/2", **KW)
    shard0 = evaluate.shard_tables(base)[0]
    with pytest.raises(ValueError, match="more than one table"):
        evaluate.merge_results([shard0, shard0])
    # a shard that lost a run (killed before it finished) is caught by its grid manifest
    t = pd.read_csv(shard0)
    t[t["seed"] != t["seed"].iloc[0]].to_csv(shard0, index=False)
    with pytest.raises(ValueError, match="missing or incomplete"):
        evaluate.merge_results(evaluate.shard_tables(base))


@pytest.mark.parametrize("bad", [(2, 2), (-1, 2), "3", "1/0", (0,)])
def test_bad_shard_specs_are_refused(bad):
    with pytest.raises(ValueError, match="shard"):
        evaluate.resolve_shard(bad)


def test_shard_auto_reads_torchrun_rank_and_world_size(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert evaluate.resolve_shard("auto") == (1, 3)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        evaluate.resolve_shard("auto")


def test_resume_with_other_settings_names_the_difference(tmp_path, pairs):
    path = tmp_path / "sweep.csv"
    kw = dict(KW, seeds=[0])
    evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=path, lr=1e-4, **kw)
    with pytest.raises(evaluate.FingerprintMismatch, match=r"lr 0\.0001 in the table, 0\.0003 now"):
        evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=path, lr=3e-4, **kw)
    redone = evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=path, lr=3e-4, resume=False, **kw)
    assert redone.attrs["computed"] == [(pairs[0].name, "ccIDIR", 0)]
    again = evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=path, lr=3e-4, **kw)
    assert again.attrs["computed"] == []  # the same settings now resume: nothing recomputed


def test_another_pair_of_the_same_name_is_not_a_finished_run(tmp_path, pairs):
    path = tmp_path / "sweep.csv"
    kw = dict(KW, seeds=[0])
    evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=path, **kw)
    p = pairs[0]
    shifted = replace(p, fixed_landmarks=p.fixed_landmarks + 0.5)  # same name, other content
    with pytest.raises(evaluate.FingerprintMismatch, match="another pair of the same name"):
        evaluate.sweep([shifted], {"ccIDIR": "random"}, results_path=path, **kw)


def test_a_diverged_run_is_flagged_and_counted(tmp_path, pairs):
    kw = dict(KW, seeds=[0], iterations=[0, 4])
    stable = evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=tmp_path / "stable.csv", **kw)
    assert not stable["diverged"].any()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        blown = evaluate.sweep(pairs[:1], {"ccIDIR": "random"}, results_path=tmp_path / "blown.csv", lr=1e3, **kw)
    assert bool(blown.loc[blown["iteration"] == 4, "diverged"].iloc[0])
    assert not bool(blown.loc[blown["iteration"] == 0, "diverged"].iloc[0])
    both = pd.concat([stable.assign(method="stable"), blown.assign(method="blown")], ignore_index=True)
    summary = evaluate.summary_table(both, iterations=[0, 4])
    row = summary[(summary["method"] == "blown") & (summary["iteration"] == 4)].iloc[0]
    assert row["n_runs"] == 1 and row["n_diverged"] == 1 and np.isnan(row["median"])
    assert summary.loc[summary["method"] == "stable", "n_diverged"].sum() == 0
    assert "(1 diverged)" in evaluate.format_summary(summary).to_string()

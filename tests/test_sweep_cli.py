"""``python -m reindir_nb.sweep``: two shards merged equal the one-process table; bad input is a
clear message and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from reindir_nb import evaluate
from reindir_nb import sweep as cli
from reindir_nb.evaluation.results import TIMING_COLUMNS

ARGS = ["--profile", "smoke", "--methods", "ccIDIR", "--seeds", "2", "--iterations", "0", "2", "--styles", "nlst",
        "--held-out-per-style", "1", "--points-per-step", "300", "--quiet"]


def test_sharded_cli_sweep_merges_to_the_single_process_table(tmp_path):
    ws = str(tmp_path / "ws")
    assert cli.main(["--workspace", ws, *ARGS, "--results", str(tmp_path / "one.csv"), "--shard", "0/1"]) == 0
    for i in range(2):
        assert cli.main(["--workspace", ws, *ARGS, "--shard", f"{i}/2"]) == 0
    assert cli.main(["--workspace", ws, "--profile", "smoke", "--merge"]) == 0
    merged = evaluate.load_results(tmp_path / "ws" / "results" / "sweep.csv")
    single = evaluate.load_results(tmp_path / "one.csv")
    assert len(merged) == 2 * 2  # 1 held-out pair x 2 seeds (one per shard) x 2 iterations
    pd.testing.assert_frame_equal(merged.drop(columns=TIMING_COLUMNS), single.drop(columns=TIMING_COLUMNS),
                                  check_exact=False, rtol=1e-6)


def test_bad_input_gives_a_message_and_exit_code_2(tmp_path, capsys):
    ws = str(tmp_path / "empty")
    assert cli.main(["--workspace", ws, "--profile", "smoke", "--methods", "REINDIR"]) == 2
    assert "no REINDIR model" in capsys.readouterr().err
    assert cli.main(["--workspace", ws, "--profile", "smoke", "--merge"]) == 2
    assert "no shard tables" in capsys.readouterr().err
    assert cli.main(["--workspace", ws, *ARGS, "--shard", "2/2"]) == 2
    assert "need 0 <= index < count" in capsys.readouterr().err
    bad = subprocess.run([sys.executable, "-m", "reindir_nb.sweep", "--profile", "huge"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'huge'" in bad.stderr

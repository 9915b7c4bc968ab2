"""Distributed meta-training (torch.distributed, gloo, 3 CPU processes of 1 thread) against the
serial loop, resume across serial/distributed checkpoints, divergence on one rank, the train CLI.

Tolerance: each task's arithmetic is the same in a rank as in the serial run (1 thread, same
seeds per (seed, step, task)), and the all-reduce adds only zeros to every task's row before the
rows are summed in task order, so the results agree to the last bit on this machine. The
comparisons allow 1e-6 of the templates' change over training (and 1e-9 absolute), orders of
magnitude below what a wrong average would do (dividing by the ranks instead of the tasks
changes the step by 1/2 or more here), so that another BLAS build cannot make the test flaky.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

import reindir_nb as rn
from reindir_nb.meta import distributed as mdist
from reindir_nb.meta import training as meta
from reindir_nb.meta.trainer import Trainer
from reindir_nb.train import main as train_main

WORLD = 3
TINY = dict(outer_steps=3, inner_steps=2, inner_points=256, progress=False)
JOBS = {  # name -> (kind, sets, settings); every one runs on 3 ranks and serially
    "reptile6": ("reptile", 3, dict(seed=1, tasks_per_set=2)),              # 6 tasks: 2 per rank
    "reindir2": ("reindir", 2, dict(seed=2, encoder_update="averaged", warm_start=False)),  # 2 tasks: one rank idle
    "reindir3": ("reindir", 3, dict(seed=3, encoder_update="averaged", encoder_loss_at="adapted", warm_start=False)),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """1 torch thread in this module (what every rank uses; the serial references must match it,
    and 2 threads on 2 busy cores only spin), restored after."""
    with _one_thread():
        yield


@pytest.fixture(scope="module")
def cohorts():
    return {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile="smoke"), "smoke") for i in range(2)]
            for s in ("cbct", "dirlab", "nlst")}


def _sets(cohorts, n):
    return {k: cohorts[k] for k in sorted(cohorts)[:n]}


def _train(job, cohorts, **kw):
    kind, n, settings = JOBS[job]
    train = meta.train_reptile if kind == "reptile" else meta.train_reindir
    return train(_sets(cohorts, n), "smoke", **{**TINY, **settings, **kw})


def _worker(rank, world, port, folder, cohorts):
    """One rank: the jobs distributed, a stop + resume, a resume of a serial checkpoint, a
    divergence injected on rank 1 only. Saves every model as ``{job}_rank{rank}.pt``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    folder = Path(folder)
    warnings.simplefilter("ignore")
    comm = mdist.setup("cpu", threads=1, timeout_s=120)
    assert (comm.rank, comm.world, comm.device.type, torch.get_num_threads()) == (rank, world, "cpu", 1)
    for job in JOBS:
        _train(job, cohorts, distributed=True).save(folder / f"{job}_rank{rank}.pt")
    # stopped after 1 step (checkpoint and log only where rank 0 writes), resumed serially by the test
    _train("reindir3", cohorts, distributed=True, stop_after=1, checkpoint=folder / f"stop_rank{rank}.ckpt",
           checkpoint_every=1, log_path=folder / f"stop_rank{rank}.csv").save(folder / f"stop_rank{rank}.pt")
    # resume the serial checkpoint the test wrote at step 1 (same path on every rank)
    _train("reptile6", cohorts, distributed=True, checkpoint=folder / "serial.ckpt").save(folder / f"resumed_rank{rank}.pt")
    # a non-finite loss on rank 1 only (injected) stops every rank after the same step
    task = Trainer._task

    def failing(self, pair):
        if self.comm.rank == 1 and self.step == 1:
            raise meta.Diverged("injected non-finite loss")
        return task(self, pair)

    Trainer._task = failing
    _train("reptile6", cohorts, distributed=True).save(folder / f"diverged_rank{rank}.pt")
    Trainer._task = task
    # the command line with the variables torchrun sets (last: it tears the process group down)
    assert train_main(["reindir", "--workspace", str(folder / "cli"), *CLI_RUN, "--outer-steps", "3"]) == 0
    mdist.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, args, nprocs, timeout_s=240):
    ctx = mp.start_processes(fn, args=(nprocs, _free_port(), *args), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers still running after {timeout_s} s (a hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


@pytest.fixture(scope="module")
def ranks(cohorts, tmp_path_factory):
    """Runs the 3-rank session once (after the serial checkpoint it resumes is written)."""
    folder = tmp_path_factory.mktemp("ranks")
    with _one_thread():
        _train("reptile6", cohorts, stop_after=1, checkpoint=folder / "serial.ckpt")
    _spawn(_worker, (str(folder), cohorts), WORLD)
    return folder


class _one_thread:
    """torch threads set to 1 inside the block (what each rank uses), restored after."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def _tensors(model):
    t = model if isinstance(model, meta.ReptileTemplate) else model.template
    out = {f"template{i}": p for i, p in enumerate(t.forward + t.backward)}
    if isinstance(model, meta.ReindirModel):
        out.update({k: v for k, v in model.state_dict().items()})
    return out


def _assert_same(got, want, start, what):
    """Every tensor of ``got`` equals ``want`` to 1e-6 of the change from ``start`` (see top)."""
    g, w, s = _tensors(got), _tensors(want), _tensors(start)
    assert g.keys() == w.keys()
    for k in w:
        change = float((w[k] - s[k]).abs().max())
        torch.testing.assert_close(g[k], w[k], rtol=0, atol=1e-6 * change + 1e-9, msg=lambda m: f"{what} {k}: {m}")


_CACHE: dict = {}


def _initial(job, cohorts):
    """The untrained model of a job (what the tolerance is relative to)."""
    if ("initial", job) not in _CACHE:
        _CACHE["initial", job] = _train(job, cohorts, outer_steps=0)
    return _CACHE["initial", job]


def _serial(job, cohorts):
    """The serial run of a job, 1 thread (computed once; its log in ``_CACHE["log", job]``)."""
    if ("serial", job) not in _CACHE:
        log = Path(tempfile.mkdtemp()) / f"{job}.csv"
        with _one_thread():
            _CACHE["serial", job] = _train(job, cohorts, log_path=log)
        _CACHE["log", job] = log
    return _CACHE["serial", job]


@pytest.mark.parametrize("job", list(JOBS))
def test_distributed_equals_serial(ranks, cohorts, job):
    serial = _serial(job, cohorts)
    start = _initial(job, cohorts)
    models = [meta.load(ranks / f"{job}_rank{r}.pt") for r in range(WORLD)]
    for r, m in enumerate(models):
        _assert_same(m, serial, start, f"{job} rank {r}")
        assert m.info["ranks"] == WORLD and m.info["outer_steps"] == 3 and m.info["fingerprint"] == serial.info["fingerprint"]
    moved = _tensors(serial)
    assert any(not torch.equal(moved[k], v) for k, v in _tensors(start).items() if k.startswith("template"))
    if JOBS[job][0] == "reindir":  # the encoder learned something (else the comparison proves little)
        assert any(not torch.equal(moved[k], v) for k, v in _tensors(start).items() if k.startswith("encoder"))


def test_the_tolerance_catches_a_one_percent_wrong_average(cohorts):
    """A wrong divisor scales the averaged delta like eps does: 1 % of it is far outside the tolerance."""
    with _one_thread():
        right = _train("reptile6", cohorts, outer_steps=1)
        off = _train("reptile6", cohorts, outer_steps=1, eps=0.99)
    with pytest.raises(AssertionError):
        _assert_same(off, right, _initial("reptile6", cohorts), "eps 0.99 vs 1")


def test_stop_and_resume_across_serial_and_distributed(ranks, cohorts, tmp_path):
    # only rank 0 wrote (each rank was given its own file names)
    assert (ranks / "stop_rank0.ckpt").is_file() and (ranks / "stop_rank0.csv").is_file()
    assert not any((ranks / f"stop_rank{r}.{ext}").exists() for r in (1, 2) for ext in ("ckpt", "csv"))
    ck = tmp_path / "from_ranks.ckpt"
    ck.write_bytes((ranks / "stop_rank0.ckpt").read_bytes())
    assert torch.load(ck, weights_only=True)["step"] == 1
    full = _serial("reindir3", cohorts)
    ck_log = tmp_path / "resumed.csv"
    (ranks / "stop_rank0.csv").replace(ck_log)  # the log rank 0 wrote for step 0 is continued
    with _one_thread():
        resumed = _train("reindir3", cohorts, checkpoint=ck, log_path=ck_log)  # serial resume
    start = _initial("reindir3", cohorts)
    _assert_same(resumed, full, start, "serial resume of a 3-rank checkpoint")
    log = pd.read_csv(ck_log)
    assert list(log["step"]) == [0, 1, 2]
    want = pd.read_csv(_CACHE["log", "reindir3"])
    pd.testing.assert_frame_equal(log.drop(columns="seconds"), want.drop(columns="seconds"), rtol=1e-6)
    reptile = _serial("reptile6", cohorts)
    for r in range(WORLD):
        _assert_same(meta.load(ranks / f"resumed_rank{r}.pt"), reptile, _initial("reptile6", cohorts),
                     f"3-rank resume of a serial checkpoint, rank {r}")


def test_divergence_on_one_rank_stops_every_rank(ranks, cohorts):
    models = [meta.load(ranks / f"diverged_rank{r}.pt") for r in range(WORLD)]
    with _one_thread():
        one_step = _train("reptile6", cohorts, outer_steps=3, stop_after=1)
    for r, m in enumerate(models):
        assert m.info["outer_steps"] == 1, r  # put back to the state before the failed step
        assert "outer step 1" in m.info["diverged"] and "task 1 (cbct" in m.info["diverged"], (r, m.info["diverged"])
        _assert_same(m, one_step, _initial("reptile6", cohorts), f"diverged run, rank {r}")
    assert "injected non-finite loss" in models[1].info["diverged"]  # its own message; the others name it
    assert all("on rank 1 diverged" in models[r].info["diverged"] for r in (0, 2))


def test_sequential_and_averaged_agree_with_one_task_and_refuse_ranks(cohorts, monkeypatch):
    """One task per step: an Adam step per task == one per step on the mean (a single task)."""
    one = {"nlst": cohorts["nlst"]}
    a = meta.train_reindir(one, "smoke", **{**TINY, "encoder_update": "sequential", "warm_start": False})
    b = meta.train_reindir(one, "smoke", **{**TINY, "encoder_update": "averaged", "warm_start": False})
    for k, v in _tensors(a).items():
        torch.testing.assert_close(_tensors(b)[k], v, rtol=1e-6, atol=1e-9)
    comm = mdist.Comm(0, 2, torch.device("cpu"), True)
    with pytest.raises(ValueError, match="encoder_update='averaged'"):
        Trainer(rn.meta.recipe("reindir", "smoke", warm_start=False), one, 0, comm.device, comm=comm)
    with pytest.raises(ValueError, match="tasks_per_set"):
        meta.TrainSettings.for_profile("smoke", tasks_per_set=0)
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        meta.train_reptile(one, "smoke", distributed=True, **TINY)


def test_tasks_are_seeded_by_seed_step_and_index_only(cohorts):
    """A task's draws (pair, scale, points) depend on (seed, step, task index), not on what ran before."""
    t = Trainer(rn.meta.recipe("reptile", "smoke", tasks_per_set=2), cohorts, 5, torch.device("cpu"))

    def draws(step, index):
        t.step = step
        t._seed_task(index)
        return t.rng.uniform(size=4).tolist(), torch.rand(4, generator=t.points).tolist()

    first = draws(7, 2)
    draws(3, 0)
    assert draws(7, 2) == first
    assert draws(8, 2) != first and draws(7, 3) != first
    assert t.tasks() == ["cbct", "cbct", "dirlab", "dirlab", "nlst", "nlst"]


# ------------------------------------------------------------------------------------------ CLI
CLI_RUN = ["--profile", "smoke", "--phantom", "1", "--from-scratch", "--inner-steps", "2", "--inner-points", "256",
           "--threads", "1", "--checkpoint-every", "1", "--no-progress", "--device", "cpu"]


def _phantoms():
    """What ``--phantom 1`` trains on (for the untrained model the tolerance refers to)."""
    return {s: [rn.prepare(rn.phantom.make_pair(0, s, "smoke"), "smoke")] for s in ("cbct", "dirlab", "nlst")}


def test_cli_trains_resumes_and_equals_the_3_rank_cli_run(ranks, tmp_path, capsys):
    """One process through ``main``: 2 outer steps, then resumed to 3; the same model as the
    3-rank run of the same command (the workers ran it with torchrun's variables set)."""
    ws = tmp_path / "ws"
    args = ["reindir", "--workspace", str(ws), *CLI_RUN, "--outer-steps", "2", "--encoder-update", "averaged"]
    with _one_thread():
        assert train_main(args) == 0
    model, ck = ws / "checkpoints" / "reindir.pt", ws / "checkpoints" / "reindir.ckpt"
    assert isinstance(meta.load(model), meta.ReindirModel)
    assert torch.load(ck, weights_only=True)["step"] == 2
    assert list(pd.read_csv(ws / "checkpoints" / "reindir_log.csv")["step"]) == [0, 1]
    args[args.index("--outer-steps") + 1] = "3"
    with _one_thread():
        assert train_main(args) == 0  # resumes at step 2, one more step
    assert "3 outer steps" in capsys.readouterr().out
    log = pd.read_csv(ws / "checkpoints" / "reindir_log.csv")
    one, three = meta.load(model), meta.load(ranks / "cli" / "checkpoints" / "reindir.pt")
    assert list(log["step"]) == [0, 1, 2] and one.info["outer_steps"] == 3 and one.info["ranks"] == 1
    assert three.info["ranks"] == 3 and "averaged" in three.info["settings"]["encoder_update"]
    start = meta.train_reindir(_sets(_phantoms(), 3), "smoke", outer_steps=0, progress=False, warm_start=False)
    _assert_same(one, three, start, "CLI: 1 process (resumed) vs 3 ranks")
    three_log = pd.read_csv(ranks / "cli" / "checkpoints" / "reindir_log.csv")
    pd.testing.assert_frame_equal(log.drop(columns="seconds"), three_log.drop(columns="seconds"), rtol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["reptile", "--profile", "huge"], "--profile"),
    (["reindir", "--workspace", "/no/such/folder"], "/no/such/folder"),
    (["reptile", "--phantom", "0"], "--phantom"),
    (["reptile", "--phantom", "1", "--outer-steps", "-1"], "--outer-steps"),
    (["reptile", "--phantom", "1", "--start", "x.pt"], "--start"),
    (["reindir", "--phantom", "1", "--start", "/no/such.pt"], "/no/such.pt"),
    (["reptile", "--phantom", "1", "--output", "model.txt"], "--output"),
    (["reptile", "--phantom", "1", "--fold", "0"], "--fold"),
    (["reptile", "--phantom", "1", "--folds", "2", "--fold", "2"], "--fold"),
])
def test_cli_bad_arguments_exit_2_naming_them(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        train_main(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_cli_workspace_without_prepared_pairs(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        train_main(["reptile", "--workspace", str(tmp_path)])
    assert err.value.code == 2 and "manifest.csv" in capsys.readouterr().err

"""What limits REINDIR's zero-shot start: the encoder, or what a modulation can express?

For each held-out phantom pair (seeds 10000+, never trained on), starting from a frozen Reptile
template, this fits the infusion *without an encoder*: the modulation vectors themselves
(``gamma_l`` of the embedding length and ``delta_l`` of 256, for every modulated layer of both
networks, exactly what the heads would emit) are free parameters optimised for that one pair:

* ``free-unsupervised``: Adam on the pair's zero-shot loss (the loss REINDIR's encoder is trained on);
* ``free-landmarks``: Adam on the pair's landmark distance (an oracle: the best the modulation
  family reaches at all, with the answer known);
* ``test-time``: ordinary test-time steps on all weights from the template (``register``), the
  reference a learned start has to beat;
* ``encoder``: the trained REINDIR model's start (``--reindir``), when given.

If the free unsupervised modulations reach a low TRE, the modulation family is not what holds the
encoder back (its generalisation or its training is); if even the oracle stays high, REINDIR
cannot start better than that whatever the encoder learns. TRE: mean landmark distance (mm) of the
cycle estimate as ``register`` reports it (``tre_mean_mm`` at iteration 0 of a start).

``--then N [M ...]``: from each start (the template, the encoder's, each free fit's last state) N
(and M ...) ordinary test-time steps (``register`` as a user runs it: default lr, warm-up and safe
start, so the template's swapped rows may start from the identity): what a better start is
still worth after N steps, i.e. whether the N-step error follows the start or the test-time objective.

    .venv/bin/python benchmarks/bench_modulation_capacity.py --template WS/checkpoints/reptile.pt \\
        --reindir WS/checkpoints/reindir.pt --steps 100 --directions as-generated swapped [--then 10 25]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

import reindir_nb as rn
from reindir_nb.core.device import make_generator
from reindir_nb.core.metrics import target_registration_error
from reindir_nb.data.preprocess import swap_direction
from reindir_nb.inr.network import MODULATED_LAYERS
from reindir_nb.inr.objective import Objective, Problem, landmark_error_mm
from reindir_nb.meta.infusion import modulate
from reindir_nb.meta.training import ReindirModel, ReptileTemplate


def tre_after(pair, forward, backward, config, steps=(0,), safe_start: bool = False) -> dict[int, float]:
    """``register``'s mean TRE (mm, cycle estimate) after each of ``steps`` test-time steps (0: the
    start itself) from the start (forward, backward); ``safe_start`` as in ``register``."""
    start = ReptileTemplate([p.detach().clone() for p in forward], [p.detach().clone() for p in backward], config)
    run = rn.register(pair, init=start, iterations=max(steps), record_every=1, prealign="none", progress=False,
                      safe_start=safe_start)
    tre = run.history.set_index("iteration")["tre_mean_mm"]
    return {k: float(tre[k]) for k in steps}


def zero_shot_tre(pair, forward, backward, config) -> float:
    """``register``'s iteration-0 mean TRE (mm, cycle estimate) of the start (forward, backward)."""
    return tre_after(pair, forward, backward, config)[0]


def free_fit(template, pair, problem: Problem, objective: Objective, omega: float, length: int, steps: int, lr: float,
             points: int, supervised: bool, record: list[int]) -> tuple[dict[int, float], tuple]:
    """Fit free modulation vectors for one pair: :func:`zero_shot_tre` (mm) at the ``record`` steps,
    and the last (forward, backward) params."""
    forward, backward = list(template.forward), list(template.backward)
    mods = {net: ({l: torch.zeros(length, requires_grad=True) for l in MODULATED_LAYERS},
                  {l: torch.zeros(forward[2 * l + 1].shape[0], requires_grad=True) for l in MODULATED_LAYERS})
            for net in ("forward", "backward")}
    params = [t for g, d in mods.values() for t in (*g.values(), *d.values())]
    opt = torch.optim.Adam(params, lr=lr)
    gen = make_generator(0)
    out = {}
    for step in range(steps + 1):
        f, b = modulate(forward, *mods["forward"]), modulate(backward, *mods["backward"])
        if step in record:
            out[step] = zero_shot_tre(pair, f, b, template.siren_config)
        if step == steps:
            return out, (f, b)
        if supervised:
            loss = landmark_error_mm(f, b, problem, omega)
        else:
            xf = problem.sample_points(points, gen, "fixed")
            xb = problem.sample_points(points, gen, "moving")
            loss = objective.terms(f, b, problem, xf, xb, omega)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", required=True, help="a Reptile template (.pt)")
    ap.add_argument("--reindir", default=None, help="a REINDIR model (.pt) to compare its encoder's start")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--test-pairs", type=int, default=2, help="held-out pairs per style")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam lr of the free modulations")
    ap.add_argument("--directions", nargs="+", default=["as-generated"], choices=["as-generated", "swapped"])
    ap.add_argument("--then", type=int, nargs="*", default=[],
                    help="also N test-time steps from each start (template, encoder, free fits' last state)")
    ap.add_argument("--out", default=None, help="CSV of the table (with --then, also <name>_then.csv)")
    ap.add_argument("--manifest", default=None,
                    help="instead of held-out seeds, the first --test-pairs phantom pairs per style of this prepared "
                         "folder (WORKSPACE/prepared: the pairs the models were trained on)")
    args = ap.parse_args()
    prof = rn.get_profile(args.profile)
    template = rn.meta.load(args.template)
    reindir = rn.meta.load(args.reindir) if args.reindir else None
    if reindir is not None and not isinstance(reindir, ReindirModel):
        raise SystemExit(f"--reindir {args.reindir}: not a REINDIR model")
    length = reindir.encoder.embedding_length if reindir is not None else prof.embedding_length
    omega = template.siren_config.omega
    objective = Objective()
    record = sorted({0, 10, 25, 50, args.steps} & set(range(args.steps + 1)))
    styles = ("cbct", "dirlab", "nlst")
    if args.manifest:
        saved = rn.io.load_manifest(args.manifest)
        pairs = [p for s in styles for p in [q for q in saved if q.dataset == f"phantom-{s}"][:args.test_pairs]]
    else:  # seeds never trained on
        pairs = [rn.prepare(rn.phantom.make_pair(seed=10_000 + i, style=s, profile=prof.name), prof)
                 for s in styles for i in range(args.test_pairs)]
    rows, then = [], []
    for direction in args.directions:
        for given in pairs:
            style = given.dataset.removeprefix("phantom-")
            pair = swap_direction(given) if direction == "swapped" else given
            problem = Problem.from_pair(pair)
            t0 = time.perf_counter()
            base = {"direction": direction, "style": style, "pair": pair.name}
            initial = target_registration_error(pair.fixed_landmarks, pair.moving_landmarks)["mean"]
            rows.append({**base, "method": "unregistered", "step": 0, "tre_mm": initial})
            starts = {"template": (template.forward, template.backward)}
            for name, supervised in (("free-unsupervised", False), ("free-landmarks", True)):
                tre, fitted = free_fit(template, pair, problem, objective, omega, length, args.steps, args.lr,
                                       prof.inner_points, supervised, record)
                rows += [{**base, "method": name, "step": k, "tre_mm": v} for k, v in tre.items()]
                starts[f"{name} ({args.steps} steps)"] = fitted
            run = rn.register(pair, init=template, iterations=max(r for r in record if r <= 50),
                              record_every=1, prealign="none", progress=False, safe_start=False)
            tre = run.history.set_index("iteration")["tre_mean_mm"]
            rows += [{**base, "method": "test-time (register)", "step": k, "tre_mm": float(tre[k])}
                     for k in record if k in tre.index]
            if reindir is not None:
                run = rn.register(pair, init=reindir, iterations=0, prealign="none", progress=False,
                                  safe_start=False)
                rows.append({**base, "method": "encoder", "step": 0,
                             "tre_mm": float(run.history["tre_mean_mm"].iloc[0])})
                starts["encoder"] = (run.forward, run.backward)
            for name, (f, b) in starts.items() if args.then else ():  # as a user runs them: with the safe start
                tre = tre_after(pair, f, b, template.siren_config, (0, *args.then), safe_start=True)
                then += [{**base, "start": name, "steps": k, "tre_mm": v} for k, v in tre.items()]
            print(f"{direction} {pair.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    pd.set_option("display.width", 200)
    which = "training" if args.manifest else "held-out"
    for direction, part in table.groupby("direction"):
        print(f"\n[{direction}] mean TRE (mm) over {part['pair'].nunique()} {which} pairs, by step")
        print(part.pivot_table(index="method", columns="step", values="tre_mm", aggfunc="mean").round(2).to_string())
        print("per style (last recorded step of each method):")
        last = part.sort_values("step").groupby(["pair", "method"]).tail(1)
        print(last.pivot_table(index="style", columns="method", values="tre_mm").round(2).to_string())
    if then:
        after = pd.DataFrame(then)
        if args.out:
            after.to_csv(Path(args.out).with_name(Path(args.out).stem + "_then.csv"), index=False)
        for direction, part in after.groupby("direction"):
            print(f"\n[{direction}] mean TRE (mm) of each start (0) and after {' / '.join(map(str, args.then))} "
                  "test-time steps from it")
            print(part.pivot_table(index="start", columns="steps", values="tre_mm", aggfunc="mean").round(2).to_string())


if __name__ == "__main__":
    main()

"""Train Reptile and REINDIR on phantom cohorts (three styles) and compare random init / Reptile /
REINDIR on HELD-OUT phantom pairs: mean TRE at iteration 0 and 25, mean and range over seeds.
Both models follow the profile's recipe (``rn.meta.profile_recipes``, what notebook 03 and
``python -m reindir_nb.train`` train); ``--reptile-set`` / ``--reindir-set KEY=VALUE`` change one
field of a recipe (``Recipe.with_``: training settings, and for REINDIR ``width``,
``encoder_input``, ``encoder_patch_size``).

    .venv/bin/python benchmarks/bench_meta_demo.py [--profile demo] [--outer-steps N] [--seeds 5]
        [--workspace W]   (--seeds 0: train and save only; bench_sweep_demo.py then evaluates)
        [--reindir-set encoder_steps=3 --reindir-set encoder_lr=3e-4]   (a variant of the recipe)
        [--from-scratch]   (REINDIR trains its templates too: the paper's recipe)
        [--directions as-generated swapped]   (evaluate the held-out pairs both ways)
        [--thorax 3 --skip-random --random-on-thorax]   (domain shift: bundled thorax-ct, its checks printed)
        [--methods --out DIR]   (evaluate DIR/reptile.pt and DIR/reindir.pt, e.g. the main job's checkpoints)
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import numpy as np
import pandas as pd

import reindir_nb as rn


def _key_value(text: str) -> tuple[str, object]:
    """``"key=value"`` -> (key, the value as a Python literal, else the string)."""
    key, _, value = text.partition("=")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--outer-steps", type=int, default=None)
    ap.add_argument("--train-pairs", type=int, default=None, help="phantom pairs per style for training")
    ap.add_argument("--test-pairs", type=int, default=2, help="held-out pairs per style")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--train-seed", type=int, default=0, help="seed of both trainings (encoder init, task draws)")
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--methods", nargs="*", default=["reptile", "reindir"], choices=["reptile", "reindir"],
                    help="what to train (a method not trained is loaded from OUT/<method>.pt)")
    ap.add_argument("--workspace", default=None,
                    help="also save the models as WORKSPACE/checkpoints/{reptile,reindir}.pt (what "
                         "benchmarks/bench_sweep_demo.py and notebook 04 load)")
    ap.add_argument("--reptile-set", action="append", default=[], metavar="KEY=VALUE",
                    help="change one field of the Reptile recipe (a Python literal value), repeatable")
    ap.add_argument("--reindir-set", action="append", default=[], metavar="KEY=VALUE",
                    help="change one field of the REINDIR recipe (a Python literal value), repeatable")
    ap.add_argument("--from-scratch", action="store_true",
                    help="REINDIR trains its templates too (the paper's recipe) instead of the profile's start")
    ap.add_argument("--directions", nargs="+", default=["as-generated"], choices=["as-generated", "swapped"])
    ap.add_argument("--thorax", type=int, default=0,
                    help="also evaluate on N bundled:thorax-ct pairs (real anatomy never trained on: domain shift)")
    ap.add_argument("--pairs-cache", default=None, help="save the prepared pairs here once, load them after")
    ap.add_argument("--skip-random", action="store_true",
                    help="evaluate the learned starts only (ccIDIR from a random start does not depend on the models)")
    ap.add_argument("--random-on-thorax", action="store_true",
                    help="with --skip-random: still run ccIDIR from a random start on the thorax-ct pairs")
    ap.add_argument("--heldout-every", type=int, default=25, help="log the held-out zero-shot TRE every N steps")
    args = ap.parse_args()
    prof = rn.get_profile(args.profile)
    n_train = args.train_pairs or prof.cohort_size
    styles = ("dirlab", "nlst", "cbct")
    t0 = time.perf_counter()
    cache = Path(args.pairs_cache) if args.pairs_cache else None
    names = {"train": [(s, i) for s in styles for i in range(n_train)],
             "test": [(s, 10_000 + i) for s in styles for i in range(args.test_pairs)]}  # seeds never trained on
    if cache is not None and (cache / "manifest.csv").is_file():
        saved = {p.name: p for p in rn.io.load_manifest(cache)}
    else:
        saved = {}
    def pair(style, seed):
        name = f"phantom-{style}-{seed:03d}"
        if name not in saved:
            saved[name] = rn.prepare(rn.phantom.make_pair(seed=seed, style=style, profile=prof.name), prof)
        return saved[name]
    train = {s: [pair(s, i) for t, i in names["train"] if t == s] for s in styles} if args.methods else {}
    test = [pair(s, i) for s, i in names["test"]]
    shifted = [rn.prepare(rn.load_pair("bundled:thorax-ct", seed=i), prof) for i in range(args.thorax)]
    if cache is not None and not (cache / "manifest.csv").is_file():
        rn.io.save_pairs(list(saved.values()), cache)
    print(f"data: {n_train if args.methods else 0} training pairs per style, {len(test)} held-out pairs ({time.perf_counter() - t0:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [f"{out / m}.pt" for m in ("reptile", "reindir") if m not in args.methods and not (out / f"{m}.pt").is_file()]
    if missing:  # before any training, not after it
        raise SystemExit(f"--methods {' '.join(args.methods) or '(none)'}: the models not trained are loaded from "
                         f"--out, and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: train that "
                         "method too or put its file there")
    recipes = rn.meta.profile_recipes(prof, outer_steps=args.outer_steps)
    if args.from_scratch:
        recipes["reindir"] = rn.meta.recipe("reindir", prof, warm_start=False, **(
            {} if args.outer_steps is None else {"outer_steps": args.outer_steps}))
    for kind, pairs in (("reptile", args.reptile_set), ("reindir", args.reindir_set)):
        recipes[kind] = recipes[kind].with_(**dict(_key_value(p) for p in pairs))
    trained = {}
    for method, train_fn in (("reptile", rn.meta.train_reptile), ("reindir", rn.meta.train_reindir)):
        if method not in args.methods:
            trained[method] = (rn.meta.load(out / f"{method}.pt"), float("nan"))
            continue
        recipe = recipes[method]
        start = trained["reptile"][0] if recipe.warm_start else None
        t = time.perf_counter()
        trained[method] = (train_fn(train, recipe, seed=args.train_seed, start=start, log_path=out / f"{method}_log.csv",
                                    heldout=test, heldout_every=args.heldout_every), time.perf_counter() - t)
        trained[method][0].save(out / f"{method}.pt")
    (template, t_reptile), (model, t_reindir) = trained["reptile"], trained["reindir"]
    if args.workspace:
        checkpoints = Path(args.workspace) / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        template.save(checkpoints / "reptile.pt")
        model.save(checkpoints / "reindir.pt")
    print(f"training: Reptile {t_reptile:.0f} s ({template.info['outer_steps']} outer steps), "
          f"REINDIR {t_reindir:.0f} s ({model.info['outer_steps']} outer steps)")
    if args.seeds == 0:
        return
    from reindir_nb.data.preprocess import swap_direction

    rows = []
    record = 5 if args.iterations % 5 == 0 else args.iterations
    for direction in args.directions:
        for pair, is_shifted in [(p, False) for p in test] + [(p, True) for p in shifted]:
            pair = swap_direction(pair) if direction == "swapped" else pair
            with_random = not args.skip_random or (args.random_on_thorax and is_shifted)
            for name, init in (("ccIDIR", "random"), ("Reptile", template), ("REINDIR", model)):
                if name == "ccIDIR" and not with_random:
                    continue
                for seed in range(args.seeds):
                    run = rn.register(pair, init=init, iterations=args.iterations, seed=seed, prealign="none",
                                      record_every=record, progress=False)
                    for _, r in run.history.iterrows():
                        rows.append({"direction": direction, "pair": pair.name, "style": pair.dataset, "method": name,
                                     "seed": seed, "iteration": int(r["iteration"]), "tre_mean_mm": r["tre_mean_mm"],
                                     "seconds": r["seconds"], "start": run.settings.get("start", "")})
    table = pd.DataFrame(rows)
    table.to_csv(out / "meta_demo_tre.csv", index=False)
    table = table[table["iteration"].isin({0, 10, args.iterations})]
    table["set"] = np.where(table["style"].str.startswith("phantom"), "held-out phantoms", "thorax-ct (domain shift)")
    for (group, direction), part in table.groupby(["set", "direction"]):
        direction = f"{group}, {direction}"
        per_seed = part.groupby(["method", "iteration", "seed"])["tre_mean_mm"].mean().reset_index()
        summary = per_seed.groupby(["iteration", "method"])["tre_mean_mm"].agg(["mean", "min", "max"]).round(2)
        print(f"\n[{direction}] mean TRE over held-out pairs (mm): mean and range over seeds")
        print(summary.to_string())
        means = per_seed.groupby(["iteration", "method"])["tre_mean_mm"].mean().unstack("method")
        print("REINDIR / Reptile: " + ", ".join(f"{it}: {r:.2f}" for it, r in (means["REINDIR"] / means["Reptile"]).items()))
        by_style = part.groupby(["style", "iteration", "method"])["tre_mean_mm"].mean().unstack("method").round(2)
        print(f"[{direction}] mean TRE per style (mm)")
        print(by_style.to_string())
        starts = part[part["iteration"] == 0].groupby("method")["start"].agg(
            lambda v: f"{sum(str(x).startswith('identity') for x in v)} of {len(v)} runs")
        print("safe start chose the identity: " + "; ".join(f"{k}: {v}" for k, v in starts.items()))
    print(f"\ninitial mean distance of the held-out pairs: {np.mean([p.initial_distances().mean() for p in test]):.2f} mm")
    if shifted:
        initial = np.mean([p.initial_distances().mean() for p in shifted])
        print(f"initial mean distance of the thorax-ct pairs: {initial:.2f} mm")
        shift = table[table["set"] != "held-out phantoms"]
        means = shift.groupby(["direction", "iteration", "method"])["tre_mean_mm"].mean().unstack("method")
        print("\n[thorax-ct, domain shift] REINDIR vs Reptile (mean over pairs and seeds): "
              "relative difference, each learned start vs no registration at 0, vs random init at the end")
        for (direction, iteration), row in means.iterrows():
            line = f"  {direction:12s} {iteration:3d}: REINDIR {row['REINDIR']:.2f}, Reptile {row['Reptile']:.2f} mm " \
                   f"({100 * (row['REINDIR'] / row['Reptile'] - 1):+.1f} %)"
            if iteration == 0:
                line += f"; initial {initial:.2f} mm"
            if iteration == args.iterations and "ccIDIR" in row:
                line += f"; random init {row['ccIDIR']:.2f} mm"
            print(line)


if __name__ == "__main__":
    main()

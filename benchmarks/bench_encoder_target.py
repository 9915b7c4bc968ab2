"""Which loss can teach the REINDIR encoder? A diagnostic on a FROZEN Reptile template.

The encoder + infusion heads are trained alone (the template never moves) on the demo training
phantoms, with the loss taken either

* ``--at template``: at the infused template, i.e. the zero-shot loss that iteration 0 measures
  (what ``TrainSettings(encoder_loss_at="template")`` uses), or
* ``--at adapted``: at the weights after ``inner_steps`` SGD steps on the infused template, with the
  embedding re-attached (Algorithm 1's first-order encoder update, ``encoder_loss_at="adapted"``).

Every ``--eval-every`` steps it prints the zero-shot mean TRE (mm) of the template and of the
template + encoder on the held-out phantoms (seeds 10000+, 2 per style), per pair and the mean.

    .venv/bin/python benchmarks/bench_encoder_target.py --template benchmarks/results/meta_demo/reptile.pt \
        --at template --steps 400        # ~0.8 s per step on 2 cores
    .venv/bin/python benchmarks/bench_encoder_target.py --template ... --at adapted --steps 100   # ~2.6 s per step
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import reindir_nb as rn
from reindir_nb.core.device import make_generator
from reindir_nb.inr.network import clone_params
from reindir_nb.meta.training import ReindirModel
from reindir_nb.inr.objective import LossWeights, Problem, ccidir_terms
from reindir_nb.data.preprocess import scale_augment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", required=True, help="a Reptile template (.pt) trained at this profile")
    ap.add_argument("--at", choices=["template", "adapted"], default="template")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam lr of encoder + heads (constant)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--embedding-length", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=100)
    args = ap.parse_args()
    prof = rn.get_profile(args.profile)
    torch.manual_seed(0)
    styles = ("cbct", "dirlab", "nlst")
    train = {s: [rn.prepare(rn.phantom.make_pair(seed=i, style=s, profile=prof.name), prof)
                 for i in range(prof.cohort_size)] for s in styles}
    test = [rn.prepare(rn.phantom.make_pair(seed=10_000 + i, style=s, profile=prof.name), prof)
            for s in ("dirlab", "nlst", "cbct") for i in range(2)]
    template = rn.meta.load(args.template)
    model = ReindirModel(template, prof.patch_size, prof.encoder_width, args.embedding_length or prof.embedding_length)
    opt = torch.optim.Adam(list(model.encoder.parameters()) + list(model.heads.parameters()), lr=args.lr)
    rng, gen = np.random.default_rng(0), make_generator(1)
    weights = LossWeights()

    def loss(problem: Problem, forward, backward) -> torch.Tensor:
        xf = problem.sample_points(prof.inner_points, gen, "fixed")
        xb = problem.sample_points(prof.inner_points, gen, "moving")
        return ccidir_terms(forward, backward, problem, xf, xb, "jacobian", weights)["total"]

    def evaluate(step: int) -> None:
        model.eval()
        tre = {name: [float(rn.register(p, init=init, iterations=0, prealign="none", progress=False)
                            .history["tre_mean_mm"].iloc[0]) for p in test]
               for name, init in (("Reptile", template), ("REINDIR", model))}
        model.train()
        print(f"step {step}: zero-shot TRE (mm) " + "; ".join(
            f"{k} {' '.join(f'{v:.2f}' for v in vs)} mean {np.mean(vs):.3f}" for k, vs in tre.items()), flush=True)

    evaluate(0)
    t0, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        style = styles[step % len(styles)]
        pair = scale_augment(train[style][int(rng.integers(len(train[style])))], float(rng.uniform(0.8, 1.2)))
        problem = Problem.from_pair(pair)
        base_f, base_b = list(template.forward), list(template.backward)
        if args.at == "adapted":  # inner loop on the infused template, modulations frozen
            with torch.no_grad():
                mods = model.heads.modulations(model.embed(problem))
            fwd, bwd = clone_params(base_f, requires_grad=True), clone_params(base_b, requires_grad=True)
            sgd = torch.optim.SGD(fwd + bwd, lr=1e-4)
            for _ in range(prof.inner_steps):
                sgd.zero_grad(set_to_none=True)
                loss(problem, *model.heads.modulated(mods, fwd, bwd)).backward()
                sgd.step()
            base_f, base_b = [p.detach() for p in fwd], [p.detach() for p in bwd]
        total = loss(problem, *model.infused(model.embed(problem), base_f, base_b))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
        if step % 25 == 0:
            print(f"step {step}: loss (mean of last 25) {np.mean(losses[-25:]):.4f}, {time.perf_counter() - t0:.0f} s", flush=True)
        if step % args.eval_every == 0:
            evaluate(step)


if __name__ == "__main__":
    main()

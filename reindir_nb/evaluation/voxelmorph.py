"""VoxelMorph baseline (Balakrishnan et al., 2019; paper Appendix C), built on the
``voxelmorph`` package's PyTorch model (``voxelmorph.nn.models.VxmPairwise``: U-Net ->
stationary velocity field -> scaling-and-squaring integration -> spatial transformer).

Settings follow the paper's appendix: the original training defaults (MSE similarity,
L2 gradient penalty on the velocity field with weight 0.01, Adam lr 1e-4, batch 1), seven
integration steps, and channel widths reduced from 16 to 6 (here encoder 6-12-12-12,
decoder 12-12-12-6). Test-time "optimisation" repeats the training step on the pair to be
registered (fine-tuning a copy of the network), as the paper did.

Geometry: the network works in the FIXED image's voxel grid. The moving image is first
resampled onto the fixed grid (through an optional 4x4 pre-alignment mapping fixed world mm
to moving world mm), so the predicted displacement ``u`` (voxels, channels ``(z, y, x)``)
maps a fixed voxel ``x`` to ``pre(x + u(x))`` in moving world mm — the kit's backward-warping
convention (fixed -> moving). Displacements are returned as :class:`Volume` of mm vectors
``(x, y, z)`` on the fixed grid. Intensities are min-max normalised to [0, 1] per image
(1st-99th percentile), as the package expects.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.files import atomic_path
from ..core.device import get_device, make_generator
from ..core.geometry import apply_affine
from ..core.pair import Pair
from ..core.volume import Volume

__all__ = [
    "VoxelMorphConfig",
    "VoxelMorph",
    "VoxelMorphResult",
    "grad_l2",
    "pair_tensors",
    "jacobian_determinant_voxels",
    "train_voxelmorph",
    "train_voxelmorph_folds",
    "available",
]


def available() -> bool:
    """True when the ``voxelmorph`` package (PyTorch backend) can be imported."""
    try:
        import voxelmorph  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


@dataclass(frozen=True)
class VoxelMorphConfig:
    """Architecture and loss of the baseline (paper App. C; original VoxelMorph defaults)."""

    features: tuple[tuple[int, ...], tuple[int, ...]] = ((6, 12, 12, 12), (12, 12, 12, 6))
    integration_steps: int = 7
    smooth_weight: float = 0.01   # lambda of the L2 gradient penalty on the velocity (voxel units)
    lr: float = 1e-4

    @property
    def divisor(self) -> int:
        """Spatial sizes are padded to a multiple of this (one pooling per encoder level)."""
        return 2 ** len(self.features[0])


def grad_l2(field: Tensor) -> Tensor:
    """VoxelMorph's L2 smoothness: mean squared forward difference of a (B, 3, D, H, W)
    field along each axis, averaged over the three axes (units: voxels^2 per voxel^2)."""
    dz = field[:, :, 1:] - field[:, :, :-1]
    dy = field[:, :, :, 1:] - field[:, :, :, :-1]
    dx = field[..., 1:] - field[..., :-1]
    return ((dz * dz).mean() + (dy * dy).mean() + (dx * dx).mean()) / 3.0


def _normalise(array: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(array, [1, 99])
    if hi <= lo:
        return np.zeros_like(array, dtype=np.float32)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _resample_moving(pair: Pair, prealign: np.ndarray | None) -> np.ndarray:
    """The moving image sampled at ``pre(x)`` for every fixed voxel centre ``x`` (trilinear)."""
    fg = pair.fixed.grid
    world = fg.voxel_centres_world().reshape(-1, 3)
    if prealign is not None:
        world = apply_affine(np.asarray(prealign, dtype=np.float64), world)
    values = pair.moving.sample_world(world, order=1, cval=float(np.min(pair.moving.array)))
    return values.reshape(fg.shape)


def pair_tensors(
    pair: Pair, divisor: int, prealign: np.ndarray | None = None, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, tuple[slice, slice, slice]]:
    """``(moving, fixed, crop)``: (1, 1, D', H', W') float tensors on the fixed grid, zero-padded
    so that every size is a multiple of ``divisor``; ``crop`` recovers the fixed grid's voxels."""
    fixed = _normalise(np.asarray(pair.fixed.array, dtype=np.float64))
    moving = _normalise(_resample_moving(pair, prealign))
    shape = np.array(fixed.shape)
    padded = (np.ceil(shape / divisor) * divisor).astype(int)
    pads = [(0, int(p - s)) for s, p in zip(shape, padded)]
    crop = tuple(slice(0, int(s)) for s in shape)

    def t(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.pad(a, pads), dtype=torch.float32, device=device)[None, None]

    return t(moving), t(fixed), crop  # type: ignore[return-value]


def jacobian_determinant_voxels(displacement_vox: np.ndarray) -> np.ndarray:
    """det(I + du/dx) of a voxel-unit displacement ``(3, D, H, W)`` (channels (z, y, x)) by
    central differences; equal to the mm determinant for any spacing (similarity invariance)."""
    grads = np.stack([np.stack(np.gradient(displacement_vox[c]), axis=0) for c in range(3)], axis=0)
    jac = np.moveaxis(grads, (0, 1), (-2, -1)) + np.eye(3)
    return np.linalg.det(jac)


@dataclass
class VoxelMorphResult:
    """Displacements of one registered pair at the recorded fine-tuning steps.

    ``displacements_vox[k]`` is the (3, D, H, W) voxel displacement (channels (z, y, x)) after
    ``k`` fine-tuning steps (0 = zero-shot); ``seconds[k]`` the cumulative fine-tuning time (s);
    ``encoder_seconds`` the zero-shot forward pass time (s)."""

    pair: Pair
    prealign: np.ndarray | None
    displacements_vox: dict[int, np.ndarray]
    seconds: dict[int, float]
    encoder_seconds: float
    step_seconds: float
    losses: dict[int, float] = field(default_factory=dict)

    @property
    def iterations(self) -> list[int]:
        return sorted(self.displacements_vox)

    def displacement(self, iteration: int | None = None) -> Volume:
        """Displacement on the fixed grid as mm vectors ``(x, y, z)``: ``phi(x) = pre(x + u)``
        minus ``x`` for the identity pre-alignment (``pre`` is applied separately)."""
        it = self.iterations[-1] if iteration is None else iteration
        grid = self.pair.fixed.grid
        u = self.displacements_vox[it][::-1]  # (x, y, z) voxel components
        lin = grid.direction @ np.diag(grid.spacing)
        mm = np.einsum("ij,jzyx->zyxi", lin, u)
        return Volume(mm, grid, name=f"{self.pair.name} VoxelMorph displacement (mm)")

    def transform_points(self, points_mm: np.ndarray, iteration: int | None = None) -> np.ndarray:
        """Map fixed world points (N, 3) mm to moving world mm (trilinear displacement lookup)."""
        pts = np.asarray(points_mm, dtype=np.float64)
        moved = pts + self.displacement(iteration).sample_world(pts, order=1)
        if self.prealign is not None:
            moved = apply_affine(np.asarray(self.prealign, dtype=np.float64), moved)
        return moved

    def jacobian_determinant(self, iteration: int | None = None) -> np.ndarray:
        """det J of ``x -> x + u(x)`` on the fixed grid (z, y, x)."""
        it = self.iterations[-1] if iteration is None else iteration
        return jacobian_determinant_voxels(self.displacements_vox[it])


def _loss(net, config: VoxelMorphConfig, moving: Tensor, fixed: Tensor) -> tuple[Tensor, dict[str, float]]:
    _, warped = net(moving, fixed, return_warped_source=True)
    sim = F.mse_loss(warped, fixed)
    smooth = grad_l2(net.velocity)
    total = sim + config.smooth_weight * smooth
    return total, {"loss": float(total.detach()), "mse": float(sim.detach()), "grad": float(smooth.detach())}


@torch.no_grad()
def _displacement(net, moving: Tensor, fixed: Tensor, crop) -> np.ndarray:
    """Integrated displacement (3, D, H, W) in voxels on the unpadded fixed grid."""
    disp = net(moving, fixed)[0]
    return disp[(slice(None), *crop)].cpu().numpy().astype(np.float64)


class VoxelMorph:
    """A VoxelMorph network with its config; ``predict`` registers a pair zero-shot,
    ``register`` adds test-time fine-tuning steps. Save/load with :meth:`save` / :meth:`load`."""

    def __init__(self, config: VoxelMorphConfig = VoxelMorphConfig(), seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        import voxelmorph as vxm

        self.config = config
        self.device = get_device(device)
        torch.manual_seed(int(seed))  # the package initialises layers from the global generator
        self.net = vxm.nn.models.VxmPairwise(
            ndim=3, source_channels=1, target_channels=1,
            nb_features=[list(config.features[0]), list(config.features[1])],
            integration_steps=config.integration_steps,
        ).to(self.device)
        self.training_log: list[dict[str, float]] = []
        self.encoder_seconds: float = 0.0

    # --------------------------------------------------------------- steps
    def loss(self, moving: Tensor, fixed: Tensor) -> tuple[Tensor, dict[str, float]]:
        """MSE(warped moving, fixed) + smooth_weight * grad_l2(velocity) of this network."""
        return _loss(self.net, self.config, moving, fixed)

    def predict(self, pair: Pair, prealign: np.ndarray | None = None) -> VoxelMorphResult:
        """Zero-shot registration (one forward pass)."""
        return self.register(pair, iterations=(0,), prealign=prealign)

    def register(
        self,
        pair: Pair,
        iterations: Sequence[int] = (0,),
        prealign: np.ndarray | None = None,
        progress: bool = False,
    ) -> VoxelMorphResult:
        """Zero-shot prediction, then ``max(iterations)`` fine-tuning steps (Adam, training
        settings) on a copy of the network; displacements recorded at each requested count.
        The model itself is left unchanged."""
        from tqdm.auto import tqdm

        wanted = sorted({int(i) for i in iterations})
        if not wanted or wanted[0] < 0:
            raise ValueError(f"iterations must be non-negative counts, got {list(iterations)}")
        moving, fixed, crop = pair_tensors(pair, self.config.divisor, prealign, self.device)
        t0 = time.perf_counter()
        disps = {0: _displacement(self.net, moving, fixed, crop)}
        encoder = time.perf_counter() - t0
        self.encoder_seconds = encoder
        secs, losses = {0: 0.0}, {}
        steps, step_time = wanted[-1], float("nan")
        if steps > 0:
            net = copy.deepcopy(self.net)
            opt = torch.optim.Adam(net.parameters(), lr=self.config.lr)
            elapsed = 0.0
            for k in tqdm(range(1, steps + 1), disable=not progress, desc=f"VoxelMorph {pair.name}"):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                total, parts = _loss(net, self.config, moving, fixed)
                total.backward()
                opt.step()
                elapsed += time.perf_counter() - t0
                if k in wanted:
                    disps[k] = _displacement(net, moving, fixed, crop)
                    secs[k] = elapsed
                    losses[k] = parts["loss"]
            step_time = elapsed / steps
        return VoxelMorphResult(pair, prealign, {k: disps[k] for k in wanted}, {k: secs[k] for k in wanted},
                                encoder, step_time, losses)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the weights and config atomically to ``path`` (a ``.pt`` file)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save({"kind": "voxelmorph", "config": asdict(self.config), "state": self.net.state_dict(),
                        "training_log": self.training_log}, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> "VoxelMorph":
        path = Path(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable VoxelMorph checkpoint ({exc})") from exc
        if not isinstance(blob, dict) or blob.get("kind") != "voxelmorph":
            raise ValueError(f"{path}: not a VoxelMorph checkpoint (kind={getattr(blob, 'get', lambda k: None)('kind')!r})")
        cfg = blob["config"]
        config = VoxelMorphConfig(features=tuple(tuple(f) for f in cfg["features"]),
                                  integration_steps=cfg["integration_steps"], smooth_weight=cfg["smooth_weight"],
                                  lr=cfg["lr"])
        model = cls(config, device=device)
        model.net.load_state_dict(blob["state"])
        model.training_log = list(blob.get("training_log", []))
        return model


def train_voxelmorph(
    pairs: Sequence[Pair],
    epochs: int = 10,
    config: VoxelMorphConfig = VoxelMorphConfig(),
    seed: int = 0,
    device: torch.device | str | None = None,
    prealign: Mapping[str, np.ndarray] | None = None,
    progress: bool = True,
) -> VoxelMorph:
    """Train a VoxelMorph network on ``pairs`` (batch 1, Adam, pair order shuffled per epoch
    with ``seed``); ``prealign`` optionally maps pair names to 4x4 fixed->moving mm matrices."""
    if not pairs:
        raise ValueError("train_voxelmorph: no training pairs")
    from tqdm.auto import tqdm

    model = VoxelMorph(config, seed=seed, device=device)
    data = [pair_tensors(p, config.divisor, (prealign or {}).get(p.name), model.device)[:2] for p in pairs]
    opt = torch.optim.Adam(model.net.parameters(), lr=config.lr)
    gen = make_generator(seed)
    bar = tqdm(total=epochs * len(data), disable=not progress, desc="VoxelMorph training")
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen).tolist()
        for i in order:
            moving, fixed = data[i]
            opt.zero_grad(set_to_none=True)
            total, parts = model.loss(moving, fixed)
            total.backward()
            opt.step()
            model.training_log.append({"epoch": epoch, "pair": float(i), **parts})
            bar.update(1)
    bar.close()
    return model


def train_voxelmorph_folds(
    pairs: Sequence[Pair],
    folds: Mapping[str, int],
    epochs: int = 10,
    config: VoxelMorphConfig = VoxelMorphConfig(),
    seed: int = 0,
    device: torch.device | str | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
) -> dict[int, VoxelMorph]:
    """One network per fold, each trained on the pairs NOT in that fold (``folds`` maps pair
    name -> fold). With ``folder`` the models are saved as ``voxelmorph_fold_{k}.pt`` and
    existing files are loaded instead of retrained."""
    missing = [p.name for p in pairs if p.name not in folds]
    if missing:
        raise ValueError(f"train_voxelmorph_folds: pairs without a fold: {missing}")
    models: dict[int, VoxelMorph] = {}
    for k in sorted(set(folds[p.name] for p in pairs)):
        path = None if folder is None else Path(folder) / f"voxelmorph_fold_{k}.pt"
        if path is not None and path.exists():
            models[k] = VoxelMorph.load(path, device=device)
            continue
        train = [p for p in pairs if folds[p.name] != k]
        if not train:
            raise ValueError(f"fold {k} holds every pair: nothing to train on")
        models[k] = train_voxelmorph(train, epochs, config, seed=seed + k, device=device, progress=progress)
        if path is not None:
            models[k].save(path)
    return models

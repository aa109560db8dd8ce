"""The command line: ``python -m ldm_np {demo,train,sample,evaluate}``.

User mistakes (a bad option, a missing file, a damaged checkpoint) end with a
one-line message and exit status 2, never a traceback. Ctrl-C during training
saves a checkpoint and prints how to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .checkpoint import CheckpointError
from .datasets import DATASETS, load_dataset
from .pipeline import LatentDiffusion, LDMConfig
from .training import TrainingDiverged
from .versions import version_line

MODEL_FILE = "model.safetensors"
RUN_FILE = "run.json"

# Tuned on the digits for a run of a few minutes on 2 CPU cores.
DEMO_CONFIG = {
    "latent_size": 8,
    "hidden_size": 256,
    "num_layers": 4,
    "num_steps": 1000,
    "vae_steps": 4000,
    "vae_batch_size": 128,
    "kl_weight": 1.0,
    "recon_std": 0.1,
    "denoiser_steps": 3000,
    "denoiser_batch_size": 256,
}


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


def image_shape_for(dataset: str, input_size: int) -> list[int] | None:
    """The image shape to draw samples as (None for non-image data)."""
    if dataset == "digits":
        return [8, 8]
    side = round(input_size**0.5)
    return [side, side] if side * side == input_size and input_size >= 16 else None


# ---------------------------------------------------------------- commands


def add_model_options(p: argparse.ArgumentParser) -> None:
    d = LDMConfig(input_size=1)
    g = p.add_argument_group("model")
    g.add_argument(
        "--latent-size",
        type=int,
        default=DEMO_CONFIG["latent_size"],
        help="latent dimensions (default: %(default)s)",
    )
    g.add_argument(
        "--hidden-size",
        type=int,
        default=d.hidden_size,
        help="hidden width of all networks (default: %(default)s)",
    )
    g.add_argument(
        "--num-layers",
        type=int,
        default=d.num_layers,
        help="residual blocks in the denoiser (default: %(default)s)",
    )
    g.add_argument(
        "--num-steps", type=int, default=d.num_steps, help="diffusion steps T (default: %(default)s)"
    )
    g.add_argument(
        "--schedule",
        choices=["linear", "scaled_linear", "cosine"],
        default=d.schedule,
        help="noise schedule (default: %(default)s)",
    )
    g.add_argument(
        "--prediction-type",
        choices=["epsilon", "sample", "v"],
        default=d.prediction_type,
        help="what the denoiser predicts (default: %(default)s)",
    )
    g.add_argument(
        "--time-input",
        choices=["index", "fraction"],
        default=d.time_input,
        help="embed t itself or t/T (default: %(default)s)",
    )
    g.add_argument(
        "--conditional",
        action="store_true",
        help="train a class-conditional model (needs labels, e.g. digits)",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--vae-steps", type=int, default=DEMO_CONFIG["vae_steps"], help="stage-1 steps (default: %(default)s)"
    )
    g.add_argument(
        "--denoiser-steps",
        type=int,
        default=DEMO_CONFIG["denoiser_steps"],
        help="stage-2 steps (default: %(default)s)",
    )
    g.add_argument("--vae-batch-size", type=int, default=d.vae_batch_size, help="(default: %(default)s)")
    g.add_argument(
        "--denoiser-batch-size", type=int, default=d.denoiser_batch_size, help="(default: %(default)s)"
    )
    g.add_argument("--vae-lr", type=float, default=d.vae_lr, help="(default: %(default)s)")
    g.add_argument("--denoiser-lr", type=float, default=d.denoiser_lr, help="(default: %(default)s)")
    g.add_argument(
        "--beta",
        "--kl-weight",
        dest="kl_weight",
        type=float,
        default=d.kl_weight,
        help="KL weight beta; 1 = the ELBO (default: %(default)s)",
    )
    g.add_argument(
        "--recon-std",
        type=float,
        default=d.recon_std,
        help="std of the Gaussian likelihood, in standardised data units (default: %(default)s)",
    )
    g.add_argument(
        "--min-snr-gamma", type=float, default=None, help="min-SNR loss weighting gamma (default: off)"
    )
    g.add_argument("--ema-decay", type=float, default=d.ema_decay, help="(default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")


def config_from_args(args: argparse.Namespace, input_size: int, num_classes: int | None) -> LDMConfig:
    return LDMConfig(
        input_size=input_size,
        latent_size=args.latent_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_steps=args.num_steps,
        schedule=args.schedule,
        prediction_type=args.prediction_type,
        time_input=args.time_input,
        num_classes=num_classes,
        seed=args.seed,
        vae_steps=args.vae_steps,
        vae_batch_size=args.vae_batch_size,
        vae_lr=args.vae_lr,
        kl_weight=args.kl_weight,
        recon_std=args.recon_std,
        denoiser_steps=args.denoiser_steps,
        denoiser_batch_size=args.denoiser_batch_size,
        denoiser_lr=args.denoiser_lr,
        ema_decay=args.ema_decay,
        min_snr_gamma=args.min_snr_gamma,
    )


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    ckpt = out / MODEL_FILE
    X, labels = (
        load_dataset(args.dataset, seed=args.seed)
        if not args.num_rows
        else load_dataset(args.dataset, args.num_rows, seed=args.seed)
    )
    if args.conditional and (labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise UserError(f"--conditional needs a labelled data set (digits); {args.dataset!r} has no labels")
    held_out = None
    if args.holdout:
        if not 0 < args.holdout <= X.shape[0] - 2:
            raise UserError(f"--holdout must be in 1..{X.shape[0] - 2} (the data set has {X.shape[0]} rows)")
        # The same rows for the same seed, so --resume trains on the same data.
        perm = np.random.default_rng(args.seed).permutation(X.shape[0])
        keep, held = np.sort(perm[args.holdout :]), np.sort(perm[: args.holdout])
        held_out = X[held]
        X, labels = X[keep], (labels[keep] if labels is not None else None)
    y = labels if args.conditional else None
    if args.resume:
        if not ckpt.exists():
            raise UserError(f"--resume: no checkpoint at {ckpt}")
        model = LatentDiffusion.load(ckpt, device=args.device)
        print(f"resuming {ckpt}: VAE step {model.vae_state.step}, denoiser step {model.denoiser_state.step}")
    else:
        num_classes = int(labels.max()) + 1 if y is not None else None
        model = LatentDiffusion(config_from_args(args, X.shape[1], num_classes), device=args.device)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {
        "dataset": args.dataset,
        "image_shape": image_shape_for(args.dataset, X.shape[1]),
        "seed": args.seed,
        "holdout": args.holdout,
    }
    (out / RUN_FILE).write_text(json.dumps(run_info, indent=2))
    print(
        f"{model}\nparameters: encoder {model.encoder.num_params:,}, decoder {model.decoder.num_params:,}, denoiser {model.denoiser.num_params:,}"
    )
    started = time.perf_counter()
    try:
        model.fit_vae(
            X, progress=not args.no_progress, checkpoint=ckpt, checkpoint_every=args.checkpoint_every
        )
        print(f"stage 1 done: active latent units {model.active_units}/{model.config.latent_size}")
        model.fit_denoiser(
            X, y, progress=not args.no_progress, checkpoint=ckpt, checkpoint_every=args.checkpoint_every
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: saved {ckpt} (VAE step {model.vae_state.step}, denoiser step {model.denoiser_state.step})."
        )
        print(f"resume with: python -m ldm_np train --dataset {args.dataset} --out {out} --resume")
        return 130
    model.save(ckpt)
    print(f"trained in {time.perf_counter() - started:.1f} s; wrote {ckpt}")
    if not args.no_figures:
        from .figures.report import write_figures

        figs = write_figures(model, X, labels, out, run_info["image_shape"], seed=args.seed, holdout=held_out)
        for path in figs:
            print(f"wrote {path}")
    return 0


def load_run(run: str | Path, device: str) -> tuple[LatentDiffusion, dict[str, Any]]:
    run = Path(run)
    ckpt = run / MODEL_FILE if run.is_dir() else run
    if not ckpt.exists():
        raise UserError(f"no trained model at {ckpt} (train one with `python -m ldm_np train --out {run}`)")
    model = LatentDiffusion.load(ckpt, device=device)
    info_path = ckpt.parent / RUN_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {"dataset": None, "image_shape": None}
    return model, info


def cmd_sample(args: argparse.Namespace) -> int:
    model, info = load_run(args.run, args.device)
    labels = None
    if args.label is not None:
        if model.config.num_classes is None:
            raise UserError("--label needs a class-conditional model (train with --conditional)")
        if not 0 <= args.label < model.config.num_classes:
            raise UserError(f"--label must be in 0..{model.config.num_classes - 1}, got {args.label}")
        labels = np.full(args.num_samples, args.label, dtype=np.int64)
    elif args.guidance != 1.0 or args.guidance_rescale:
        raise UserError("--guidance and --guidance-rescale steer towards a class: give --label too")
    x = model.sample(
        args.num_samples,
        sampler=args.sampler,
        num_inference_steps=args.steps,
        eta=args.eta,
        seed=args.seed,
        labels=labels,
        guidance_scale=args.guidance,
        guidance_rescale=args.guidance_rescale,
        progress=not args.no_progress,
    )
    x = to_numpy(x)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, x)
        print(
            f"wrote {args.out}: {x.shape[0]} samples of {x.shape[1]} features, range [{x.min():.3g}, {x.max():.3g}]"
        )
    if args.grid:
        from . import figures

        shape = info.get("image_shape")
        if shape:
            title = f"{args.sampler} samples" + (
                f", class {args.label}, guidance w = {args.guidance:g}" if labels is not None else ""
            )
            figures.image_grid(x[:64], shape=tuple(shape), title=title, path=args.grid)
        else:
            figures.scatter_2d(None, x, path=args.grid)
        print(f"wrote {args.grid}")
    return 0


def parse_scales(text: str | None) -> list[float] | None:
    """ "0,1,3,7" -> [0.0, 1.0, 3.0, 7.0] (None stays None)."""
    if text is None:
        return None
    try:
        scales = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"--guidance-scales must be numbers separated by commas, e.g. 0,1,3,7; got {text!r}"
        ) from None
    if not scales or any(not np.isfinite(w) or w < 0 for w in scales):
        raise UserError(f"--guidance-scales must be finite numbers >= 0, got {text!r}")
    return scales


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_model, format_report

    scales = parse_scales(getattr(args, "guidance_scales", None))
    model, info = load_run(args.run, args.device)
    if not info.get("dataset"):
        raise UserError(f"{args.run} has no {RUN_FILE} naming its data set; evaluate needs the training data")
    if scales is not None and model.config.num_classes is None:
        raise UserError("--guidance-scales needs a class-conditional run (train with --conditional)")
    if scales is not None and info["dataset"] != "digits":
        raise UserError("--guidance-scales measures with the digit classifier: it needs a digits run")
    X, labels = load_dataset(info["dataset"], seed=info.get("seed", 0))
    report = evaluate_model(
        model,
        X,
        labels,
        dataset=info["dataset"],
        num_samples=args.num_samples,
        sampler=args.sampler,
        num_inference_steps=args.steps,
        seed=args.seed,
    )
    if model.config.num_classes is not None:
        print("(unconditional samples of a class-conditional model: its null label)")
    print(format_report(report))
    if scales is not None:
        from .guidance import format_guidance_report, guidance_report

        rows = guidance_report(
            model, scales, n_per_class=args.n_per_class, seed=args.seed, X=X, num_inference_steps=args.steps
        )
        print(format_guidance_report(rows))
    return 0


# The demo is unconditional by default. Measured on the digits with these
# defaults (one training run, sampling seeds 0 and 1): the unconditional
# model's samples scored Frechet ratios 0.91 and 0.78, a conditional model's
# null-label samples 1.66 and 1.52 (and a less even class balance): the null
# label, trained on 10% of the batches, is the weaker unconditional model.
# ``demo --conditional`` trains with labels and adds the guidance figures and table.
DEMO_GUIDANCE_SCALES = "0,1,3,7"
DEMO_HOLDOUT = 16  # digits kept out of training, completed in inpainting.png


def cmd_demo(args: argparse.Namespace) -> int:
    train_args = build_parser().parse_args(
        ["train", "--dataset", "digits", "--out", args.out, "--seed", str(args.seed), "--device", args.device]
        + ["--holdout", str(DEMO_HOLDOUT)]
        + (["--conditional"] if args.conditional else [])
        + (["--no-progress"] if args.no_progress else [])
    )
    status = cmd_train(train_args)
    if status:
        return status
    eval_args = argparse.Namespace(
        run=args.out,
        device=args.device,
        num_samples=1000,
        sampler="ddim",
        steps=50,
        seed=args.seed,
        guidance_scales=DEMO_GUIDANCE_SCALES if args.conditional else None,
        n_per_class=100,
    )
    return cmd_evaluate(eval_args)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ldm_np",
        description="Train and sample a latent diffusion model written from scratch in NumPy.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,train,sample,evaluate}")

    p = sub.add_parser(
        "demo", help="train on the handwritten digits with tuned defaults, write figures, evaluate"
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="train a class-conditional model: adds class_grid.png, guidance.png and a guidance table",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train both stages and write a checkpoint and figures")
    p.add_argument(
        "--dataset",
        default="digits",
        help=f"one of {', '.join(DATASETS)}, or a .npy/.csv file (default: %(default)s)",
    )
    p.add_argument(
        "--num-rows",
        type=int,
        default=None,
        help="rows to use (default: all for digits/files, 2000 for generated sets)",
    )
    p.add_argument("--out", required=True, help="run folder for the checkpoint and figures")
    p.add_argument("--resume", action="store_true", help="continue from OUT/model.safetensors")
    p.add_argument(
        "--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default: %(default)s)"
    )
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="skip writing figures")
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="keep this many random rows out of training, for the inpainting figure (default: %(default)s)",
    )
    add_model_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("--run", required=True, help="run folder (or checkpoint file)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (DDPM uses all of them)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 like DDPM")
    p.add_argument("--label", type=int, default=None, help="class to sample (conditional models)")
    p.add_argument(
        "--guidance", type=float, default=1.0, help="classifier-free guidance scale w (default: %(default)s)"
    )
    p.add_argument(
        "--guidance-rescale",
        type=float,
        default=0.0,
        help="guidance rescale phi in [0, 1] (Lin et al., 2023; default: %(default)s = off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the samples as .npy (in the data's own units)")
    p.add_argument("--grid", default=None, help="write a PNG grid of the samples")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "evaluate", help="distance of generated samples to the data, against the real-data floor"
    )
    p.add_argument("--run", required=True)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--guidance-scales",
        default=None,
        help="class-conditional runs: also measure guidance at these scales, e.g. 0,1,3,7",
    )
    p.add_argument(
        "--n-per-class", type=int, default=100, help="samples per class and scale (default: %(default)s)"
    )
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except (
        UserError,
        CheckpointError,
        TrainingDiverged,
        ValueError,
        TypeError,
        FileNotFoundError,
        RuntimeError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

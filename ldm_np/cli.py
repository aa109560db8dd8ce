"""The command line: ``python -m ldm_np {demo,train,sample,evaluate}``.

User mistakes (a bad option, a missing file, a damaged checkpoint) and the
operating system's refusals (a full disk, a folder that cannot be written)
end with a one-line message and exit status 2, never a traceback. Ctrl-C or
SIGTERM during training finishes the step, saves a checkpoint and prints the
exact command that resumes (exit status 130). The rules that keep a run
folder safe live in ``ldm_np.runs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .checkpoint import CheckpointError, open_atomically, read_metadata
from .datasets import DATASETS, load_dataset
from .guidance import draw_classes
from .pipeline import LatentDiffusion, LDMConfig
from .runs import (
    MODEL_FILE,
    RUN_FILE,
    RUN_KEY,
    RunFolder,
    UserError,
    check_fits_in_memory,
    check_parents,
    config_from_checkpoint,
    describe_steps,
    hold_signals,
    load_model,
    read_run_file,
    sigterm_as_interrupt,
)
from .training import TrainingDiverged
from .vae import OUTPUT_ACTIVATIONS
from .versions import version_line

__all__ = ["MODEL_FILE", "RUN_FILE", "UserError", "build_parser", "main"]

# The demo's (and train's) defaults, measured on the digits with `python -m ldm_np evaluate`
# over three training seeds (README, "Quality on the digits"). The decoder ends in a sigmoid
# and sees the pixels in [0, 1]: the change that moved the samples most. recon_std = 0.02
# with kl_weight = 1 is the exact ELBO of a Gaussian likelihood of standard deviation 0.02
# (a third of a grey level), and weighs reconstruction against KL as a loss of per-pixel
# mean squared error plus 1e-4 times the KL averaged over 8 latent dimensions does:
# (1/64) sum (x - x_hat)^2 + 1e-4 (1/8) KL, times 32 / recon_std^2, is
# sum (x - x_hat)^2 / (2 recon_std^2) + KL. The denoiser sees 896,000 latents in 1,750
# steps at batch 512: as many as 3,500 steps at batch 256, which scored the same over seven
# training seeds, in half the optimizer steps and a tenth to a fifth less training time.
DEMO_CONFIG = {
    "latent_size": 8,
    "hidden_size": 256,
    "num_layers": 4,
    "num_steps": 1000,
    "time_input": "fraction",
    "vae_steps": 12000,
    "vae_batch_size": 128,
    "kl_weight": 1.0,
    "recon_std": 0.02,
    "output_activation": "sigmoid",
    "denoiser_steps": 1750,
    "denoiser_batch_size": 512,
}


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
        default=DEMO_CONFIG["time_input"],
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
        "--denoiser-batch-size",
        type=int,
        default=DEMO_CONFIG["denoiser_batch_size"],
        help="(default: %(default)s)",
    )
    g.add_argument("--vae-lr", type=float, default=d.vae_lr, help="(default: %(default)s)")
    g.add_argument("--denoiser-lr", type=float, default=d.denoiser_lr, help="(default: %(default)s)")
    g.add_argument(
        "--beta",
        "--kl-weight",
        dest="kl_weight",
        type=float,
        default=DEMO_CONFIG["kl_weight"],
        help="KL weight beta; 1 = the ELBO (default: %(default)s)",
    )
    g.add_argument(
        "--recon-std",
        type=float,
        default=DEMO_CONFIG["recon_std"],
        help="std of the Gaussian likelihood, in the units the VAE sees: [0, 1] for a sigmoid decoder, "
        "standardised for a linear one (default: %(default)s)",
    )
    g.add_argument(
        "--output-activation",
        choices=list(OUTPUT_ACTIVATIONS),
        default=DEMO_CONFIG["output_activation"],
        help="the decoder's output: sigmoid for data scaled to [0, 1], linear for standardised data "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--min-snr-gamma", type=float, default=None, help="min-SNR loss weighting gamma (default: off)"
    )
    g.add_argument(
        "--latent-noise",
        type=float,
        default=0.0,
        help="stage 2 trains on z0 + this times N(0, I) noise, drawn afresh each step; trades "
        "memorisation for precision (default: %(default)s)",
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
        output_activation=args.output_activation,
        denoiser_steps=args.denoiser_steps,
        denoiser_batch_size=args.denoiser_batch_size,
        denoiser_lr=args.denoiser_lr,
        ema_decay=args.ema_decay,
        min_snr_gamma=args.min_snr_gamma,
        latent_noise=args.latent_noise,
    )


# What a run stores beside its model config (the config holds the model and training settings).
DATA_OPTIONS = ("dataset", "num_rows", "holdout", "conditional")
# The model and training flags: each is the LDMConfig field of the same name.
MODEL_OPTIONS = (
    "latent_size", "hidden_size", "num_layers", "num_steps", "schedule", "prediction_type", "time_input",
    "vae_batch_size", "denoiser_batch_size", "vae_lr", "denoiser_lr", "kl_weight", "recon_std",
    "output_activation", "min_snr_gamma", "latent_noise", "ema_decay", "seed",
)  # fmt: skip
# Flags that may differ on --resume: more (or fewer, not below the steps done) training steps, and
# how the run is carried out. Every other flag must match the stored run or be left out.
RESUME_MAY_CHANGE = ("vae_steps", "denoiser_steps", "checkpoint_every", "device", "no_progress", "no_figures")


def dataset_key(dataset: str) -> str:
    """A built-in data set's name, or a file's absolute path (so a resume from elsewhere finds it)."""
    return dataset if dataset in DATASETS else str(Path(dataset).resolve())


def flag_name(dest: str) -> str:
    return "--beta" if dest == "kl_weight" else "--" + dest.replace("_", "-")


def run_folder_of(args: argparse.Namespace) -> RunFolder:
    """``--out DIR``, or ``--resume DIR`` (the two must agree when both are given)."""
    resume_dir = args.resume if isinstance(args.resume, str) else None
    if resume_dir and args.out and Path(resume_dir).resolve() != Path(args.out).resolve():
        raise UserError(f"--resume {resume_dir} and --out {args.out} name two folders: give one")
    folder = resume_dir or args.out
    if not folder:
        raise UserError("give the run folder: --out DIR for a new run, or --resume DIR to continue one")
    return RunFolder(folder)


def new_run_info(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset": dataset_key(args.dataset),
        "num_rows": args.num_rows,
        "holdout": args.holdout,
        "seed": args.seed,
        "conditional": bool(args.conditional),
    }


def stored_run(run: RunFolder, args: argparse.Namespace, given: set[str]) -> tuple[dict[str, Any], LDMConfig]:
    """The run's data options and config from its checkpoint, with every given flag checked against them.

    A flag that contradicts the stored run is refused, naming it and both
    values; steps may change (``RESUME_MAY_CHANGE``). Runs written before
    the checkpoint recorded its data options take what is missing from the
    flags (or their defaults), and say so.
    """
    config = config_from_checkpoint(run.checkpoint)
    info = dict(run.stored_info() or {})
    info["conditional"] = config.num_classes is not None
    info["seed"] = config.seed
    for name in DATA_OPTIONS:
        if name not in info:
            if name == "dataset" and "dataset" not in given:
                raise UserError(
                    f"{run.checkpoint} does not record its data set (an older ldm_np wrote it): give "
                    "--dataset, and --num-rows and --holdout as in the first run"
                )
            info[name] = dataset_key(args.dataset) if name == "dataset" else getattr(args, name)
            if name not in given:
                print(f"note: {run.path} does not record {flag_name(name)}; using {info[name]!r}")
    stored = {**{k: getattr(config, k) for k in MODEL_OPTIONS}, **{k: info[k] for k in DATA_OPTIONS}}
    for name in sorted(given & set(stored)):
        value = dataset_key(args.dataset) if name == "dataset" else getattr(args, name)
        if value != stored[name]:
            raise UserError(
                f"{flag_name(name)} {value} contradicts the run in {run.path}, which has "
                f"{flag_name(name)} {stored[name]}; leave the flag out to resume it, or start a new run "
                "(another --out, or --overwrite)"
            )
    return info, config


def changed_steps(model: LatentDiffusion, args: argparse.Namespace, given: set[str]) -> dict[str, int]:
    """The step counts a resume asks to change, checked against the steps already done."""
    changes: dict[str, int] = {}
    for name, done in (("vae_steps", model.vae_state.step), ("denoiser_steps", model.denoiser_state.step)):
        new = getattr(args, name)
        if name not in given or new == getattr(model.config, name):
            continue
        if new < done:
            raise UserError(f"{flag_name(name)} {new} is below the {done} steps this run has already done")
        if name == "vae_steps" and model.denoiser_state.step > 0:
            raise UserError(
                "--vae-steps cannot change once the denoiser has started: it learned the current VAE's latents"
            )
        changes[name] = new
    return changes


def load_training_data(info: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(X, labels, held_out, y): the rows trained on, their labels, the held-out rows, the labels used."""
    X, labels = (
        load_dataset(info["dataset"], seed=info["seed"])
        if not info["num_rows"]
        else load_dataset(info["dataset"], info["num_rows"], seed=info["seed"])
    )
    if info["conditional"] and (labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise UserError(
            f"--conditional needs a labelled data set (digits); {info['dataset']!r} has no class labels"
        )
    held_out = None
    if info["holdout"]:
        if not 0 < info["holdout"] <= X.shape[0] - 2:
            raise UserError(f"--holdout must be in 1..{X.shape[0] - 2} (the data set has {X.shape[0]} rows)")
        # The same rows for the same seed, so --resume trains on the same data.
        perm = np.random.default_rng(info["seed"]).permutation(X.shape[0])
        keep, held = np.sort(perm[info["holdout"] :]), np.sort(perm[: info["holdout"]])
        held_out = X[held]
        X, labels = X[keep], (labels[keep] if labels is not None else None)
    y = labels if info["conditional"] else None
    return X, labels, held_out, y


def resume_command(run: RunFolder, args: argparse.Namespace) -> str:
    """The exact command that continues this run: everything else is stored in it."""
    device = f" --device {args.device}" if args.device != "cpu" else ""
    return f"python -m ldm_np train --resume {shlex.quote(str(run.path))}{device}"


def cmd_train(args: argparse.Namespace) -> int:
    given: set[str] = getattr(args, "given", set())
    if args.checkpoint_every < 1:
        raise UserError(f"--checkpoint-every must be a number of steps >= 1, got {args.checkpoint_every}")
    run = run_folder_of(args)
    run.check_path()
    if args.resume:
        if args.overwrite:
            raise UserError("--resume continues the run and --overwrite starts it again: give one")
        if not run.checkpoint.exists():
            raise UserError(f"--resume: no checkpoint at {run.checkpoint}")
    elif run.checkpoint.exists() and not args.overwrite:
        raise UserError(
            f"{run.path} already holds a trained run; continue it with `--resume {run.path}`, "
            "or start again with --overwrite (it replaces the run at the first save)"
        )
    with run.lock(), sigterm_as_interrupt():
        model = None
        try:
            if args.resume:
                info, _ = stored_run(run, args, given)
                X, labels, held_out, y = load_training_data(info)
                model = load_model(run.checkpoint, device=args.device)  # its size checked first
                run.saved_steps = (model.vae_state.step, model.denoiser_state.step)
                changes = changed_steps(model, args, given)
                if changes:
                    model.config = dataclasses.replace(model.config, **changes).validate()
                    run.saved_steps = None  # the new step counts are saved even if stopped at once
                    print(
                        "changed on resume: " + ", ".join(f"{flag_name(k)} {v}" for k, v in changes.items())
                    )
                print(f"resuming {run.checkpoint}: {describe_steps(model)}")
            else:
                info = new_run_info(args)
                X, labels, held_out, y = load_training_data(info)
                num_classes = int(labels.max()) + 1 if y is not None else None
                config = config_from_args(args, X.shape[1], num_classes).validate()
                check_fits_in_memory(config, "this configuration")
                model = LatentDiffusion(config, device=args.device)
            info["image_shape"] = image_shape_for(info["dataset"], X.shape[1])
            run.info = info
            print(
                f"{model}\nparameters: encoder {model.encoder.num_params:,}, decoder {model.decoder.num_params:,}, denoiser {model.denoiser.num_params:,}"
            )
            started = time.perf_counter()
            save = lambda: run.save(model)  # noqa: E731 - the loops' periodic and interrupt saves
            every, progress = args.checkpoint_every, not args.no_progress
            model.fit_vae(X, progress=progress, checkpoint=save, checkpoint_every=every)
            print(f"stage 1 done: active latent units {model.active_units}/{model.config.latent_size}")
            model.fit_denoiser(X, y, progress=progress, checkpoint=save, checkpoint_every=every)
            run.save(model)
        except KeyboardInterrupt:
            return stopped(run, model, args)
        print(f"trained in {time.perf_counter() - started:.1f} s; wrote {run.checkpoint}")
        if not args.no_figures:
            try:
                write_run_figures(model, X, labels, run, held_out, info["seed"])
            except KeyboardInterrupt:
                print(f"\ninterrupted while writing figures; the trained model is saved in {run.checkpoint}")
                return 130
    return 0


def stopped(run: RunFolder, model: LatentDiffusion | None, args: argparse.Namespace) -> int:
    """After Ctrl-C or SIGTERM: save what is not saved yet (further signals wait), say what happened."""
    with hold_signals(redeliver=False):
        if model is None:
            print("\ninterrupted before training started; nothing was written")
            return 130
        if not run.is_saved(model):
            try:
                run.save(model, redeliver=False)
            except (OSError, CheckpointError) as exc:
                held = "nothing" if run.saved_steps is None else "the previous save"
                print(f"\ninterrupted: the checkpoint was NOT saved ({exc}); {run.checkpoint} holds {held}")
                return 2
        print(f"\ninterrupted: saved {run.checkpoint} ({describe_steps(model)}).")
        print(f"resume with: {resume_command(run, args)}")
    return 130


def write_run_figures(
    model: LatentDiffusion, X: Any, labels: Any, run: RunFolder, held_out: Any, seed: int
) -> None:
    """The figures; any failure is a warning, since the model is already trained and saved."""
    from .figures.report import write_figures

    try:
        figs = write_figures(model, X, labels, run.path, run.info["image_shape"], seed=seed, holdout=held_out)
    except Exception as exc:  # a figure never fails a run
        print(f"warning: figures not written ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    for path in figs:
        print(f"wrote {path}")


def load_run(run: str | Path, device: str) -> tuple[LatentDiffusion, dict[str, Any]]:
    """A trained run's model and its data options (from the checkpoint, or run.json for older runs)."""
    run = Path(run)
    ckpt = run / MODEL_FILE if run.is_dir() else run
    if not ckpt.exists():
        raise UserError(f"no trained model at {ckpt} (train one with `python -m ldm_np train --out {run}`)")
    model = load_model(ckpt, device=device)
    meta = read_metadata(ckpt)
    info = json.loads(meta[RUN_KEY]) if RUN_KEY in meta else read_run_file(ckpt.parent / RUN_FILE)
    return model, info or {"dataset": None, "image_shape": None}


# Samples are drawn SAMPLE_BATCH at a time and written as they come, so memory does not grow with
# --num-samples. Batch b draws with seed ``batch_seed(seed, b)``: batch 0 uses ``seed`` itself.
SAMPLE_BATCH = 4096
GRID_ROWS = 2000  # rows kept in memory for --grid (an image grid shows the first 64)


def batch_seed(seed: int, b: int) -> int:
    return seed if b == 0 else int(np.random.SeedSequence([seed, b]).generate_state(1)[0])


def sample_labels(label: int | None, classes: np.ndarray | None, n: int, seed: int) -> np.ndarray | None:
    """The n labels one batch of ``sample`` asks for: ``--label``, else classes drawn from ``classes``."""
    if label is not None:
        return np.full(n, label, dtype=np.int64)
    return None if classes is None else draw_classes(classes, n, seed)


def cmd_sample(args: argparse.Namespace) -> int:
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {args.num_samples}")
    for flag, path in (("--out", args.out), ("--grid", args.grid)):
        if path:
            check_parents(Path(path), flag)
    model, info = load_run(args.run, args.device)
    label = None
    if args.label is not None:
        if model.config.num_classes is None:
            raise UserError("--label needs a class-conditional model (train with --conditional)")
        if not 0 <= args.label < model.config.num_classes:
            raise UserError(f"--label must be in 0..{model.config.num_classes - 1}, got {args.label}")
        label = args.label
    elif args.guidance != 1.0 or args.guidance_rescale:
        raise UserError("--guidance and --guidance-rescale steer towards a class: give --label too")
    # A class-conditional model without --label: each sample's class drawn from the training
    # rows' class frequencies (its null label when the run names no data set).
    classes = None
    if label is None and model.config.num_classes is not None and info.get("dataset"):
        _, classes, _, _ = load_training_data(
            {"num_rows": None, "holdout": 0, "seed": 0, **info, "conditional": True}
        )
    count = args.num_samples if args.out else min(args.num_samples, GRID_ROWS)
    width, dtype = model.config.input_size, np.dtype(model.config.dtype)
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name such as {out / 'samples.npy'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        need = count * width * dtype.itemsize
        free = shutil.disk_usage(out.parent).free
        if need > free:
            raise UserError(
                f"--out {out} needs {need:,} bytes, but {out.parent} has {free:,} free; nothing was written"
            )
    kept: list[np.ndarray] = []
    lo, hi = np.inf, -np.inf

    def draw(f: Any) -> None:
        nonlocal lo, hi
        batches = range(0, count, SAMPLE_BATCH)
        bar = None
        if len(batches) > 1 and not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=count, desc="samples", dynamic_ncols=True)
        for b, start in enumerate(batches):
            n = min(SAMPLE_BATCH, count - start)
            x = model.sample(
                n,
                sampler=args.sampler,
                num_inference_steps=args.steps,
                eta=args.eta,
                seed=batch_seed(args.seed, b),
                labels=sample_labels(label, classes, n, batch_seed(args.seed, b)),
                guidance_scale=args.guidance,
                guidance_rescale=args.guidance_rescale,
                progress=bar is None and not args.no_progress,
            )
            x = np.ascontiguousarray(to_numpy(x), dtype=dtype)  # [n, input]
            if f is not None:
                f.write(x.tobytes())
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
            room = GRID_ROWS - sum(len(k) for k in kept) if args.grid else 0
            if room > 0:
                kept.append(x[:room].copy())
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()

    if out is None:
        draw(None)
    else:
        with open_atomically(out) as f:  # the .npy appears whole, or not at all
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": (count, width),
            }
            np.lib.format.write_array_header_1_0(f, header)
            draw(f)
        print(f"wrote {out}: {count} samples of {width} features, range [{lo:.3g}, {hi:.3g}]")
    if args.grid:
        from .figures.report import samples_figure

        title = f"{args.sampler} samples" + (
            f", class {args.label}, guidance w = {args.guidance:g}" if label is not None else ""
        )
        samples_figure(np.concatenate(kept), info.get("image_shape"), args.grid, title=title)
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


def held_out_rows(n: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``train --holdout`` trained on and kept out, as sorted indices (kept, held).

    The split of ``load_training_data``: a permutation drawn with the run's seed.
    """
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_run, format_table

    scales = parse_scales(getattr(args, "guidance_scales", None))
    model, info = load_run(args.run, args.device)
    if not info.get("dataset"):
        raise UserError(f"{args.run} has no {RUN_FILE} naming its data set; evaluate needs the training data")
    if scales is not None and model.config.num_classes is None:
        raise UserError("--guidance-scales needs a class-conditional run (train with --conditional)")
    if scales is not None and info["dataset"] != "digits":
        raise UserError("--guidance-scales measures with the digit classifier: it needs a digits run")
    seed = info.get("seed", 0)
    X, labels = (
        load_dataset(info["dataset"], info["num_rows"], seed=seed)
        if info.get("num_rows")
        else load_dataset(info["dataset"], seed=seed)
    )
    # All rows, the held-out ones included, split as load_training_data splits them.
    train_rows, held_rows = held_out_rows(X.shape[0], info.get("holdout") or 0, seed)
    report = evaluate_run(
        model,
        X,
        train_rows,
        held_rows,
        dataset=info["dataset"],
        num_samples=args.num_samples,
        sample_seeds=args.sample_seeds,
        sampler=args.sampler,
        num_inference_steps=args.steps,
        seed=args.seed,
        labels=labels if model.config.num_classes is not None else None,
    )
    print(format_table(report))
    if scales is not None:
        from .guidance import format_guidance_report, guidance_report

        rows = guidance_report(
            model, scales, n_per_class=args.n_per_class, seed=args.seed, X=X, num_inference_steps=args.steps
        )
        print(format_guidance_report(rows))
    return 0


# The demo is unconditional by default. Over training seeds 0-6 (`evaluate`, DDIM 200, README
# "Conditioning and guidance"), a class-conditional model sampled with each sample's class
# drawn from the training frequencies (guidance w = 1) scored a classifier-feature ratio of
# 1.15 against 1.12 and a precision of 0.88 against 0.84, but memorised more: 8.7% of its
# samples against 7.9% (14.9% on seed 6).
# ``demo --conditional`` trains with labels and adds the guidance figures and table.
DEMO_GUIDANCE_SCALES = "0,1,3,7"
# DDIM steps of `sample`, `evaluate` and the demo's table. On the digits 200 steps
# score clearly nearer the floor than 50 (README, "Quality on the digits"), and
# 3 x 898 samples still take seconds.
SAMPLE_STEPS = 200
DEMO_HOLDOUT = 200  # digits kept out of training: the memorisation threshold, and inpainting.png


def cmd_demo(args: argparse.Namespace) -> int:
    argv = (
        ["train", "--dataset", "digits", "--out", args.out, "--seed", str(args.seed), "--device", args.device]
        + ["--holdout", str(DEMO_HOLDOUT)]
        + (["--conditional"] if args.conditional else [])
        + (["--no-progress"] if args.no_progress else [])
        + (["--overwrite"] if args.overwrite else [])
        + (["--resume"] if args.resume else [])
    )
    train_args = build_parser().parse_args(argv)
    train_args.given = given_options(argv)
    status = cmd_train(train_args)
    if status:
        return status
    eval_args = argparse.Namespace(
        run=args.out,
        device=args.device,
        num_samples=None,
        sample_seeds=3,
        sampler="ddim",
        steps=SAMPLE_STEPS,
        seed=0,  # sample seeds 0, 1, 2 whatever the training seed: runs compare on the same noise
        guidance_scales=DEMO_GUIDANCE_SCALES if args.conditional else None,
        n_per_class=100,
    )
    return cmd_evaluate(eval_args)


# ---------------------------------------------------------------- parser


def add_train_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--out", default=None, help="run folder for the checkpoint and figures")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="DIR",
        help="continue the run in DIR (or in --out) with the settings stored in its checkpoint",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a folder that holds a run (it is replaced at the new run's first save)",
    )
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


def given_options(argv: list[str]) -> set[str]:
    """The train options written on the command line ``argv`` (["train", ...]), as argparse dests.

    A resume compares only these with the stored run: an option left out
    takes the stored value, never its default.
    """
    p = argparse.ArgumentParser(add_help=False)  # abbreviations resolve as in the real parser
    add_train_options(p)
    for action in p._actions:  # parse again with no defaults: what remains was given
        action.default = argparse.SUPPRESS
        action.required = False
    given, _ = p.parse_known_args(argv[1:])
    return set(vars(given))


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
    p.add_argument("--resume", action="store_true", help="continue the demo run in OUT")
    p.add_argument("--overwrite", action="store_true", help="train again into OUT, replacing its run")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        help="train both stages and write a checkpoint and figures",
        epilog=(
            "--resume DIR takes every setting from the run in DIR (data set, rows, holdout, seed, "
            "conditioning, model and training settings); a flag that contradicts it is refused. Flags "
            "that may change on resume: "
            + ", ".join(flag_name(n) for n in RESUME_MAY_CHANGE)
            + " (step counts not below the steps done; --vae-steps only before the denoiser starts)."
        ),
    )
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("--run", required=True, help="run folder (or checkpoint file)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument(
        "--steps",
        type=int,
        default=SAMPLE_STEPS,
        help="DDIM steps (DDPM uses all of them; default: %(default)s)",
    )
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 like DDPM")
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class to sample (conditional models; default: each sample's class drawn from the training "
        "rows' class frequencies)",
    )
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
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="rows per compared set (default: half the data, the size of each real half)",
    )
    p.add_argument("--sample-seeds", type=int, default=3, help="sample seeds SEED, SEED+1, ... (default: 3)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=int, default=SAMPLE_STEPS, help="DDIM steps (default: %(default)s)")
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


def describe_os_error(exc: OSError) -> str:
    """An operating system's refusal in one line: what, and on which path."""
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text += f": {exc.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "train":
        args.given = given_options(argv)
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
    except OSError as exc:  # a full disk, a folder that cannot be written, a path that is a file
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use smaller sizes (--num-samples, --hidden-size, ...)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

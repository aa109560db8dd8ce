"""Run folders: where ``train`` keeps a model, and the rules that keep the work in it safe.

A run folder holds

    model.safetensors   the checkpoint; its header also records the run's data options
                        (``run``: data set, rows, holdout, seed, conditioning), so the
                        file alone says how to resume it
    run.json            a readable copy of those options, rewritten after every save
    .lock               locked (``flock``) while a ``train`` writes into the folder

The rules, as in PyTorch Lightning's checkpointing and Hugging Face's
``save_pretrained``: never destroy the user's work, say exactly what happened.

- A folder that holds a model is not trained into again unless the user says
  ``--resume`` (continue) or ``--overwrite`` (start again; the old files are
  replaced only by the first save of the new run).
- Nothing is written before training has run: the first save writes the
  checkpoint and then run.json, each atomically (``write_atomically``).
- A second ``train`` into a folder that is being trained into stops at once.
- A signal during a save waits for the save (``hold_signals``).
- Temporaries of a save killed by SIGKILL are removed by the next ``train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, read_metadata, stale_temporaries, write_atomically
from .models import param_count
from .pipeline import LatentDiffusion, LDMConfig

try:  # POSIX; on Windows a second train into one folder is not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MODEL_FILE = "model.safetensors"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUN_KEY = "run"  # the checkpoint header entry holding the run's data options


class UserError(Exception):
    """A mistake the user can fix, or a refusal to destroy work; printed as one line."""


# ---------------------------------------------------------------- signals


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM stops the program as Ctrl-C does (KeyboardInterrupt).

    So ``kill PID`` (what schedulers and ``docker stop`` send) finishes the
    training step, saves and exits, like Ctrl-C, instead of killing the
    process on the spot. Where SIGTERM is ignored, it stays ignored.
    """
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def hold_signals(*, redeliver: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM back for the duration of a save; yields the list of those received.

    A Ctrl-C that aborted a save halfway would leave the previous checkpoint
    (the temporary is removed), yet the user would believe it saved. Here a
    signal only prints that the save continues. Afterwards the signals are
    handed to the handlers that were installed before (``redeliver``): the
    training loop then stops after its step, or KeyboardInterrupt is raised,
    now that the file is whole.
    """
    received: list[int] = []
    if not _main_thread():
        yield received
        return

    def wait(signum: int, frame: Any) -> None:
        received.append(signum)
        print("\nsaving the checkpoint; the run stops once it is written", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, wait) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if redeliver:
            for s in received:
                handler = previous[s]
                if callable(handler):
                    handler(s, None)
                elif handler == signal.SIG_DFL:
                    signal.raise_signal(s)


# ---------------------------------------------------------------- memory


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def estimated_bytes(config: LDMConfig) -> int:
    """A lower bound on the memory a model of ``config`` needs to train.

    Parameters P (``param_count``, plus the class embedding) are held five
    times (weights, gradients, Adam's m and v, the EMA copy); the schedule
    is about 16 arrays of ``num_steps`` float64s; a batch keeps about
    (num_layers + 4) activations of [batch, 4 hidden] for the backward pass.
    """
    c = config
    itemsize = 8 if c.dtype == "float64" else 4
    params = param_count(c.input_size, c.latent_size, c.hidden_size, c.num_layers)
    params += ((c.num_classes or 0) + 1) * c.hidden_size
    batch = max(c.vae_batch_size, c.denoiser_batch_size)
    activations = batch * 4 * c.hidden_size * (c.num_layers + 4) * itemsize
    return 5 * params * itemsize + 16 * 8 * c.num_steps + activations


def check_fits_in_memory(config: LDMConfig, where: str) -> None:
    """Refuse a configuration that cannot fit in this machine's memory, before allocating any of it."""
    need, have = estimated_bytes(config), physical_memory()
    if have is not None and need > have:
        c = config
        raise UserError(
            f"{where} needs at least {need / 2**30:,.1f} GiB (input_size={c.input_size}, "
            f"hidden_size={c.hidden_size}, num_layers={c.num_layers}, num_steps={c.num_steps}), more "
            f"than this machine's {have / 2**30:,.1f} GiB; nothing was allocated"
        )


def config_from_checkpoint(path: Path) -> LDMConfig:
    """The validated configuration in a checkpoint's header (no tensor is read)."""
    meta = read_metadata(path)
    try:
        config = json.loads(meta["config"])
        config.pop("workers", None)  # retired in format 1; never changed the model
        return LDMConfig(**config).validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has a damaged or impossible configuration: {exc}") from None


def load_model(path: str | Path, device: str = "cpu") -> LatentDiffusion:
    """``LatentDiffusion.load``, with the configuration's size checked first and any missing entry refused."""
    path = Path(path)
    check_fits_in_memory(config_from_checkpoint(path), f"the model in {path}")
    try:
        return LatentDiffusion.load(path, device=device)
    except KeyError as exc:
        raise CheckpointError(f"{path} is damaged and was not loaded: {exc.args[0]!r} is missing") from None


# ---------------------------------------------------------------- the folder


def check_parents(path: Path, flag: str) -> None:
    """Refuse, in one line, a path whose nearest existing ancestor is a file (no folder can be made there)."""
    parent = next((p for p in Path(path).parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder")


def describe_steps(model: LatentDiffusion) -> str:
    c = model.config
    return f"VAE step {model.vae_state.step}/{c.vae_steps}, denoiser step {model.denoiser_state.step}/{c.denoiser_steps}"


class RunFolder:
    """One run folder: its checkpoint, its run.json, its lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoint = self.path / MODEL_FILE
        self.run_file = self.path / RUN_FILE
        self.info: dict[str, Any] = {}
        self.saved_steps: tuple[int, int] | None = None  # what the checkpoint holds, once this run saved
        self._created = False

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def check_path(self) -> None:
        """A folder, or a path where one can be made; else a one-line refusal."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder; give a folder for the run")
        check_parents(self.path, "--out")

    def holds_model(self) -> bool:
        return self.checkpoint.exists() or self.run_file.exists()

    def stored_info(self) -> dict[str, Any] | None:
        """The run's data options from the checkpoint's header (format 2), or run.json (older runs)."""
        meta = read_metadata(self.checkpoint)
        if RUN_KEY in meta:
            try:
                return json.loads(meta[RUN_KEY])
            except json.JSONDecodeError:
                raise CheckpointError(f"{self.checkpoint} has a damaged '{RUN_KEY}' entry") from None
        return read_run_file(self.run_file)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one ``train``: refuse if another holds it; clear stale temporaries.

        An ``flock`` is released by the OS when the process ends, however it
        ends, so a killed run never leaves the folder locked. If the run
        saved nothing, the folder is left as it was found.
        """
        self.check_path()
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_FILE, "a+")
        except OSError as exc:
            raise UserError(f"cannot use {self.path} as the run folder: {exc.strerror}") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise UserError(
                        f"another `train` is writing into {self.path} right now; wait for it to "
                        "finish, or give another --out"
                    ) from None
            for stale in stale_temporaries(self.checkpoint) + stale_temporaries(self.run_file):
                stale.unlink(missing_ok=True)
                print(f"removed {stale.name}, left by a save that was killed")
            yield
        finally:
            handle.close()
            if not self.checkpoint.exists():  # nothing of this run was saved: leave no trace
                (self.path / LOCK_FILE).unlink(missing_ok=True)
                if self._created:
                    with contextlib.suppress(OSError):
                        self.path.rmdir()

    def save(self, model: LatentDiffusion, *, redeliver: bool = True) -> None:
        """Write the checkpoint (with the run's options in its header), then run.json; signals wait."""
        steps = (model.vae_state.step, model.denoiser_state.step)
        with hold_signals(redeliver=redeliver):
            model.save(self.checkpoint, metadata={RUN_KEY: json.dumps(self.info)})
            write_atomically(self.run_file, (json.dumps(self.info, indent=2) + "\n").encode())
            self.saved_steps = steps

    def is_saved(self, model: LatentDiffusion) -> bool:
        return self.saved_steps == (model.vae_state.step, model.denoiser_state.step)


def read_run_file(path: Path) -> dict[str, Any] | None:
    """run.json as a dict (None if absent); a damaged one is a one-line error."""
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is damaged ({exc}); it is rewritten at the run's next save") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} is damaged (not a JSON object)")
    return info


def config_dict(model: LatentDiffusion) -> dict[str, Any]:
    return dataclasses.asdict(model.config)

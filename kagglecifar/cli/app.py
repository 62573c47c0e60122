"""The Typer app, the options several commands share, and the console entry point: one-line errors,
a non-zero exit, no traceback for user mistakes or OS problems; Ctrl-C and SIGTERM stop cleanly (exit 130)."""

from __future__ import annotations

import gc
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference.tta import tta_help

app = typer.Typer(
    help="From nothing to a scored submission in Kaggle's CIFAR-10 competition.\n\n"
    "Typical session:  fetch  ->  train  ->  predict  ->  submit   (or all at once: run)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)

# None: the API's default, NAME here, or /kaggle/working/NAME in a Kaggle notebook (kaggle_env.default_dir)
DATA_DIR = typer.Option(None, "--data-dir", show_default="data", help="Where downloads and the image cache live.")
RUNS_DIR = typer.Option(None, "--runs-dir", show_default="runs", help="Where training runs are written.")
SUBMISSIONS_DIR = typer.Option(
    None, "--submissions-dir", show_default="submissions", help="Where submission CSVs are written."
)
COMPETITION = typer.Option("cifar-10", "--competition", help="Kaggle competition slug.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")
BATCH_SIZE = typer.Option(
    None,
    "--batch-size",
    min=1,
    help="Images per forward pass (default: 256 on CPU; on CUDA what half the free memory holds, at most 1024).",
)
CONFIG_FILE = typer.Option(
    None,
    "--config",
    metavar="FILE",
    help="A recipe file (YAML/JSON), e.g. a run's config.yaml or tune's best.yaml; overrides the preset.",
)
SETS = typer.Option(
    None, "--set", metavar="KEY=VALUE", help="Override any config field, e.g. --set lr=0.1 (repeatable)."
)
TTA_HELP = tta_help()  # generated from tta.TTA_MODES
TTA_FRACTION = typer.Option(
    None,
    "--tta-fraction",
    metavar="F",
    help="Share of the images (0 < F <= 1) that get every TTA view: the least confident ones, those whose second "
    "most likely class is the most probable when predicted from the image alone; the rest keep that prediction. "
    "1: every image gets every view. Default: 0.3.",
)  # gating.DEFAULT_FRACTION; a test keeps them in step


def preset_help(lead: str, default: str = "Default: gpu with CUDA, else cpu.") -> str:
    """--preset's help, from each preset file's one-line description."""
    from kagglecifar.console import choices_text
    from kagglecifar.recipes import preset_descriptions

    return f"{lead}, one of kagglecifar/presets/NAME.yaml: {choices_text(preset_descriptions())}. {default}"


TTA_DEFAULT = "flip"  # what `--tta` alone means
OPTIONAL_VALUE = {"--tta": TTA_DEFAULT}  # options whose value may be left out (click has no such option)


def fill_optional_values(argv: list[str]) -> list[str]:
    """argv with the default value inserted after an optional-value option given without one: `--tta` last, or
    followed by another option or by an existing path (a run folder), reads as `--tta flip`. Anything else after
    it is its value (a mode, checked as usual); `--tta=MODE` and everything after `--` pass as they are."""
    filled: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return filled + list(argv[index:])
        filled.append(arg)
        if arg in OPTIONAL_VALUE:
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or following.startswith("-") or (Path(following).exists() and not _is_mode(following)):
                filled.append(OPTIONAL_VALUE[arg])
    return filled


def _is_mode(text: str) -> bool:
    from kagglecifar.inference.tta import TTA_VIEWS

    return text in TTA_VIEWS


def summary(line: str) -> None:
    """The one-line summary every command ends with."""
    typer.echo(line)


def examples(*lines: str) -> str:
    """A help epilog; click keeps a paragraph that starts with \\b as written."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


FROM_DIR_HELP = (
    "a folder or file already here: the competition's files (train.7z, test.7z, trainLabels.csv, "
    "sampleSubmission.csv), a cifar-10/100-python.tar.gz or its folder, or an image folder "
    "(train/CLASS/*.png|jpg, optional test/); no network."
)
DATASET = typer.Option(
    None,
    "--dataset",
    metavar="OWNER/NAME",
    help="A Kaggle dataset in any of those shapes, downloaded (resumable) into DATA_DIR/datasets/OWNER/NAME.",
)
FORMAT = typer.Option(
    None,
    "--format",
    metavar="FORMAT",
    help="competition, cifar-python or image-folder: what "
    "--from-dir/--dataset holds (default: recognised from what is there).",
)
LABELS = typer.Option(
    None,
    "--labels",
    metavar="fine|coarse",
    help="CIFAR-100: its 100 classes (fine, the default) or its 20 super-classes (coarse).",
)


def _stop_on_sigterm() -> None:
    """SIGTERM stops like Ctrl-C: a KeyboardInterrupt in the main thread, so every stage cleans up the same way
    (training installs its own handler for a clean stop at a step boundary)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: one-line errors, non-zero exit, no traceback for user mistakes or OS problems.
    `argv` None: this process's own command line, and the process ends with the command."""
    from kagglecifar.files import os_error
    from kagglecifar.records import reset_warnings

    _stop_on_sigterm()
    reset_warnings()
    try:
        app(args=fill_optional_values(sys.argv[1:] if argv is None else list(argv)), prog_name="kagglecifar")
    except KaggleCifarError as exc:
        typer.echo(f"kagglecifar: error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        typer.echo(f"kagglecifar: error: {os_error(Path(exc.filename or '.'), exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("kagglecifar: interrupted", err=True)
        sys.exit(130)
    finally:
        if argv is None:
            # Exempt every live object from garbage collection: the interpreter's exit then skips its last
            # collections over the hundreds of thousands that importing torch creates, and leaves their
            # garbage cycles to the operating system (two EPYC cores: `doctor` 1.36 s instead of 1.71 s,
            # `models` 4.1 s instead of 5.1 s, `predict` unchanged; benchmarks/bench_cli_exit.py).
            gc.freeze()

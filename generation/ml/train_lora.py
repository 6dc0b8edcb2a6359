"""Trains a style LoRA adapter on a folder of captioned images, without Django.

    python -m generation.ml.train_lora [--base DIR] --data DIR --out DIR
        [--preset quick|standard|thorough] [--steps N] [--rank R] [--seed S]
        [--targets attention|full] [--overwrite]

The data folder holds images (any type Pillow opens: png, jpg, webp, avif,
tiff, ppm, ...) each with a caption in a text file of the same name
(`cat.png` + `cat.txt` or `cat.TXT`); hidden files (".name") are left out.
Images of any size are centre-cropped and resized to the base model's
resolution. Progress goes to stderr; the last line on stdout is JSON with the
weights path, sha256, steps, final loss and seconds. Running the same command
again with the same --work folder resumes from its last checkpoint; an --out
holding an adapter of another run is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import re
import signal
import sys
import warnings
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from .captions import CaptionNotText, decode_caption
from .training_config import SEED_MAX, SEED_MIN, SETTING_MAXIMA, preset_config


def _pillow_image_suffixes() -> frozenset[str]:
    """The file name endings of every image type Pillow opens (.png, .avif, .ppm, ...): not those it only writes
    (.pdf), nor its stubs, which need a decoder the application registers (GRIB, HDF5, WMF)."""
    Image.init()  # registers every plugin, not only the common ones

    def opens(image_type: str) -> bool:
        factory = Image.OPEN.get(image_type, (None,))[0]
        return factory is not None and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))

    return frozenset(suffix for suffix, image_type in Image.registered_extensions().items() if opens(image_type))


IMAGE_SUFFIXES = _pillow_image_suffixes()


class DataFolderError(ValueError):
    pass


def seed_argument(text: str) -> int:
    """argparse type of --seed: a whole number torch's generators take (negative ones included)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not SEED_MIN <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not a seed from -2**63 to 2**64 - 1")
    return value


def describe_os_error(exc: OSError) -> str:
    """"PATH: reason" (an OSError's own text starts with "[Errno 13]")."""
    if exc.filename is not None and exc.strerror:
        paths = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
        return f"{paths}: {exc.strerror}"
    return str(exc) or exc.__class__.__name__


def folder_write_problem(folder) -> str | None:
    """Why files cannot be made in `folder` (created first, with its parents, when missing): the nearest part
    of the path that exists must be a folder this user may write in. None when they can. Creates nothing."""
    probe = Path(folder).absolute()
    try:
        while not os.path.lexists(probe) and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is not a folder"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} is not writable"
    except OSError as exc:
        return f"cannot look into {describe_os_error(exc)}"
    return None


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def visible_entries(folder: Path, what: str) -> list[Path]:
    """The entries of a --data or --works folder (`what` names it in errors), sorted, hidden ones left out: names
    starting with "." (.DS_Store, the "._name.png" AppleDouble file a Mac writes beside each file it copies to a
    foreign disk), as licensing's import_works leaves them out."""
    try:
        if not folder.is_dir():
            raise DataFolderError(f"{what} {folder} is not a folder" if folder.exists()
                                  else f"{what} not found: {folder}")
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataFolderError(f"cannot read {folder}: {exc.strerror or exc}") from None


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(entries: list[Path]) -> list[Path]:
    return [p for p in entries if is_image_name(p) and p.is_file()]


def unread_subfolders(entries: list[Path]) -> str:
    """"" or a clause naming the subfolders among `entries`: works in them are not read (a folder named like an
    image is refused as broken instead)."""
    folders = [p.name for p in entries if p.is_dir() and not is_image_name(p)]
    return f"; works in subfolders are not read ({_shown(folders)})" if folders else ""


def refuse_broken_images(entries: list[Path]) -> None:
    """A name of an image that is not a file (a broken link, a link loop, a folder) is a DataFolderError: a work
    that was meant to be there."""
    broken = [p.name for p in entries if is_image_name(p) and not p.is_file()]
    if broken:
        raise DataFolderError(f"{len(broken)} image(s) that are broken links or not files: {_shown(broken)}")


def caption_files(entries: list[Path]) -> dict[str, Path]:
    """Each name's caption among `entries`, by stem: `name.txt`, the suffix in any case (`name.TXT`). Two that
    differ only in that case are a DataFolderError naming both: which one is meant cannot be told."""
    captions: dict[str, Path] = {}
    for path in entries:
        if path.suffix.lower() != ".txt" or path.is_dir():
            continue
        if path.stem in captions:
            raise DataFolderError(f"captions {captions[path.stem].name} and {path.name} differ only in the case of "
                                  "their suffix: keep one")
        captions[path.stem] = path
    return captions


def refuse_images_sharing_a_stem(images: list[Path]) -> None:
    """Two images of one stem (`a.png` and `a.jpg`) would share one caption, and a work exported twice would count
    double: a DataFolderError naming them."""
    by_stem: dict[str, list[str]] = {}
    for path in images:
        by_stem.setdefault(path.stem, []).append(path.name)
    shared = [" and ".join(names) for names in by_stem.values() if len(names) > 1]
    if shared:
        raise DataFolderError(f"{len(shared)} name(s) used by more than one image, which would share one caption: "
                              f"{_shown(shared)}; keep one of each")


# A centre square keeping less of an image than this is worth a note: the rest of it is never trained on.
CROP_NOTE_SHARE = 0.5


def check_image(path: Path) -> None:
    """Reads the whole image now, not after the base model has loaded (Pillow's verify() reads no JPEG data, so a
    truncated one would pass it): a DataFolderError naming it when it cannot be read. A note, in one line, for an
    image far larger than training needs (Pillow's two-line decompression-bomb warning) or one whose centre square,
    which training uses, keeps less than CROP_NOTE_SHARE of it."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                width, height = image.size
    except UnidentifiedImageError:  # its message holds the whole path
        raise DataFolderError(f"cannot read image {path.name}: empty, damaged or not an image") from None
    except OSError as exc:
        raise DataFolderError(f"cannot read image {path.name}: {exc.strerror or exc}") from None
    except Exception as exc:  # Pillow's decoders raise what they meet (SyntaxError, ValueError, ...)
        raise DataFolderError(f"cannot read image {path.name}: {exc or exc.__class__.__name__}") from None
    too_large = False
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            too_large = True
        else:  # others, as they would have shown
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if too_large:
        print(f"note: {path.name} is {width}x{height} px, far more than is used: it is read whole and scaled down; a "
              "copy of a few megapixels works the same, faster", file=sys.stderr)
    kept = min(width, height) / max(width, height)
    if kept < CROP_NOTE_SHARE:
        # Rounded down, so that it never reads "50%" beside "less than half"; 5000x20 keeps 0.4%, not "0%".
        share = f"{math.floor(kept * 100)}%" if kept >= 0.01 else f"{math.floor(kept * 1000) / 10}%"
        print(f"note: {path.name} is {width}x{height} px: only its centre square is used, {share} of it",
              file=sys.stderr)


def refuse_unpaired_captions(entries: list[Path], images: list[Path], captions: dict[str, Path]) -> None:
    """An image without a caption, or a caption without an image (`5.txt` beside `05.png`), is a DataFolderError
    naming them: the work would be trained (or evaluated) under no caption or another one."""
    # `name.png.txt` is a common way to name a caption; this tool reads `name.txt`, its case as the image's.
    by_folded_stem = {stem.casefold(): caption for stem, caption in captions.items()}
    missing = []
    for image in images:
        if image.stem in captions:
            continue
        if image.name in captions:
            missing.append(f"{image.name} (found {captions[image.name].name}: name it {image.stem}.txt)")
        elif image.stem.casefold() in by_folded_stem:
            missing.append(f"{image.name} (found {by_folded_stem[image.stem.casefold()].name}: the names differ in "
                           f"case; name it {image.stem}.txt)")
        else:
            missing.append(image.name)
    if missing:
        raise DataFolderError(f"{len(missing)} image(s) without a .txt caption: {_shown(missing)}")
    stems = {p.stem for p in images}
    image_names = {p.name for p in images}
    orphans = []
    for stem, caption in captions.items():
        if stem in stems:
            continue
        # An image of that name that is not a file (a broken link or a link loop, a folder), a file of that name
        # this tool does not read as an image (an SVG drawing, a PSD), or `name.png.txt` beside `name.txt`: the
        # caption's image, in the artist's eyes.
        unusable = [p.name for p in entries if p.stem == stem and is_image_name(p)]
        unread = [p.name for p in entries if p.stem == stem and p != caption and p.is_file() and not is_image_name(p)]
        if unusable:
            caption_name = f"{caption.name} ({unusable[0]} is a broken link or not a file)"
        elif stem in image_names:
            caption_name = f"{caption.name} ({stem} already has {captions[Path(stem).stem].name}; keep one)"
        elif unread:
            caption_name = (f"{caption.name} ({unread[0]} is not an image type this tool reads; export it as PNG or "
                            "JPEG)")
        else:
            caption_name = caption.name
        orphans.append(caption_name)
    if orphans:
        raise DataFolderError(f"{len(orphans)} caption(s) without an image: {_shown(orphans)}")


def read_data_folder(folder) -> list:
    """TrainingExamples from images with same-named .txt captions, sorted by name. An image without a
    caption, a caption without an image, or a file that cannot be read is a DataFolderError naming it."""
    from .lora_training import TrainingExample

    folder = Path(folder)
    entries = visible_entries(folder, "data folder")
    images = image_files(entries)
    captions = caption_files(entries)
    if not images:
        raise DataFolderError(f"no images in {folder} (expected .png, .jpg or other image files with .txt captions)"
                              + unread_subfolders(entries))
    refuse_images_sharing_a_stem(images)
    refuse_unpaired_captions(entries, images, captions)
    refuse_broken_images(entries)
    for path in images:  # checked now, not after the base model has loaded
        check_image(path)
    return [TrainingExample(str(path), read_caption(captions[path.stem])) for path in images]


def read_caption(path: Path) -> str:
    """The caption in a .txt file, its whitespace runs made single spaces."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFolderError(f"cannot read caption {path.name}: {exc.strerror or exc}") from None
    try:
        caption = " ".join(decode_caption(data).split())
    except CaptionNotText as exc:
        raise DataFolderError(f"caption {path.name} {exc}") from None
    if not caption:
        raise DataFolderError(f"empty caption in {path.name}")
    return caption


class PrintingCallbacks:
    """Progress lines on stderr, about every 5% of the steps; Ctrl-C and SIGTERM as a cancel (see
    `cancel_on_ctrl_c`)."""

    def __init__(self, stream=None):
        self.stream = stream
        self.stopped_by: int | None = None  # the signal that asked the loop to stop
        self.all_steps_done = False  # then a stop asked for comes too late: the run only finishes and saves

    @contextlib.contextmanager
    def cancel_on_ctrl_c(self):
        """While inside, the first Ctrl-C or SIGTERM (what `kill`, systemd and docker stop send) asks the loop to
        stop as a cancel does, keeping a checkpoint of the steps done so far (at its next step, between the stages
        of its set-up, or between batches of encoding or previews); a second one stops at once. A signal ignored
        when the run started (Ctrl-C in the background, under nohup) stays ignored."""
        def interrupt(signum, frame):
            self.stopped_by = signum
            for number, handler in previous.items():
                signal.signal(number, handler)
            again = b"Ctrl-C" if signum == signal.SIGINT else b"SIGTERM"
            # os.write, not print: a handler that prints while the loop prints raises "reentrant call".
            doing = (b"all steps are done: finishing and saving the adapter" if self.all_steps_done
                     else b"stopping at the next step, keeping a checkpoint")
            os.write(2, doing + b" (" + again + b" again stops at once)\n")

        previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(number) is not signal.SIG_IGN}
        for number in previous:
            signal.signal(number, interrupt)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def on_progress(self, step, total, loss, eta_seconds):
        self.all_steps_done = step == total
        every = max(1, total // 20)
        if step % every == 0 or step == total or step == 1:
            eta = f"{eta_seconds:.0f} s" if eta_seconds is not None else "?"
            self._print(f"step {step}/{total}  loss {loss:.4f}  eta {eta}")

    def on_preview(self, step, images):
        self._print(f"step {step}: {len(images)} preview images")

    def on_checkpoint(self, step):
        pass

    def on_resume(self, step):
        pass  # the loop logs where it resumed

    def before_saving(self):
        pass

    def should_cancel(self):
        # Once every step is done the run finishes, its last previews included, as Ctrl-C then said it would.
        return self.stopped_by is not None and not self.all_steps_done

    def on_log(self, line):
        self._print(line)


def out_of_memory_problem(exc: BaseException) -> str | None:
    """"out of memory" and the allocation that failed, when `exc` says memory ran out (None: it does not). torch
    raises a RuntimeError (CUDA's OutOfMemoryError is one), whose CUDA text goes on for lines of advice."""
    if not (isinstance(exc, MemoryError) or re.search(r"out of memory|can't allocate memory", str(exc))):
        return None
    allocation = re.search(r"tried to allocate (\d[\d.]* ?\w+)", str(exc), re.IGNORECASE)
    return "out of memory" + (f" (tried to allocate {allocation.group(1)})" if allocation else "")


class WorkFolderBusy(Exception):
    """Another run holds the work folder."""


@contextlib.contextmanager
def work_folder_held(work: Path):
    """Held by one run at a time: two runs on one work folder would overwrite each other's checkpoint and cache.
    Once held, the half-written checkpoint and cache a run killed while saving left (`.checkpoint.pt.….tmp`,
    `.cache.pt.….tmp`, the names `_atomic_torch_save` gives them) are removed: no run is writing them. A run that
    saved nothing there (it failed before encoding) leaves no folder behind. Where the folder cannot be locked (a
    file system without flock), the run goes on unlocked, saying so."""
    from .lora_training import CACHE_NAME, CHECKPOINT_NAME

    made = not work.exists()
    lock = _locked_file(work / ".lock")
    try:
        if lock is not None:
            for name in (CHECKPOINT_NAME, CACHE_NAME):
                for leftover in work.glob(f".{name}.*.tmp"):
                    leftover.unlink()
        yield
    finally:
        if lock is not None:
            lock.close()
        leftovers = sorted(entry.name for entry in work.iterdir()) if work.is_dir() else None
        if made and leftovers in ([], [".lock"]):  # it saved nothing: no folder left behind
            with contextlib.suppress(OSError):  # another run has just made a lock file of its own there
                if leftovers:
                    (work / ".lock").unlink()
                work.rmdir()


def _locked_file(path: Path):
    """`path` opened and flock'ed, its holder's pid written in it; None, after a note, where it cannot be locked. A
    lock file removed (by the run before, leaving) between opening and locking it is opened again."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = None
        try:
            handle = open(path, "a+")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes, or the process dies
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise WorkFolderBusy(f"work folder {path.parent} is in use by another train_lora run (process {holder}); "
                                 "wait for it, or give another --work") from None
        except OSError as exc:  # a lock file this user cannot open, or a file system without flock
            if handle is not None:
                handle.close()
            print(f"note: cannot lock the work folder {path.parent} ({exc.strerror or exc}); going on without: "
                  "another run on it would overwrite this one's checkpoint", file=sys.stderr)
            return None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def run_cli(run, argv: list[str] | None, out_of_memory_advice: str | None = None) -> dict:
    """The CLIs' entry: what goes wrong after the checks is one line, no traceback: a file or folder that cannot
    be read or written and memory running out (status 2, `out_of_memory_advice` after the latter), Ctrl-C (130)."""
    try:
        return run(argv)
    except OSError as exc:
        error = describe_os_error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    except (MemoryError, RuntimeError) as exc:
        error = out_of_memory_problem(exc)
        if error is None:  # a bug keeps its traceback
            raise
        if out_of_memory_advice:
            error += f"; {out_of_memory_advice}"
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict:
    return run_cli(_main, argv, out_of_memory_advice="lower --batch-size, --rank or --resolution")


def _main(argv: list[str] | None) -> dict:
    from . import BUILTIN_BASE_MODEL, default_threads

    parser = argparse.ArgumentParser(prog="python -m generation.ml.train_lora",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=BUILTIN_BASE_MODEL,
                        help="diffusers model folder (default: the built-in base model)")
    parser.add_argument("--data", type=Path, required=True, help="folder of images with .txt captions")
    parser.add_argument("--out", type=Path, required=True, help="adapter folder to write")
    parser.add_argument("--preset", choices=("quick", "standard", "thorough"), default="standard")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--rank", type=int, help="override the preset's rank (alpha follows it)")
    parser.add_argument("--alpha", type=int, help="override the LoRA alpha")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--learning-rate", type=float, help="override the preset's learning rate")
    parser.add_argument("--resolution", type=int, help="training size in px (default: the base's own)")
    parser.add_argument("--targets", choices=("attention", "full"),
                        help="UNet layers the LoRA trains: the attention projections, or every linear and "
                             "convolution (default: the preset's)")
    parser.add_argument("--train-text-encoder", action="store_true", help="also train a text-encoder LoRA")
    parser.add_argument("--flip", action="store_true",
                        help="also train each work mirrored, left and right swapped in its caption (off by default: "
                             "mirroring changes directional traits such as hatching)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet: faster steps after a first compile (minutes on a CPU)")
    parser.add_argument("--seed", type=seed_argument, help="random seed, -2**63 to 2**64 - 1 (default 0)")
    parser.add_argument("--work", type=Path, help="cache and checkpoint folder (default: <out>.work)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an adapter in --out that another run made (without it, only a resume or rerun "
                             "of the same run, whose checkpoint is in --work, may replace it)")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: CUDA, else MPS, else the CPU)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"),
                        help="weights' precision (default: bf16 on a GPU that has it natively, compute capability 8.0 "
                             "and later, else fp16; fp32 on the CPU); the LoRA itself trains in fp32")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help=f"CPU threads (default {default_threads()}: half this machine's cores)")
    args = parser.parse_args(argv)

    for name in ("steps", "rank", "alpha", "batch_size", "resolution", "threads"):
        value, maximum = getattr(args, name), SETTING_MAXIMA.get(name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
        if value is not None and maximum is not None and value > maximum:
            parser.error(f"--{name.replace('_', '-')} must be at most {maximum} (got {value})")
    if not (args.base / "model_index.json").is_file():
        parser.error(f"--base {args.base}: not a diffusers model folder (no model_index.json)")
    try:
        examples = read_data_folder(args.data)
    except DataFolderError as exc:
        parser.error(f"--data: {exc}")
    if note := unread_subfolders(visible_entries(args.data, "data folder")):
        print(f"note: training on the {len(examples)} works directly in --data{note}", file=sys.stderr)

    from . import WEIGHTS_NAME
    from .lora_training import (
        AdapterFolderError, BaseModelError, TrainingCancelled, TrainingDataError, TrainingDiverged, UnknownResolution,
        base_kind_of, check_adapter_folder, checkpoint_run_key, choose_device_and_dtype, device_problem,
        planned_run_key, refuse_work_inside_out, train_lora,
    )

    try:
        kind = base_kind_of(args.base, args.resolution)
    except UnknownResolution as exc:
        parser.error(f"--base: {exc}; give --resolution")
    except BaseModelError as exc:
        parser.error(f"--base: {exc}")
    overrides = dict(steps=args.steps, rank=args.rank, alpha=args.alpha if args.alpha else args.rank,
                     batch_size=args.batch_size, learning_rate=args.learning_rate, resolution=args.resolution,
                     seed=args.seed, unet_targets=args.targets, train_text_encoder=args.train_text_encoder or None,
                     compile_unet=args.compile or None, flip=args.flip or None)
    try:
        config = preset_config(args.preset, kind, **overrides)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        problem = device_problem(args.device) if args.device is not None else None
        if problem:  # said now, not as a base that "cannot load" once loading it fails
            parser.error(f"--device {args.device}: {problem}")
        device, dtype = choose_device_and_dtype(args.device, args.dtype)
    except RuntimeError as exc:  # a device name torch does not know
        parser.error(f"--device: {exc}")
    # diffusers warns that fp16 pipelines cannot run on the CPU; a run took 143 s there against 14-25 s in fp32.
    if device.type == "cpu" and args.dtype == "fp16":
        parser.error("--dtype fp16: the CPU does not compute in fp16; give fp32 (its default) or bf16")
    try:
        check_adapter_folder(args.out)
    except AdapterFolderError as exc:
        parser.error(f"--out: {exc}")
    out = args.out.resolve()  # `--out .` has no name of its own to put ".work" after
    if out == Path.cwd():  # even empty: saving would move the folder the shell stands in (folders above are not empty)
        parser.error(f"--out: {args.out} is the current folder, which saving would move away")
    work = args.work or out.with_name(out.name + ".work")
    if work.exists() and not work.is_dir():
        parser.error(f"work folder {work} (--work, default <out>.work) exists and is not a folder")
    try:
        refuse_work_inside_out(work, args.out)  # now, before the work folder is made to hold the run's lock
    except AdapterFolderError as exc:
        parser.error(str(exc))
    if work.resolve().is_relative_to(args.data.resolve()):
        named = f"--work {work}" if args.work else f"the work folder {work} (default <out>.work)"
        parser.error(f"{named} is inside --data {args.data}: its cache and checkpoints would sit among the works; "
                     "give them apart")
    # Checked now, not as a PermissionError once the run is over: the adapter is written beside --out and renamed.
    problem = folder_write_problem(out.parent) or (folder_write_problem(out) if out.is_dir() else None)
    if problem:
        parser.error(f"--out: {problem}")
    problem = folder_write_problem(work)
    if problem:
        parser.error(f"--work: {problem}")
    # An adapter is replaced without asking only by its own run going on (a resume) or again (a rerun):
    # the checkpoint in the work folder is of the same base, works and settings.
    if not args.overwrite and (out / WEIGHTS_NAME).is_file():
        try:
            same_run = checkpoint_run_key(work) == planned_run_key(args.base, examples, config, dtype)
        except (BaseModelError, TrainingDataError) as exc:
            parser.error(str(exc))
        if not same_run:
            parser.error(f"--out: {args.out} holds an adapter that another run made (other works, base or settings, "
                         f"or its checkpoint is gone from {work}); give --overwrite to replace it")
    callbacks = PrintingCallbacks()
    try:
        with work_folder_held(work), callbacks.cancel_on_ctrl_c():
            result = train_lora(base_path=args.base, examples=examples, out_dir=args.out, config=config,
                                work_dir=work, callbacks=callbacks, device=device, dtype=dtype,
                                threads=args.threads)
    except (AdapterFolderError, BaseModelError, TrainingDataError, TrainingDiverged, WorkFolderBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    except TrainingCancelled as exc:  # Ctrl-C or SIGTERM: the same command resumes from the checkpoint
        if exc.checkpoint_step is None:
            print("interrupted before the first step: run the same command again to carry on", file=sys.stderr)
        else:
            print(f"interrupted at step {exc.checkpoint_step} of {config.steps}: run the same command again to "
                  f"resume from the checkpoint in {work}", file=sys.stderr)
        raise SystemExit(128 + callbacks.stopped_by)  # as the shell reports a signal: 130 for Ctrl-C, 143 for SIGTERM
    import resource
    import statistics

    import torch

    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # the process's peak resident memory (Linux reports KiB)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "weights_path": result.weights_path,
        "sha256": result.sha256,
        "steps": result.steps,
        "final_loss": round(result.final_loss, 6),
        "seconds": round(result.seconds, 2),
        "encode_seconds": round(result.encode_seconds, 2),
        "train_seconds": round(result.train_seconds, 2),
        "resumed_from_step": result.resumed_from_step,
        # The median step leaves out the first steps' warm-up (kernel selection, a compile).
        "median_step_seconds": round(statistics.median(result.step_seconds), 4) if result.step_seconds else None,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "peak_memory_mb": round(peak_mb, 1),
        "base_kind": kind,
        "preset": args.preset,
        "config": config.to_dict(),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

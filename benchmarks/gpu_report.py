"""Style training on a GPU at full model sizes, in one run.

    python benchmarks/gpu_report.py --out DIR [--reference PATH/train_text_to_image_lora.py
        [--reference-site DIR]] [--steps 40] [--works 8] [--runs sd15-bf16,sdxl-bf16,...] [--compile]
        [--scratch DIR]

Writes randomly initialised Stable Diffusion 1.5- and SDXL-shaped bases
(`sd_shaped_base.py`, drawn on the GPU, fp16 on disk), then trains a LoRA on
each with `python -m generation.ml.train_lora` (the SD preset "standard":
attention LoRA rank 16, batch 2, Min-SNR; its one preview grid at the last
step) at 512 px (SD 1.5) and 1024 px (SDXL) in bf16 and fp16, and, given
`--reference`, runs `benchmarks/lora_training.py` on the SD 1.5 shape at
512 px against diffusers' own script. Each run is a subprocess with its own
time limit, so one that fails or hangs costs only itself. Prints a table of
steps/s (from the median step; previews and checkpoints are not steps), peak
GPU memory (`torch.cuda.max_memory_allocated`, previews included) and the
benchmark's ratios, and writes `DIR/gpu_report.json` and `DIR/gpu_report.log`
(every subprocess's output). The runs named in `--runs` go in that order:
sd15-bf16, sdxl-bf16, benchmark, sd15-fp16, sdxl-fp16 by default.
`--compile` compiles this project's UNet in every run (its compile time falls
in the first steps, which the median and the benchmark's warm-up leave out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRAINING_RUNS = {  # name: (base kind, resolution, dtype)
    "sd15-bf16": ("sd15", 512, "bf16"),
    "sdxl-bf16": ("sdxl", 1024, "bf16"),
    "sd15-fp16": ("sd15", 512, "fp16"),
    "sdxl-fp16": ("sdxl", 1024, "fp16"),
}
DEFAULT_RUNS = ("sd15-bf16", "sdxl-bf16", "benchmark", "sd15-fp16", "sdxl-fp16")


class Report:
    def __init__(self, out: Path):
        self.out = out
        self.log_path = out / "gpu_report.log"
        self.results: dict[str, dict] = {}

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(text.rstrip("\n") + "\n")
        print(text, flush=True)

    def run(self, name: str, command: list[str], timeout: float) -> str | None:
        """The command's stdout, or None (with the cause recorded) when it failed."""
        self.log(f"== {name}: {' '.join(command)}")
        started = time.perf_counter()
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            self.log(output[-4000:])
            self.results[name] = {"error": f"no result after {timeout:.0f} s"}
            return None
        seconds = time.perf_counter() - started
        self.log((completed.stdout + completed.stderr)[-6000:])
        self.log(f"== {name}: exit {completed.returncode} after {seconds:.1f} s")
        if completed.returncode != 0:
            last = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
            self.results[name] = {"error": f"exit {completed.returncode}: {last}", "seconds": round(seconds, 1)}
            return None
        return completed.stdout

    def save(self) -> None:
        (self.out / "gpu_report.json").write_text(json.dumps(self.results, indent=2))


def last_json_line(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_report.json and gpu_report.log")
    parser.add_argument("--reference", type=Path, help="diffusers' train_text_to_image_lora.py (for the benchmark)")
    parser.add_argument("--reference-site", type=Path, help="extra package folder for the reference (datasets)")
    parser.add_argument("--steps", type=int, default=40, help="training steps of each run (default 40)")
    parser.add_argument("--works", type=int, default=8, help="works to train on (default 8)")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                        help=f"comma-separated, in order, from {', '.join([*TRAINING_RUNS, 'benchmark'])}")
    parser.add_argument("--compile", action="store_true", help="torch.compile this project's UNet in every run")
    parser.add_argument("--timeout", type=float, default=240, help="seconds each subprocess may take (default 240)")
    parser.add_argument("--scratch", type=Path, help="folder for the bases and adapters (default: a temporary one)")
    args = parser.parse_args(argv)
    runs = [name.strip() for name in args.runs.split(",") if name.strip()]
    unknown = [name for name in runs if name not in TRAINING_RUNS and name != "benchmark"]
    if unknown:
        parser.error(f"--runs: unknown {', '.join(unknown)}")
    if "benchmark" in runs and (args.reference is None or not args.reference.is_file()):
        parser.error("--reference: the benchmark run needs diffusers' train_text_to_image_lora.py")
    if args.steps < 8 or args.works < 1:
        parser.error("--steps must be at least 8 and --works at least 1")

    import torch

    from generation.ml.devices import has_native_bf16

    if not torch.cuda.is_available():
        parser.error("no CUDA device: this report is for a GPU")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="gpu-report-"))
    scratch.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    report.results["machine"] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                 "cuda": torch.version.cuda, "bf16": has_native_bf16("cuda")}
    report.log(json.dumps(report.results["machine"]))

    from benchmarks.lora_training import write_data

    data = scratch / "data"
    if not (data / "captioned").is_dir():
        write_data(data, args.works, 1024)
    bases: dict[str, Path | None] = {}

    def base(kind: str) -> Path | None:
        if kind not in bases:
            folder = scratch / f"base-{kind}"
            ready = (folder / "model_index.json").is_file() or report.run(
                f"base-{kind}", [sys.executable, "benchmarks/sd_shaped_base.py", "--kind", kind, "--out",
                                 str(folder), "--device", "cuda", "--dtype", "fp16"], args.timeout) is not None
            bases[kind] = folder if ready else None
        return bases[kind]

    for name in runs:
        kind = "sd15" if name == "benchmark" else TRAINING_RUNS[name][0]
        if name == "benchmark":
            folder = base(kind)
            command = [sys.executable, "benchmarks/lora_training.py", "--base", str(folder), "--resolution", "512",
                       "--batch", "8", "--steps", str(args.steps), "--warmup", "5", "--works", str(args.works),
                       "--reference", str(args.reference)] + (["--compile"] if args.compile else [])
            if args.reference_site:
                command += ["--reference-site", str(args.reference_site)]
            stdout = report.run(name, command, 2 * args.timeout) if folder else None
            if stdout is not None:
                summary = last_json_line(stdout)
                summary.pop("all_runs", None)
                report.results[name] = summary
        else:
            _, resolution, dtype = TRAINING_RUNS[name]
            folder = base(kind)
            adapter = scratch / f"adapter-{name}"
            for leftover in (adapter, adapter.with_name(adapter.name + ".work")):  # a rerun trains afresh
                shutil.rmtree(leftover, ignore_errors=True)
            command = [sys.executable, "-m", "generation.ml.train_lora", "--base", str(folder), "--data",
                       str(data / "captioned"), "--out", str(adapter), "--preset", "standard",
                       "--steps", str(args.steps), "--resolution", str(resolution), "--dtype", dtype] + (
                          ["--compile"] if args.compile else [])
            stdout = report.run(name, command, args.timeout) if folder else None
            if stdout is not None:
                summary = last_json_line(stdout)
                summary.pop("config", None)
                summary["steps_per_second"] = round(1 / summary["median_step_seconds"], 3)
                summary["adapter_mb"] = round(Path(summary["weights_path"]).stat().st_size / 2**20, 1)
                report.results[name] = summary
        if name not in report.results:
            report.results[name] = {"error": f"the {kind} base could not be built"}
        report.save()

    report.log("\n| run | steps/s (median step) | peak GPU MB | encode s | wall s | final loss |")
    report.log("|---|---|---|---|---|---|")
    for name in runs:
        r = report.results[name]
        if "error" in r:
            report.log(f"| {name} | failed: {r['error']} | | | | |")
        elif name == "benchmark":
            ours, ref = r["ours"], r["reference"]
            report.log(f"| benchmark, this loop ({r['mixed_precision']}, batch {r['batch']}) | "
                       f"{ours['steps_per_second']:.2f} | {ours['peak_cuda_mb']:.0f} | | {ours['wall_seconds']:.1f} | |")
            report.log(f"| benchmark, diffusers' script | {ref['steps_per_second']:.2f} | {ref['peak_cuda_mb']:.0f} | "
                       f"| {ref['wall_seconds']:.1f} | |")
            report.log(f"speed-up {r['speedup_steps_per_second']:.2f}x at {r['memory_ratio']:.2f}x the memory; "
                       f"operation ceiling {r['flop_ceiling']:.2f}x")
        else:
            report.log(f"| {name} | {r['steps_per_second']:.2f} | {r['peak_memory_mb']:.0f} | {r['encode_seconds']} | "
                       f"{r['seconds']} | {r['final_loss']} |")
    report.save()
    return report.results


if __name__ == "__main__":
    main()

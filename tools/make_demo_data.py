"""Re-create the demo checkpoints in metacpo/demo_data/ from benchmarks/demo.yaml.

    python tools/make_demo_data.py --train      # train every (algorithm, env, seed) of the grid into runs/demo, then pack
    python tools/make_demo_data.py runs/demo    # only pack already trained runs

Training runs ``metacpo train`` with the grid's settings (the commands are printed; they are the
ones in the grid file's header). Packing keeps of each run's checkpoint only what loading,
``metacpo adapt`` and ``metacpo render`` need -- the policy, both critics, the observation
normaliser and the config -- plus its progress.csv (``metacpo plot`` reads it), and writes
them to ``metacpo/demo_data/<algorithm>/`` (one env and one seed per algorithm).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "benchmarks" / "demo.yaml"
DEST = ROOT / "metacpo" / "demo_data"
KEEP = ("policy", "critic_r", "critic_c", "obs_norm")


def commands(grid: dict, out: Path) -> list[tuple[str, list[str]]]:
    """(algorithm name, ``metacpo train`` argv) for every cell of the grid."""
    cells = []
    for name, spec in grid["algorithms"].items():
        settings = {**grid.get("train", {}), **(spec.get("set") or {})}
        for env in grid["envs"]:
            for seed in grid["seeds"]:
                argv = ["train", "--algo", spec["algo"], "--env-id", env, "--seed", str(seed), "--no-progress",
                        "--run-dir", str(out / name)]
                for k, v in settings.items():
                    argv += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
                cells.append((name, argv))
    return cells


def pack(run_dir: Path, dest: Path) -> Path:
    import torch

    from metacpo.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    algo = {k: ckpt["algorithm"][k] for k in KEEP}
    algo = {k: {n: (t.clone() if isinstance(t, torch.Tensor) else t) for n, t in v.items()} for k, v in algo.items()}
    dest.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest / "checkpoint.pt", {"iteration": ckpt["iteration"], "config": ckpt["config"], "algorithm": algo})
    shutil.copyfile(run_dir / "progress.csv", dest / "progress.csv")
    (dest / "checkpoint.pt").chmod(0o644)  # package data: readable by all
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="?", default="runs/demo", help="where the grid's runs are (default runs/demo)")
    p.add_argument("--train", action="store_true", help="train the grid's runs first")
    a = p.parse_args(argv)
    grid = yaml.safe_load(GRID.read_text())
    out = Path(a.runs)
    cells = commands(grid, out)
    if len({name for name, _ in cells}) != len(cells):
        raise SystemExit("the demo grid must have one env and one seed per algorithm")
    for name, cmd in cells:
        if a.train:
            print("metacpo " + " ".join(cmd), flush=True)
            subprocess.run([sys.executable, "-m", "metacpo.cli", *cmd], check=True)
        dest = pack(out / name, DEST / name)
        size = sum(f.stat().st_size for f in dest.iterdir())
        print(f"packed {out / name} -> {dest} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A wheel, not only an editable checkout: `pip install .` must carry the Hydra configs, and the
commands must run from any folder, writing their outputs there."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import ROOT


def test_a_wheel_installed_in_a_fresh_venv_trains_debug_fast(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("coconut-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    # The dependencies come from the running environment's site-packages, appended after the fresh
    # venv's own; its .pth files (the editable install of this checkout among them) are not read.
    fresh_site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    fresh_site.mkdir(parents=True, exist_ok=True)
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", fresh_site, wheel], check=True
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "PYTHONPATH")}
    where = subprocess.run(
        [python, "-c", "import coconut, coconut.data.prepare as p; print(coconut.CONFIG_DIR); print(p.data_root())"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(fresh_site)), f"coconut imported from {where[0]}, not the wheel"
    assert Path(where[1]) == work / "data"

    train = "from coconut.cli.train import main; main()"
    done = subprocess.run(
        [python, "-c", train, "debug=fast", "test=false", "curriculum.max_latent_stage=0"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((work / "outputs").rglob("last.ckpt")), "no checkpoint under the current folder's outputs/"

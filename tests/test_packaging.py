"""pyproject lists packages explicitly (gadgets/ installs as cmrecon_gadgets): keep it complete."""

from __future__ import annotations

import tomllib

from paths import ROOT


def test_every_package_directory_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    found.add("cmrecon_gadgets")
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def test_a_built_wheel_carries_chains_and_weights_and_runs_the_demo_from_elsewhere(tmp_path):
    """`pip install .` (not editable): chains and shipped weights come with the package."""
    import subprocess
    import sys
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("cmrecon-*.whl")
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}

    def cmrecon(*args):
        return subprocess.run([sys.executable, "-m", "cmrecon.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import cmrecon, cmrecon_chains; print(cmrecon.__file__);"
                            "print(cmrecon_chains.__file__)"], cwd=work, env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert all(w.startswith(str(target)) for w in where), where      # the wheel, not the checkout
    listed = cmrecon("chains", "list")
    assert listed.returncode == 0 and "psirnet_lge" in listed.stdout and "psir_classic" in listed.stdout
    demo = cmrecon("demo", "-o", "out")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (work / "out" / "images.h5").stat().st_size > 0 and (work / "out" / "panel.png").exists()

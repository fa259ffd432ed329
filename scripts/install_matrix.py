"""Install binprune into three kinds of user environment and check that nothing the user had changed.

Scenarios (each a new virtual environment; torch and torchvision are reused from the running
interpreter through a ``.pth`` layer of symbolic links, so nothing of several GB is installed):

  fresh        an empty environment: ``pip install binprune``.
  timm         an environment with ``timm==1.0.20``: ``pip install binprune``, then
               ``scripts/install.sh "binprune[robustbench]"``, which must refuse (robustbench 1.1.1
               pins timm==1.0.9) and leave everything as it was.
  source       robustbench installed "from its repository" (version 1.1, built here offline from
               the PyPI 1.1.1 files) and a git-style AutoAttack (package ``autoattack``, built from
               pyautoattack's files): ``pip install binprune``; the user's ``import robustbench``
               still works and binprune uses robustbench's model zoo.

For each: every distribution the environment held before keeps its version and the SHA-256 of
every file it installed; binprune imports, converts, attacks, evaluates and answers ``doctor``.
Writes a JSON report (``--out``); exit status 1 if a check failed. Wheels are cached in
``.cache/install-matrix`` (ignored by git), so a second run needs no network.

    python scripts/install_matrix.py [--scenarios fresh timm source] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "install-matrix"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
SCENARIOS = ("fresh", "timm", "source")

SNAPSHOT = r"""
import base64, hashlib, importlib.metadata as md, json, sys, sysconfig
from pathlib import Path
site = Path(sysconfig.get_paths()["purelib"]).resolve()
out = {}
for dist in md.distributions():
    files = {}
    local = str(Path(dist.locate_file("")).resolve()).startswith(str(site))
    for f in (dist.files or []) if local else []:  # the torch layer is the interpreter's own: versions only
        p = Path(dist.locate_file(f))
        if p.suffix in (".pyc",) or not p.is_file():
            continue
        files[str(f)] = base64.urlsafe_b64encode(hashlib.sha256(p.read_bytes()).digest()).decode()
    out[dist.metadata["Name"].lower()] = {"version": dist.version, "files": files if local else {}, "local": local}
print(json.dumps(out))
"""

WORKS = r"""
import json, subprocess, sys
import torch
import binprune
from binprune import convert_to_binary_supermask, create_model, evaluate
model = convert_to_binary_supermask(create_model("small_cnn", in_channels=1, widths=(4, 8), seed=0), sparsity=0.5, seed=0)
x, y = torch.rand(8, 1, 12, 12), torch.arange(8) % 10
report = evaluate(model, (x, y), eps=0.05, attacks=("clean", "pgd"), pgd_steps=2, device="cpu", progress=False)
import contextlib, io
from binprune.cli import main
text = io.StringIO()
with contextlib.redirect_stdout(text):
    doctor_exit = main(["doctor", "--json"])  # the command line's doctor, in this process
result = {"binprune": binprune.__version__, "file": binprune.__file__, "accuracy": report.accuracy,
          "doctor_exit": doctor_exit, "doctor": json.loads(text.getvalue())}
if sys.argv[-1] == "source":
    import robustbench  # the user's own import: works with their git AutoAttack
    from binprune import compat
    from binprune.evaluation import robustbench_architecture
    net = robustbench_architecture("Standard", "cifar10", "Linf")
    result["robustbench"] = {"user_import": robustbench.__file__, "zoo_model": type(net).__name__,
                             "autoattack": compat.robustbench_autoattack()}
print(json.dumps(result))
"""


# The environments must see only what is installed in them: no PYTHONPATH (e.g. a source tree).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", CLEAN_ENV)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def torch_layer() -> Path:
    """A folder of links to torch, torchvision and everything they need, as installed here."""
    layer = CACHE / "torch-layer"
    if layer.is_dir():
        return layer
    from packaging.requirements import Requirement

    todo: list[tuple[str, frozenset]] = [("torch", frozenset()), ("torchvision", frozenset())]
    seen: set[tuple[str, frozenset]] = set()
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = (dist.metadata["Name"].lower().replace("_", "-"), extras)
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
        tops = {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (tmp / top).exists() and top != "__pycache__" and not top.endswith(".pth"):
                (tmp / top).symlink_to(src)
    tmp.rename(layer)
    return layer


def wheels() -> dict[str, Path]:
    """binprune's wheel (built from this tree), and the two "from source" packages."""
    out = CACHE / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("binprune-*.whl"):
        old.unlink()
    built = run(PIP + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)])
    if built.returncode:
        raise SystemExit(f"building binprune's wheel failed:\n{built.stderr}")
    found = {"binprune": next(out.glob("binprune-*.whl"))}
    pypi = CACHE / "pypi"
    for name, version in (("robustbench", "1.1.1"), ("pyautoattack", "0.2.0")):
        if not list(pypi.glob(f"{name}-{version}-*.whl")):
            got = run(PIP + ["download", "--no-deps", "-q", "-d", str(pypi), f"{name}=={version}"])
            if got.returncode:
                raise SystemExit(f"downloading {name} failed:\n{got.stderr}")
        found[name] = next(pypi.glob(f"{name}-{version}-*.whl"))
    return found


def source_trees(found: dict[str, Path], where: Path) -> tuple[Path, Path]:
    """robustbench as its repository's setup.py describes it (version 1.1, timm>=1.0.9; the git
    AutoAttack requirement left out: it is installed separately), and AutoAttack as the git
    package ``autoattack`` 0.1 (pyautoattack's code under that name)."""
    rb = where / "robustbench-src"
    with zipfile.ZipFile(found["robustbench"]) as z:
        z.extractall(rb, [n for n in z.namelist() if n.startswith("robustbench/")])
    (rb / "setup.py").write_text(
        "import setuptools\nsetuptools.setup(name='robustbench', version='1.1', packages=setuptools.find_packages(),\n"
        "    install_requires=['torch>=1.7.1', 'torchvision>=0.8.2', 'torchdiffeq', 'geotorch', 'requests>=2.25.0',\n"
        "        'numpy>=1.19.4', 'Jinja2~=3.1.2', 'tqdm>=4.56.1', 'pandas>=1.3.5', 'timm>=1.0.9', 'gdown==5.1.0',\n"
        "        'pyyaml'], include_package_data=True)\n")
    aa = where / "autoattack-src"
    with zipfile.ZipFile(found["pyautoattack"]) as z:
        for n in z.namelist():
            if n.startswith("pyautoattack/") and n.endswith(".py") and "/examples/" not in n:
                dest = aa / "autoattack" / n.split("/", 1)[1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(z.read(n).decode().replace("pyautoattack", "autoattack"))
    (aa / "setup.py").write_text("import setuptools\nsetuptools.setup(name='autoattack', version='0.1', "
                                 "packages=['autoattack'])\n")
    return rb, aa


def source_wheels(found: dict[str, Path], work: Path) -> list[str]:
    """The two source trees built into wheels once (what pip does when installing a source tree;
    cached, as building them takes a minute here)."""
    out = CACHE / "source-wheels"
    built = sorted(out.glob("*.whl"))
    if len(built) != 2:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        rb, aa = source_trees(found, work)
        made = run(PIP + ["wheel", "--no-deps", "-q", "-w", str(out), str(aa), str(rb)])
        if made.returncode:
            raise SystemExit(f"building robustbench / autoattack from source failed:\n{made.stderr}")
        built = sorted(out.glob("*.whl"))
    return [str(w) for w in built]


def make_env(path: Path, layer: Path) -> Path:
    made = run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    if made.returncode:
        raise SystemExit(made.stderr)
    py = path / "bin" / "python"
    site = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "_binprune_test_torch_layer.pth").write_text(str(layer) + "\n")
    return py


def pip_in(py: Path, *args: str) -> subprocess.CompletedProcess:
    return run(PIP + ["--python", str(py), "install", "-q", *args])


def snapshot(py: Path) -> dict:
    return json.loads(run([str(py), "-c", SNAPSHOT]).stdout)


def compare(before: dict, after: dict) -> list[str]:
    """What changed among the distributions of ``before`` (version, or a file's content)."""
    problems = []
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            problems.append(f"{name} {old['version']} was removed")
        elif new["version"] != old["version"]:
            problems.append(f"{name} changed from {old['version']} to {new['version']}")
        else:
            changed = [f for f, h in old["files"].items() if new["files"].get(f) != h]
            if changed:
                problems.append(f"{name}: {len(changed)} file(s) changed or removed, e.g. {changed[:3]}")
    return problems


def scenario(name: str, found: dict[str, Path], layer: Path, work: Path) -> dict:
    started = time.perf_counter()
    py = make_env(work / name, layer)
    record: dict = {"scenario": name, "problems": [], "step_seconds": {}}
    mark = [time.perf_counter()]

    def step(label: str) -> None:
        now = time.perf_counter()
        record["step_seconds"][label] = round(now - mark[0], 1)
        mark[0] = now

    if name == "timm":
        setup = pip_in(py, "timm==1.0.20")
    elif name == "source":
        setup = pip_in(py, *source_wheels(found, work))
    else:
        setup = subprocess.CompletedProcess([], 0, "", "")
    if setup.returncode:
        record["problems"].append(f"setting up the user's environment failed: {setup.stderr[-800:]}")
        return record
    step("user environment")
    before = snapshot(py)
    installed = pip_in(py, str(found["binprune"]))
    step("pip install binprune")
    if installed.returncode:
        record["problems"].append(f"pip install binprune failed: {installed.stderr[-800:]}")
        return record
    after = snapshot(py)
    record["user_packages"] = {k: v["version"] for k, v in before.items() if v["local"]}
    record["added"] = sorted(f"{k}=={v['version']}" for k, v in after.items() if k not in before)
    record["problems"] += compare(before, after)
    if name == "timm":
        step("snapshots")
        refused = run(["bash", str(ROOT / "scripts" / "install.sh"), f"{found['binprune']}[robustbench]", "-q"],
                      env={**CLEAN_ENV, "PIP": " ".join(PIP + ["--python", str(py)])})
        record["robustbench_extra"] = {"exit": refused.returncode, "message": refused.stderr.strip()[-600:]}
        if refused.returncode == 0:
            record["problems"].append("scripts/install.sh installed binprune[robustbench] next to timm 1.0.20")
        elif "nothing was changed" not in refused.stderr or "timm" not in refused.stderr:
            record["problems"].append("scripts/install.sh refused without naming the conflict (timm)")
        record["problems"] += [f"after the refused extra: {p}" for p in compare(after, snapshot(py))]
    step("extra refused" if name == "timm" else "snapshots")
    works = run([str(py), "-c", WORKS, name], cwd=str(work))
    step("binprune works")
    if works.returncode:
        record["problems"].append(f"binprune does not work: {works.stderr.strip()[-800:]}")
    else:
        record["works"] = json.loads(works.stdout.strip().splitlines()[-1])
        if not record["works"]["file"].startswith(str(work / name)):
            record["problems"].append(f"binprune was imported from {record['works']['file']}, not the environment")
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    layer, found = torch_layer(), wheels()
    work = Path(tempfile.mkdtemp(prefix="binprune-install-"))
    try:
        results = [scenario(name, found, layer, work) for name in args.scenarios]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"python": sys.version.split()[0], "pip": run(PIP + ["--version"]).stdout.split()[1],
              "scenarios": results, "passed": all(not r["problems"] for r in results)}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

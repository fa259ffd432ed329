"""The layout rules of docs/ARCHITECTURE.md, checked on the source: no private names imported
across modules, no import cycles between files, short orchestration functions, each default
written once, and a cheap ``import binprune``."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from binprune import config as cfg
from binprune.cli import build_parser

PACKAGE = Path(__file__).resolve().parents[1] / "binprune"
ORCHESTRATION = ("training", "evaluation", "experiments", "methods", "cli", "config.py", "results.py", "views.py",
                 "loading.py", "spec.py")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` for every import in the file."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("binprune")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, is_package)
            if not target.startswith("binprune"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None) if sub in modules else (target, alias.name))
    return found


@pytest.mark.slow
def test_no_module_imports_another_modules_private_name():
    modules = _modules()
    bad = [f"{m} imports {name} from {target}" for m, path in modules.items()
           for target, name in _imports(m, path, modules)
           if name and name.startswith("_") and not name.startswith("__") and target != m]
    assert not bad, bad


@pytest.mark.slow
def test_no_import_cycle_between_files():
    modules = _modules()
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for target, _ in _imports(m, path, modules):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # a package's __init__ importing its own submodules is how packages re-export, not a cycle
            if target and target != m and not target.startswith(m + "."):
                graph[m].add(target)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_orchestration_functions_are_at_most_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if not any(str(rel) == o or rel.parts[0] == o for o in ORCHESTRATION):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def _flag_defaults(parser, verb: str) -> dict[str, object]:
    sub = next(a for a in parser._actions if a.dest == "command").choices[verb]  # noqa: SLF001 (argparse has no API)
    return {a.dest: (a.default, a.help) for a in sub._actions}  # noqa: SLF001


@pytest.mark.parametrize("verb, classes", [("train", (cfg.DataConfig, cfg.ModelConfig, cfg.TrainConfig)),
                                           ("eval", (cfg.EvalConfig,)), ("compare", (cfg.CompareConfig,))])
def test_cli_defaults_are_the_configs(verb, classes):
    """Generated flags default to "not given" and show the config's own default in their help."""
    flags = _flag_defaults(build_parser(), verb)
    checked = 0
    for cls in classes:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli") or f.name not in flags:
                continue
            default, help_text = flags[f.name]
            assert default is None, f"--{f.name} has its own default {default!r}"
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if value is not None and not isinstance(value, bool):
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else (
                    f"{value:g}" if isinstance(value, float) else str(value))
                assert f"(default: {shown})" in help_text, (f.name, help_text)
            checked += 1
    assert checked >= {"train": 30, "eval": 8, "compare": 3}[verb]


def test_settings_resolve_from_the_config_alone():
    """No flags and no preset give exactly the config classes' defaults."""
    from binprune.cli.train import resolve_run_config

    parser = build_parser()
    args = parser.parse_args(["train", "--dataset", "fashion-mnist", "--eps", "0.1", "--epochs", "1"])
    run = resolve_run_config(args)
    expected = cfg.RunConfig(data=cfg.DataConfig(dataset="fashion-mnist"), train=cfg.TrainConfig(eps=0.1, epochs=1))
    assert run == expected


def test_saved_config_replays_the_run(tmp_path):
    from binprune.cli.train import resolve_run_config

    parser = build_parser()
    first = resolve_run_config(parser.parse_args(["train", "--preset", "quickstart", "--epochs", "2", "--lr", "0.05",
                                                  "--no-last-bn", "--eps", "8/255"]))
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump_yaml(cfg.config_to_dict(first)))
    again = resolve_run_config(parser.parse_args(["train", "--config", str(path)]))
    assert again == first and again.train.eps == pytest.approx(8 / 255) and again.model.last_bn is False
    assert again.train.epochs == 2 and again.train.attack == "fast"


def test_config_files_refuse_unknown_settings(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  eps: 0.1\n  epoch: 3\n")
    with pytest.raises(ValueError, match="unknown setting"):
        cfg.config_from_dict(cfg.RunConfig, cfg.load_yaml(path))


@pytest.mark.parametrize("kind, cls", [("train", cfg.RunConfig), ("compare", cfg.CompareConfig)])
def test_every_shipped_preset_is_a_valid_config(kind, cls):
    names = cfg.list_presets(kind, include_hidden=True)
    assert names
    for name in names:
        config = cfg.config_from_dict(cls, cfg.load_preset(kind, name), where=name)
        if kind == "train" and config.data.dataset == "cifar10":
            config.data.data_dir = None  # validate() checks the folder exists only when one is given
        config.validate()


def test_import_binprune_and_the_cli_do_not_import_torch():
    code = ("import sys, binprune, binprune.cli; binprune.cli.build_parser(); "
            "print('torch' in sys.modules, binprune.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"


def test_public_names_resolve_lazily():
    import binprune

    for name in binprune.__all__:
        assert getattr(binprune, name) is not None, name
    assert callable(binprune.train) and callable(binprune.evaluate) and callable(binprune.compact)
    with pytest.raises(AttributeError):
        binprune.no_such_name  # noqa: B018

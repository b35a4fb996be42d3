"""The model registry: names, spec handling and errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from models.edsr import EDSREncoder

ROOT = Path(__file__).resolve().parents[2]


def test_every_design_name_is_registered():
    for name in ("edsr-baseline", "edsr-large", "edsr", "rdn", "swinir", "hat", "mlp", "continuous-gaussian"):
        assert name in models.models, name


def test_importing_models_does_not_import_the_head_above_it():
    """models/ is the lower layer: the head (gaussian.py, which imports models) is imported when first built."""
    probe = "import sys, models; assert 'gaussian' not in sys.modules; models.make({'name': 'continuous-gaussian', " \
            "'args': {'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'no_upsampling': False, " \
            "'scale': 4}}}}); " \
            "assert 'gaussian' in sys.modules"
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)


def test_edsr_is_an_alias_of_edsr_large():
    a = models.make({"name": "edsr", "args": {"n_resblocks": 1}})
    b = models.make({"name": "edsr-large", "args": {"n_resblocks": 1}})
    assert isinstance(a, EDSREncoder) and a.out_dim == b.out_dim == 256
    assert a.edsr.body[0].res_scale == 0.1


def test_args_override_the_spec_without_changing_it():
    spec = {"name": "mlp", "args": {"in_dim": 2, "out_dim": 3, "hidden_list": [4]}}
    model = models.make(spec, args={"out_dim": 5})
    assert model(torch.zeros(1, 2)).shape == (1, 5)
    assert spec["args"]["out_dim"] == 3


def test_spec_without_args_uses_defaults():
    model = models.make({"name": "edsr-baseline"})
    assert model.out_dim == 64 and model.feature_scale == 1


def test_unknown_name_is_a_clear_error():
    with pytest.raises(models.UnknownModelError, match="unknown model 'nope'"):
        models.make({"name": "nope"})


def test_mlp_is_xavier_initialised_with_zero_bias_and_gelu():
    model = models.make({"name": "mlp", "args": {"in_dim": 8, "out_dim": 4, "hidden_list": [16]}})
    assert isinstance(model.layers[1], torch.nn.GELU)
    assert torch.all(model.layers[0].bias == 0)
    bound = (6 / (8 + 16)) ** 0.5
    assert model.layers[0].weight.abs().max() <= bound


def _package_imports(package: Path) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports (at any depth: function-level imports count)."""
    import ast

    graph = {}
    for path in sorted(package.glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found.update([node.module] if node.module else [alias.name for alias in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package.name + "."):
                found.add(node.module.split(".")[1])
        graph[path.stem] = {name.split(".")[0] for name in found} - {path.stem}
    return graph


def test_models_modules_import_no_cycle():
    """E.g. the registry builds models and loads state dicts; checkpoint I/O builds models: neither may import
    the other back."""
    graph = _package_imports(Path(models.__file__).parent)
    assert "checkpoint" not in graph["registry"]
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        if module in done or module not in graph or module == "__init__":
            return
        visiting.append(module)
        for imported in graph[module]:
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)

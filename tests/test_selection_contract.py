"""The native contract (csrc/selection_contract.hpp) is defined once and reaches Python.

Modes, weightings, dtype codes, flag bits and the tie tolerance are exported by every
compiled module; ``llkd.selection`` derives ``MODES``/``WEIGHTINGS`` and the codes from
them, and the Python fallback copy (used when no module is built) must equal them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from llkd import selection
from llkd.selection import _backends, _contract, _reference

MODULES = [
    pytest.param(
        name, marks=pytest.mark.skipif(_backends._import(name)[0] is None, reason=f"llkd.selection.{name} is not built")
    )
    for name in ("_selection_cpu", "_selection_cuda")
]


@pytest.mark.parametrize("name", MODULES)
def test_fallback_copy_equals_what_the_module_exports(name):
    module = _backends._import(name)[0]
    assert _contract.exported(module) == dict(_contract.FALLBACK)


def test_public_names_come_from_the_contract():
    assert selection.MODES is _contract.MODES
    assert selection.WEIGHTINGS is _contract.WEIGHTINGS
    assert _reference.TIE_TOLERANCE == _contract.TIE_TOLERANCE
    assert _contract.MODE_CODES == {m: i for i, m in enumerate(selection.MODES)}
    assert _contract.WEIGHTING_CODES == {w: i for i, w in enumerate(selection.WEIGHTINGS)}
    if _backends.native_available():
        assert _contract.SOURCE == "_selection_cpu"


def test_reference_runs_on_the_fallback_without_compiled_modules():
    """With the compiled modules hidden, the package imports, takes the fallback copy
    and the NumPy reference runs."""
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.rsplit('.', 1)[-1] in ('_selection_cpu', '_selection_cuda'):\n"
        "            raise ImportError('hidden by the test')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import numpy as np\n"
        "from llkd.selection import AdaptiveSelector, MODES, _contract\n"
        "assert _contract.SOURCE is None, _contract.SOURCE\n"
        "assert MODES == _contract.FALLBACK['MODES']\n"
        "r = AdaptiveSelector(3, backend='numpy').step(np.zeros((4, 3)), np.arange(4) % 3, np.ones(4))\n"
        "print('ok', int(r.mask.sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "4"]


def test_show_config_says_where_the_contract_comes_from():
    from llkd._config import config

    info = config()["selection_contract"]
    assert info["modes"] == selection.MODES
    expected = f"llkd.selection.{_contract.SOURCE}" if _contract.SOURCE else "Python fallback copy"
    assert info["source"] == expected

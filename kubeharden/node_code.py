"""kubeharden's node-side code (`module_utils/`), imported by the controller-side package from the checkout.

The lab lays nodes out with the same kubeadm defaults the modules judge configurations by: one table, not two.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

MODULE_UTILS = Path(__file__).resolve().parent.parent / "module_utils"


def load(name: str) -> ModuleType:
    if str(MODULE_UTILS) not in sys.path:
        sys.path.append(str(MODULE_UTILS))
    return importlib.import_module(name)

"""Token-level policies of the reserved region; importing this package registers them all.

POLICIES maps each policy's name to its class (see base.py for the interface, driver.py for the
replay driver every policy plugs its hooks into, docs/policy-interface.md for a whole example).
Every module of this package is imported here, so a new policy is one new module whose class
carries @register.
"""

import importlib
import pkgutil

from dsacache.sim.policies.base import (
    HISPARSE,
    NO_RULES,
    POLICIES,
    Counters,
    RowRules,
    TokenPolicy,
    register,
)

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["HISPARSE", "NO_RULES", "POLICIES", "Counters", "RowRules", "TokenPolicy", "register"]

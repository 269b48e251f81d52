"""Reference copies: the token policies as they were before every policy ran on the one driver.

A frozen copy of src/dsacache/sim/policies at commit 2653439 (imports renamed, registered in
this package's own POLICIES, not dsacache's). tests/test_policy_equivalence.py checks that every
registered policy decides exactly as its copy here, access by access. Not to be edited.

Original package doc:

POLICIES maps each policy's name to its class (see base.py for the interface, driver.py for the
replay driver most policies plug their hooks into). Every module of this package is imported
here, so a new policy is one new module whose class carries @register.
"""

import importlib
import pkgutil

from ref_policies.base import POLICIES, Counters, TokenPolicy, register

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["POLICIES", "Counters", "TokenPolicy", "register"]

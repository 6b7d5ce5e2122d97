"""Registry of combiners: ``get_combiner(name, **options)`` and ``available_combiners()``."""

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import available_combiners, get_combiner, register_combiner

__all__ = ["Combiner", "available_combiners", "get_combiner", "register_combiner"]

# Importing a method module registers it.
from hf_mtl.combiners import linear  # noqa: E402,F401

"""Registry of combiners: ``get_combiner(name, **options)`` and ``available_combiners()``."""

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import available_combiners, get_combiner, register_combiner

__all__ = ["Combiner", "available_combiners", "get_combiner", "register_combiner"]

# Importing a method module registers it.
from hf_mtl.combiners import (  # noqa: E402,F401
    aligned_mtl,
    cagrad,
    dwa,
    famo,
    gradnorm,
    imtl_g,
    linear,
    mgda,
    nash_mtl,
    normalized,
    pcgrad,
    primary_auxiliary,
    rlw,
    uncertainty,
    upgrad,
)

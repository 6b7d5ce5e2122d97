"""Name → combiner class registry."""

from __future__ import annotations

from typing import Any

from hf_mtl.combiners.base import Combiner

_REGISTRY: dict[str, type[Combiner]] = {}


def register_combiner(cls: type[Combiner]) -> type[Combiner]:
    """Class decorator adding ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`.")
    _REGISTRY[cls.name] = cls
    return cls


def available_combiners() -> list[str]:
    """Sorted names accepted by :func:`get_combiner`."""
    return sorted(_REGISTRY)


def get_combiner(name: str, **options: Any) -> Combiner:
    """Instantiate the combiner registered as ``name`` with ``options``.

    Raises:
        ValueError: unknown name (the message lists the known ones) or unknown option.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown combiner {name!r}; available combiners: {', '.join(available_combiners())}.") from None
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"Combiner {name!r}: bad options {sorted(options)}: {err}") from None

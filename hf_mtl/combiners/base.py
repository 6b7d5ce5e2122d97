"""The combiner contract: a small function of the K×K Gram matrix (and losses) returning task weights.

For tasks ``k = 1..K`` with shared-parameter gradients ``g_k``, the update direction is
``u = Σ_k w_k g_k``; a combiner only chooses ``w`` (see ``shared/DESIGN.md``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class Combiner:
    """Base class of every combiner.

    Subclasses set the class attributes and implement :meth:`combine`.

    Attributes:
        name: registry name (``get_combiner(name)``).
        needs_gradients: ``True`` when the weights depend on the Gram matrix; ``False`` for loss-based
            methods, for which the trainer does one plain backward of ``Σ w_k L_k`` and passes ``gram=None``.
        needs_losses: ``True`` when ``losses`` must be passed.
        stateful: ``True`` when :meth:`state_dict` carries something that must survive a checkpoint.
    """

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    needs_losses: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def __call__(self, gram: torch.Tensor | None = None, losses: torch.Tensor | None = None) -> torch.Tensor:
        """Weights ``w`` of shape ``(K,)`` on ``gram``'s (or ``losses``') device and dtype."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"Combiner {self.name!r} is stateless but got state keys {sorted(state)}.")

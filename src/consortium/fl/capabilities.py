"""What an algorithm or a strategy may do beyond :class:`~consortium.fl.core.Algorithm` and
:class:`~consortium.fl.core.Strategy`, as checkable protocols.

The hub, the node and the simulator ask ``isinstance(algorithm, Capability)`` instead of probing for a
method by name, so each optional method is declared (and documented) once, here, next to the contracts
of :mod:`consortium.fl.core`. Plain flags (``needs_client_init``, ``trains_in_environments``) are
attributes of the base protocol instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from consortium.fl.core import Algorithm, FLError, LocalData, Params, StackedUpdates, Strategy, Update

if TYPE_CHECKING:
    from consortium.fl.cohort import Cohort


@runtime_checkable
class ScaffoldClient(Protocol):
    """An algorithm whose clients can train with SCAFFOLD control variates (see :mod:`~consortium.fl.scaffold`)."""

    def uses_scaffold(self, hp: Any) -> bool:
        """True when these hyper-parameters turn SCAFFOLD on."""
        ...


@runtime_checkable
class CohortTrainer(Protocol):
    """An algorithm that trains many clients at once as batched computation (the vectorised simulator)."""

    def local_update_cohort(
        self, hp: Any, params: Params, data: LocalData, cohort: Cohort
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each client's update tensors stacked ``[C, *shape]`` in cohort order, and metrics ``[C]``."""
        ...


@runtime_checkable
class SummedCohortTrainer(CohortTrainer, Protocol):
    """A cohort trainer that can return the example-weighted sum of its clients' params directly, so a
    linear strategy never needs them one by one."""

    def local_update_cohort_summed(
        self, hp: Any, params: Params, data: LocalData, cohort: Cohort
    ) -> tuple[Params, dict[str, torch.Tensor]]:
        """``sum_c n_c * params_c`` (float64) and per-client metrics ``[C]``."""
        ...


@runtime_checkable
class ExampleBounds(Protocol):
    """An algorithm that trains in environments, which have no rows to bound an answer's ``num_examples``."""

    def max_num_examples(self, hp: Any, evaluation: bool) -> int:
        """The most examples one client's update (or, with ``evaluation``, its evaluation) can count."""
        ...


@runtime_checkable
class UpdateValueChecker(Protocol):
    """An algorithm with checks on an uploaded update's values beyond names, shapes and finiteness."""

    def check_update_values(self, hp: Any, update: Update) -> None:
        """FLError for values the algorithm cannot accept (k-means: counts beyond ``num_examples``)."""
        ...


@runtime_checkable
class Previewer(Protocol):
    """An algorithm that draws a picture of a model (a GAN's sample grid) for its model card."""

    def preview(self, hp: Any, params: Params, seed: int) -> np.ndarray:
        """A uint8 image of ``params``; FLError when this model cannot be drawn."""
        ...


@runtime_checkable
class StackedAggregator(Protocol):
    """A strategy that aggregates the updates stacked on a client axis (every built-in one): the simulator
    hands it a cohort's tensors without splitting them into per-client updates first."""

    def aggregate_stacked(self, params: Params, stacked: StackedUpdates) -> Params:
        """The same as ``aggregate(params, updates)`` of the updates ``stacked`` holds."""
        ...


def aggregate_stacked(strategy: Strategy, params: Params, stacked: StackedUpdates) -> Params:
    """``strategy``'s aggregate of ``stacked``: stacked when it is a :class:`StackedAggregator`, else
    through ``aggregate`` with one :class:`~consortium.fl.core.Update` per client (in the stacked, canonical
    order)."""
    if isinstance(strategy, StackedAggregator):
        return strategy.aggregate_stacked(params, stacked)
    updates = [
        Update({name: t[c] for name, t in stacked.tensors.items()}, int(stacked.num_examples[c]),
               client_id=client_id)
        for c, client_id in enumerate(stacked.client_ids)
    ]
    return strategy.aggregate(params, updates)


def example_limit(algorithm: Algorithm, hp: Any, rows: int | None, evaluation: bool) -> int:
    """The most examples one honest answer can count: the ``rows`` of its dataset, or, for an environment
    (``rows`` None), what the algorithm's hyper-parameters let one task play (:class:`ExampleBounds`)."""
    if rows is not None:
        return rows
    if not isinstance(algorithm, ExampleBounds):
        raise FLError(
            f"the {algorithm.name} algorithm declares no max_num_examples, so updates from an environment "
            "cannot be bounded"
        )
    return int(algorithm.max_num_examples(hp, evaluation))

"""A research claim as a comparison an ablation decides: the ``[claim]`` table of a config.

A claim names the cells that test it (``treatment`` and ``control`` select runs by topology
label, policy label or budget) and how its effect is read:

* ``better``: treatment minus control success rate, paired by task and seed (and every
  grid variable neither side selects), is above zero;
* ``equivalent``: that difference lies within ``+-margin`` (two one-sided tests);
* ``spend_share``: the attribution's share of explained variance that is token spend is
  above ``threshold`` (treatment and control are not used).

Example:
    >>> claim = Claim(id="b", statement="a decomposer helps",
    ...               compare=Compare(treatment={"topology": "decompose_solve"},
    ...                           control={"topology": "single"}))
    >>> claim.pair_keys()
    ('suite', 'task_id', 'seed', 'policy', 'budget')
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Claim", "Compare", "Selector"]

SELECTABLE = ("topology", "policy", "budget")
"""Run-table columns a selector may name (the grid's variables besides seeds and tasks)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(_Strict):
    """Which runs one side of a comparison is: every run matching all the fields given."""

    topology: str | None = None
    """A topology's label in the results (its ``label``, or its name and parameters)."""
    policy: str | None = None
    """An allocation policy's label."""
    budget: Annotated[int, Field(strict=True, ge=1)] | None = None
    """A budget of the grid."""

    def fields(self) -> tuple[str, ...]:
        """The run-table columns this selector names."""
        return tuple(f for f in SELECTABLE if getattr(self, f) is not None)


class Compare(_Strict):
    """The two sides of a claim's comparison."""

    treatment: Selector
    """The runs of the design the claim is about."""
    control: Selector
    """The runs it is compared against."""

    @model_validator(mode="after")
    def _same_fields(self) -> Compare:
        t, c = self.treatment.fields(), self.control.fields()
        if not t:
            raise ValueError("treatment selects nothing: name a topology, policy or budget, "
                             'e.g. treatment = {topology = "refine"}')
        if t != c:
            raise ValueError(f"treatment names {', '.join(t)} but control names "
                             f"{', '.join(c) or 'nothing'}: select both sides by the same "
                             "fields, so runs pair on the others")
        if self.treatment == self.control:
            raise ValueError("treatment and control select the same runs: make them differ")
        return self


class Claim(_Strict):
    """A claim the ablation tests, and the comparison that decides it."""

    id: str = Field(min_length=1, max_length=40)
    """A short name (``a``, ``b``, ...)."""
    statement: str = Field(min_length=1)
    """The claim in words, as the report prints it."""
    source: str = ""
    """Where the claim comes from (a paper)."""
    kind: Literal["better", "equivalent", "spend_share"] = "better"
    """``better`` (treatment beats control), ``equivalent`` (within ``margin``) or
    ``spend_share`` (token spend explains more than ``threshold`` of the explained
    variance)."""
    metric: Literal["success"] = "success"
    """What is compared: the success rate (``correct``)."""
    compare: Compare | None = None
    """The cells compared (``better`` and ``equivalent``)."""
    margin: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    """``equivalent``: the largest difference in success rate that counts as close."""
    threshold: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    """``spend_share``: the share of explained variance the claim says spend exceeds."""
    same_candidates: bool = False
    """The two sides must have scored identical candidates (a judge comparison): pairs whose
    candidate digests differ are left out and counted."""

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Claim:
        if self.kind == "spend_share":
            if self.threshold is None:
                raise ValueError("kind spend_share needs threshold (e.g. threshold = 0.5)")
            if self.compare is not None or self.margin is not None:
                raise ValueError("kind spend_share reads the attribution: remove compare "
                                 "and margin")
            return self
        if self.compare is None:
            raise ValueError(f"kind {self.kind} needs compare = {{treatment = {{...}}, "
                             "control = {...}}")
        if self.threshold is not None:
            raise ValueError("threshold is for kind spend_share: remove it")
        if self.kind == "equivalent" and self.margin is None:
            raise ValueError("kind equivalent needs margin (e.g. margin = 0.1)")
        if self.kind == "better" and self.margin is not None:
            raise ValueError("margin is for kind equivalent: remove it")
        return self

    def pair_keys(self) -> tuple[str, ...]:
        """Columns a treatment run and its control run share: the task, the seed and every
        grid variable neither side selects."""
        chosen = () if self.compare is None else self.compare.treatment.fields()
        return ("suite", "task_id", "seed", *(f for f in SELECTABLE if f not in chosen))

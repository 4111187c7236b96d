"""The plan language and its streaming parser (see ``dagcall._plan`` for the language).

:class:`PlanParser` is fed a model's stream chunk by chunk and returns each :class:`TaskSpec`
(or :class:`~dagcall.PlanError`) as soon as its line is complete; :func:`parse_plan` parses a
whole plan.  :class:`Ref` is a ``$N`` reference to task N's result (``$N.field``,
``$N["key"]``, ``$N[0]``: a part of it, its ``path``), :class:`Template` a string with
references spliced in; :func:`select` is how a path is applied to a result.
"""

from ._plan import (
    DEFAULT_MAX_LINE_CHARS,
    END_OF_PLAN,
    MAX_PATH,
    PlanItem,
    PlanParser,
    Ref,
    SelectionError,
    TaskSpec,
    Template,
    parse_plan,
    path_text,
    select,
)

__all__ = [
    "DEFAULT_MAX_LINE_CHARS",
    "END_OF_PLAN",
    "MAX_PATH",
    "PlanItem",
    "PlanParser",
    "Ref",
    "SelectionError",
    "TaskSpec",
    "Template",
    "parse_plan",
    "path_text",
    "select",
]

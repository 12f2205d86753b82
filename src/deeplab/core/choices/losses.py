"""The losses a schedule can train against, and their grammar (`ce`, `ce+dice`,
`ce+0.5*lovasz`): plain data, no torch. The schema validates `loss` with `parse_loss`; the
trainer builds the same terms from `engine.losses.LOSSES`, whose keys are these names (checked
when it loads)."""

from __future__ import annotations

import re

LOSSES: tuple[str, ...] = ("ce", "ohem", "focal", "dice", "lovasz")
_TERM = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z]+)$")


def parse_loss(expression: str) -> list[tuple[float, str]]:
    """`ce+0.5*dice` -> [(1.0, 'ce'), (0.5, 'dice')]; ValueError naming a term that is not one
    of `LOSSES` with an optional non-negative coefficient."""
    terms = []
    for part in expression.split("+"):
        match = _TERM.match(part.strip())
        if not match or match.group(2) not in LOSSES:
            raise ValueError(f"'{part.strip()}' is not a loss: expected one of {', '.join(LOSSES)}, "
                             f"or a weighted sum such as ce+dice or ce+0.5*lovasz")
        terms.append((float(match.group(1)) if match.group(1) else 1.0, match.group(2)))
    return terms
